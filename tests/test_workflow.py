"""The command line end to end: train, resume after a kill, translate, evaluate, average, export.

Training runs in-process through `cli.main`, except the resume test's killed
and resumed runs, which are real `keras-transformer train` processes. The
command line does not depend on the backend, so the runs are made once, in the
PyTorch pass; each backend's training is tested in test_training.py.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from helpers import runs_once
from translate_checks import check_model_paths_and_n_best

import keras_transformer as kt
from keras_transformer import cli, run, workdir
from keras_transformer.data import pipeline

# XLA builds slowly for a handful of steps on TensorFlow; JAX runs eagerly far
# slower than it compiles, and PyTorch always runs eagerly.
NO_JIT = ["--no-jit"] if keras.backend.backend() == "tensorflow" else []
TINY = [*NO_JIT, "--preset", "tiny", "--vocab-size", "100", "--set", "model.max_length=32",
        "--set", "max_tokens=256", "--set", "dropout=0.0", "--set", "warmup_steps=10"]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Number words in files, as a user would bring them.

    Numbers of at most four English words: their batches take three or four
    shapes, so XLA compiles that many training programs, not a dozen.
    """
    directory = tmp_path_factory.mktemp("corpus")
    files = {}
    for split, size in (("train", 300), ("valid", 20), ("test", 12)):
        drawn = kt.data.number_words(split, "de", size=10 * size, seed=2)
        pairs = [pair for pair in drawn if len(pair[0].split()) <= 4][:size]
        assert len(pairs) == size
        for side, index in (("en", 0), ("de", 1)):
            path = directory / f"{split}.{side}"
            path.write_text("".join(f"{pair[index]}\n" for pair in pairs), encoding="utf-8")
            files[f"{split}.{side}"] = str(path)
    return files


def main(*args):
    return cli.main([str(arg) for arg in args])


def weights(path):
    return [np.asarray(w) for w in keras.saving.load_model(path, compile=False).get_weights()]


@runs_once
def test_train_translate_evaluate_average_export(corpus, tmp_path, capsys, monkeypatch):
    tokenized = []
    tokenize_pairs = pipeline.tokenize_pairs
    monkeypatch.setattr(
        pipeline,
        "tokenize_pairs",
        lambda pairs, *args: tokenized.append(len(pairs)) or tokenize_pairs(pairs, *args),
    )
    work = tmp_path / "run"
    status = main(
        "train", "--src", corpus["train.en"], "--tgt", corpus["train.de"],
        "--valid-src", corpus["valid.en"], "--valid-tgt", corpus["valid.de"],
        "--workdir", work, *TINY, "--max-steps", 6, "--checkpoint-every", 3, "--log-every", 2,
        "--validate-every", 3,
    )  # fmt: skip
    assert status == 0
    # Output to a file (here captured): whole lines, no progress-bar redraws.
    printed = capsys.readouterr().out
    assert "\r" not in printed and "\x1b" not in printed
    lines = printed.splitlines()
    assert [line.split()[:2] for line in lines if line.startswith("step ")] == [
        ["step", "2/6"], ["step", "4/6"], ["step", "6/6"]
    ]  # fmt: skip
    assert any(line.startswith("epoch ") and "val_bleu" in line for line in lines)
    assert sorted(tokenized) == [20, 300]  # each corpus encoded once
    assert [step for step, _ in workdir.checkpoints(str(work))] == [3, 6]
    configs = workdir.read_config(str(work))
    assert configs["model"].max_length == 32 and configs["training"].warmup_steps == 10
    history = (work / "logs" / "history.csv").read_text().splitlines()
    assert "val_bleu" in history[0] and "val_loss" in history[0] and len(history) > 1
    assert (work / "logs" / "learning_curve.png").stat().st_size > 1000
    steps = workdir.read_history(str(work / "logs" / "steps.csv"))  # every 2 steps, and 3 and 6
    assert [row["step"] for row in steps] == [2, 3, 4, 6]
    assert [row["step"] for row in steps if row["val_loss"] and row["val_bleu"] is not None] == [
        3, 6
    ]  # fmt: skip
    assert all(row["learning_rate"] > 0 for row in steps) and steps[-1]["tokens_per_s"] > 0

    hypotheses = tmp_path / "test.hyp"
    assert main("translate", "--workdir", work, "--input", corpus["test.en"],
                "--output", hypotheses, "--beam-size", 2, *NO_JIT) == 0  # fmt: skip
    assert len(hypotheses.read_text(encoding="utf-8").splitlines()) == 12
    capsys.readouterr()
    assert main("evaluate", "--workdir", work, "--src", corpus["test.en"],
                "--ref", corpus["test.de"], "--beam-size", 2, *NO_JIT) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "BLEU" in printed and "nrefs:1|case:mixed|eff:no|tok:13a" in printed
    assert "chrF" in printed and "exact match" in printed
    # Two computations of the same translations: `translate` and `evaluate`.
    evaluated = work / "test.en.hyp"
    assert evaluated.read_text(encoding="utf-8") == hypotheses.read_text(encoding="utf-8")

    translations_stream_as_lines_arrive(work)

    before = weights(str(work / "model.keras"))
    assert main("average", "--workdir", work, "--last", 2) == 0
    after = weights(str(work / "model.keras"))
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))

    out = tmp_path / "saved_models" / "numbers"
    assert main("export", "--workdir", work, "--out", out) == 0
    assert (out / "1" / "saved_model.pb").is_file()
    loaded = kt.load_translator(str(out)).translate(["seven", ""])
    assert isinstance(loaded[0], str) and loaded[1] == ""
    check_model_paths_and_n_best(main, work, out / "1", corpus["test.en"], tmp_path, NO_JIT, capsys)


def translations_stream_as_lines_arrive(work):
    """`translate` answers each line of a pipe before the next is sent, with --scores."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": keras.backend.backend()}
    command = [sys.executable, "-m", "keras_transformer", "translate", "--workdir", str(work),
               "--scores", *NO_JIT]  # fmt: skip
    process = subprocess.Popen(command, env=env, text=True, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for sentence in ("seven", "twenty one"):
            process.stdin.write(f"{sentence}\n")
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], 300)
            assert ready, f"no translation of {sentence!r} while stdin is open"
            translation, score = process.stdout.readline().rstrip("\n").split("\t")
            assert float(score) <= 0.0 and "\t" not in translation
        process.stdin.close()
        assert process.wait(timeout=60) == 0
        assert process.stdout.read() == ""
    finally:
        process.kill()


def test_average_of_two_checkpoints_is_their_mean(tmp_path, tiny_config):
    work = str(tmp_path)
    workdir.write_config(
        work,
        {"model": tiny_config, "training": kt.TrainingConfig(), "decoding": kt.DecodingConfig()},
    )
    model = kt.compile_model(kt.build_transformer(tiny_config))
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    hand_made = []
    for step in (10, 20):
        values = [rng.normal(size=w.shape).astype(w.dtype) for w in model.get_weights()]
        model.set_weights(values)
        os.makedirs(os.path.join(work, "checkpoints"), exist_ok=True)
        model.save_weights(os.path.join(work, "checkpoints", f"ckpt-{step}.weights.h5"))
        hand_made.append(values)
    assert main("average", "--workdir", work, "--last", 2) == 0
    averaged = weights(os.path.join(work, "model.keras"))
    assert len(averaged) == len(hand_made[0]) > 0
    for got, a, b in zip(averaged, *hand_made, strict=True):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-6)


def train_arguments(corpus, work, max_steps):
    return ["train", "--src", corpus["train.en"], "--tgt", corpus["train.de"],
            "--workdir", str(work), *TINY, "--max-steps", str(max_steps),
            "--checkpoint-every", "2"]  # fmt: skip


@runs_once
def test_a_killed_run_resumes_where_it_stopped(corpus, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": keras.backend.backend()}
    steps = 10
    command = [sys.executable, "-m", "keras_transformer"]
    # The uninterrupted run, in this process; the killed one in a process of its own.
    assert main(*train_arguments(corpus, tmp_path / "whole", steps)) == 0
    # Two epochs (header + two rows): the resumed run must cross an epoch boundary.
    assert len((tmp_path / "whole" / "logs" / "history.csv").read_text().splitlines()) == 3

    work = tmp_path / "killed"
    process = subprocess.Popen(
        [*command, *train_arguments(corpus, work, steps)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not workdir.checkpoints(str(work)) and time.monotonic() < deadline:
        assert process.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    reached = workdir.checkpoints(str(work))[-1][0]
    assert reached < steps and not (work / "model.keras").exists()
    # As if the killed run had logged a step after its last checkpoint: the
    # resumed run replays that step, and the stale row must not stay.
    history, whole_history = (
        work / "logs" / "history.csv",
        tmp_path / "whole" / "logs" / "history.csv",
    )
    header, first = whole_history.read_text().splitlines()[:2]
    stale = first.split(",")
    stale[header.split(",").index("step")] = str(reached + 1)
    if not history.exists() or not history.read_text():  # Keras opens it empty
        history.parent.mkdir(exist_ok=True)
        history.write_text(header + "\n")
    with open(history, "a") as file:
        file.write(",".join(stale) + "\n")

    resumed = subprocess.run(
        [*command, *train_arguments(corpus, work, steps)], env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"(step {reached})" in resumed.stdout
    assert workdir.checkpoints(str(work))[-1][0] == steps
    logged = [row["step"] for row in workdir.read_history(str(history))]
    assert logged == [row["step"] for row in workdir.read_history(str(whole_history))]
    # Same seed, same data order, dropout 0: the very same model.
    resumed_weights = weights(str(work / "model.keras"))
    whole_weights = weights(str(tmp_path / "whole" / "model.keras"))
    assert len(resumed_weights) == len(whole_weights) > 0
    for a, b in zip(resumed_weights, whole_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@runs_once
def test_an_accumulating_run_counts_updates_and_resumes_as_if_uninterrupted(corpus, tmp_path):
    def train(work, max_steps):
        accumulating = ["--set", "accumulation_steps=2"]
        return main(*train_arguments(corpus, work, max_steps), *accumulating)

    # 5 updates of 2 batches each; one of them straddles the first epoch's end.
    assert train(tmp_path / "whole", 5) == 0
    pairs = kt.data.read_parallel(corpus["train.en"], corpus["train.de"])
    tokenizer = kt.Tokenizer.load(str(tmp_path / "whole" / "tokenizer.model"))
    per_epoch = pipeline.BatchedCorpus(pairs, tokenizer, 256, 32).batches_per_epoch
    assert per_epoch < 10 and per_epoch % 2
    assert [step for step, _ in workdir.checkpoints(str(tmp_path / "whole"))] == [2, 4, 5]
    configs = workdir.read_config(str(tmp_path / "whole"))
    assert configs["training"].accumulation_steps == 2
    assert train(tmp_path / "split", 2) == 0
    assert train(tmp_path / "split", 5) == 0
    for a, b in zip(weights(str(tmp_path / "split" / "model.keras")),
                    weights(str(tmp_path / "whole" / "model.keras")), strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@runs_once
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path, capsys):
    work = tmp_path / "nan"
    status = main(
        "train", "--src", corpus["train.en"], "--tgt", corpus["train.de"], "--workdir", work,
        *TINY, "--set", "learning_rate_scale=1e30", "--max-steps", 8, "--checkpoint-every", 1,
    )  # fmt: skip
    assert status == 1
    assert "became NaN at step" in capsys.readouterr().err
    assert not (work / "model.keras").exists()
    kept = workdir.checkpoints(str(work))
    assert kept, "no checkpoint before the NaN: nothing below was checked"
    for _, path in kept:
        model = kt.compile_model(kt.build_transformer(workdir.read_config(str(work))["model"]))
        model.optimizer.build(model.trainable_variables)
        model.load_weights(path)
        assert all(np.isfinite(w).all() for w in model.get_weights())


# This process has one CPU device; Keras's torch backend trains on one device a process.
TOO_MANY_DEVICES = (
    "--devices 64: the torch backend trains on one device per process"
    if keras.backend.backend() == "torch"
    else "--devices 64: this process found 1 device(s)"
)


def test_bad_input_is_refused_and_nothing_is_overwritten(corpus, tmp_path, capsys):
    def fails(*args, says):
        assert main(*args) == 2
        assert says in capsys.readouterr().err

    work = tmp_path / "run"
    data = ["--src", corpus["train.en"], "--tgt", corpus["train.de"], "--workdir", work]
    fails("train", "--src", tmp_path / "missing.en", "--tgt", corpus["train.de"],
          "--workdir", work, "--max-steps", 1, says="missing.en")  # fmt: skip
    short = tmp_path / "short.de"
    short.write_text("eins\nzwei\n", encoding="utf-8")
    fails("train", "--src", corpus["train.en"], "--tgt", short, "--workdir", work,
          "--max-steps", 1, says="short.de")  # fmt: skip
    fails("train", *data, *TINY, "--set", "model.colour=blue", "--max-steps", 1,
          says="'colour'")  # fmt: skip
    fails("train", *data, *TINY, "--set", "warmup_steps=soon", "--max-steps", 1,
          says="warmup_steps='soon'")  # fmt: skip
    fails("train", *data, *TINY, "--set", "precision=float64", "--max-steps", 1,
          says="Received: 'float64'")  # fmt: skip
    fails("train", *data, *TINY, "--devices", 64, "--max-steps", 1, says=TOO_MANY_DEVICES)
    assert not work.exists()  # nothing was written by the refused commands

    fails("translate", "--workdir", work, says="is not a work directory")
    workdir.write_config(
        str(work),
        {"model": kt.TransformerConfig.tiny(100), "training": kt.TrainingConfig(),
         "decoding": kt.DecodingConfig()},
    )  # fmt: skip
    config_before = (work / "config.json").read_text()
    fails("train", *data, *TINY, "--max-steps", 1, says="model.max_length: 64 -> 32")
    fails("train", *data, *TINY, "--precision", "mixed_bfloat16", "--max-steps", 1,
          says="training.precision: 'float32' -> 'mixed_bfloat16'")  # fmt: skip
    fails("train", *data, *TINY, "--devices", 64, "--max-steps", 1, says=TOO_MANY_DEVICES)
    assert (work / "config.json").read_text() == config_before
    assert sorted(os.listdir(work)) == ["config.json"]
    fails("translate", "--workdir", work, says="model.keras is missing")

    output = tmp_path / "keep.txt"
    output.write_text("mine\n")
    fails("translate", "--workdir", work, "--input", corpus["test.en"], "--output", output,
          says="keep.txt exists")  # fmt: skip
    assert output.read_text() == "mine\n"
    assert json.loads(config_before)["model"]["hidden_dim"] == 32


@runs_once
def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "deep" / "out.txt"
    with workdir.atomic_write(str(target)) as temporary:
        assert temporary.endswith("out.txt") and not target.exists()
        with open(temporary, "w") as file:
            file.write("first\n")
    assert target.read_text() == "first\n"
    with pytest.raises(RuntimeError, match="killed"):
        with workdir.atomic_write(str(target)) as temporary:
            with open(temporary, "w") as file:
                file.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "first\n"
    assert os.listdir(target.parent) == ["out.txt"]  # no temporary left behind


@runs_once
def test_history_reads_keras_na_cells_as_none(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,minutes,val_bleu\n0,2.5,1.5,NA\n1,1.25,3.0,\n")
    rows = workdir.read_history(str(history))
    assert rows == [
        {"epoch": 0.0, "loss": 2.5, "minutes": 1.5, "val_bleu": None},
        {"epoch": 1.0, "loss": 1.25, "minutes": 3.0, "val_bleu": None},
    ]
    assert workdir.read_history(str(tmp_path / "missing.csv")) == []
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "history.csv").write_text(history.read_text())
    assert run.minutes_logged(str(tmp_path)) == 3.0


@runs_once
def test_the_recurrent_baseline_trains_averages_and_translates_from_a_work_directory(
    corpus, tmp_path
):
    """`--set model.architecture=recurrent`: the same commands train and decode the LSTM."""
    work = tmp_path / "lstm"
    recurrent = ["--set", "model.architecture=recurrent", "--set", "model.hidden_dim=32",
                 "--set", "model.num_layers=1"]  # fmt: skip
    assert main(*train_arguments(corpus, work, 4), *recurrent) == 0
    stored = json.loads((work / "config.json").read_text())["model"]
    assert stored["architecture"] == "recurrent" and stored["hidden_dim"] == 32
    configs = workdir.read_config(str(work))
    expected = kt.RecurrentConfig(100, hidden_dim=32, num_layers=1, dropout=0.0, max_length=32)
    assert configs["model"] == expected
    # A resumed run goes on from the checkpoint of step 4, as a Transformer's does.
    assert main(*train_arguments(corpus, work, 6), *recurrent) == 0
    assert [step for step, _ in workdir.checkpoints(str(work))] == [2, 4, 6]
    assert main("average", "--workdir", work, "--last", 2) == 0
    translator = kt.Translator.from_workdir(str(work), beam_size=2)
    assert isinstance(translator.model, kt.RecurrentBaseline)
    hypotheses = tmp_path / "test.hyp"
    assert main("translate", "--workdir", work, "--input", corpus["test.en"],
                "--output", hypotheses, "--beam-size", 2, *NO_JIT) == 0  # fmt: skip
    sources = open(corpus["test.en"], encoding="utf-8").read().splitlines()
    assert hypotheses.read_text(encoding="utf-8").splitlines() == translator.translate(sources)


@runs_once
def test_an_unknown_architecture_is_named(tmp_path):
    configs = {"model": kt.TransformerConfig.tiny(100), "training": kt.TrainingConfig(),
               "decoding": kt.DecodingConfig()}  # fmt: skip
    with pytest.raises(ValueError, match="unknown model architecture 'gru'"):
        workdir.apply_overrides(configs, ["model.architecture=gru"])
    workdir.write_config(str(tmp_path), configs)
    file = tmp_path / "config.json"
    file.write_text(file.read_text().replace('"model": {', '"model": {"architecture": "gru", '))
    with pytest.raises(ValueError, match=r"config.json: unknown model architecture 'gru'"):
        workdir.read_config(str(tmp_path))
