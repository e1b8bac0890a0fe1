"""`translate --model` and `--n-best`, checked on the work directory and export of test_workflow.

Two computations each: the same model named by `--workdir` and by `--model`
(its `.keras` file, its SavedModel, its CTranslate2 export), and the n-best
list's first entries against the 1-best translations.
"""


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def check_model_paths_and_n_best(main, work, export, source, tmp_path, no_jit, capsys):
    def translate(*args, name):
        output = tmp_path / name
        assert main("translate", *args, "--input", source, "--output", output, *no_jit) == 0
        return lines(output)

    by_workdir = translate("--workdir", work, "--beam-size", 2, name="workdir.hyp")
    # Batches of 2, one or three searched at once: the same lines in the same order.
    assert translate("--workdir", work, "--beam-size", 2, "--batch-size", 2, "--inter-threads", 3,
                     name="inter3.hyp") == translate(
        "--workdir", work, "--beam-size", 2, "--batch-size", 2, "--inter-threads", 1,
        name="inter1.hyp")  # fmt: skip
    # The work directory's model.keras, its tokenizer.model found beside it.
    assert translate("--model", work / "model.keras", "--beam-size", 2, name="keras.hyp") == (
        by_workdir
    )
    # The SavedModel: the work directory's decoding settings, baked in at export.
    assert translate("--model", export, name="saved.hyp") == translate(
        "--workdir", work, name="workdir4.hyp"
    )
    capsys.readouterr()
    assert main("translate", "--model", export, "--beam-size", 2, "--input", source) == 2
    assert "fixed at export" in capsys.readouterr().err

    # CTranslate2, from the command line: its search as ours (a tie may differ in one line).
    ct2 = tmp_path / "ct2"
    assert main("export", "--workdir", work, "--out", ct2, "--format", "ctranslate2") == 0
    assert (ct2 / "model.bin").is_file()
    by_ct2 = translate("--model", ct2, "--beam-size", 2, name="ct2.hyp")
    assert sum(a != b for a, b in zip(by_ct2, by_workdir, strict=True)) <= 1, (by_ct2, by_workdir)
    assert translate("--model", ct2, "--beam-size", 2, "--batch-size", 2, "--inter-threads", 2,
                     "--intra-threads", 1, name="ct2-parallel.hyp") == by_ct2  # fmt: skip
    capsys.readouterr()
    assert main("translate", "--model", export, "--inter-threads", 2, "--input", source) == 2
    assert "drop --inter-threads" in capsys.readouterr().err
    assert main("translate", "--workdir", work, "--intra-threads", 1, "--input", source) == 2
    assert "--intra-threads: only a CTranslate2 export" in capsys.readouterr().err
    assert main("export", "--workdir", work, "--out", ct2, "--format", "ctranslate2") == 2
    assert "exists" in capsys.readouterr().err
    assert main("export", "--workdir", work, "--out", tmp_path / "q", "--format", "ctranslate2",
                "--quantization", "int3") == 2  # fmt: skip
    assert "Unknown quantization 'int3'" in capsys.readouterr().err
    assert main("export", "--workdir", work, "--out", tmp_path / "q", "--format", "ctranslate2",
                "--check") == 2  # fmt: skip
    assert "--check: only for --format savedmodel" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()

    n_best = translate("--workdir", work, "--beam-size", 2, "--n-best", 2, name="nbest.txt")
    entries = [line.split(" ||| ") for line in n_best]
    assert all(len(entry) == 3 for entry in entries), n_best[:3]
    indices = [int(index) for index, _, _ in entries]
    assert sorted(set(indices)) == list(range(len(by_workdir))) and indices == sorted(indices)
    for index, translation in enumerate(by_workdir):
        hypotheses = [(text, float(score)) for i, text, score in entries if int(i) == index]
        assert 1 <= len(hypotheses) <= 2 and hypotheses[0][0] == translation
        assert [score for _, score in hypotheses] == sorted(
            (score for _, score in hypotheses), reverse=True
        )
    assert main("translate", "--workdir", work, "--beam-size", 2, "--n-best", 3,
                "--input", source) == 2  # fmt: skip
    assert "n must be between 1 and beam_size=2" in capsys.readouterr().err
