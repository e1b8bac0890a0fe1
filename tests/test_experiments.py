"""The experiment scripts run end to end in their `--smoke` mode (seconds each)."""

import json
import os
import subprocess
import sys

from helpers import runs_once

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_experiment(name, *args, timeout=600):
    """benchmarks/`name` with `args` on the PyTorch backend; asserts that it succeeded."""
    script = os.path.join(REPOSITORY, "benchmarks", name)
    result = subprocess.run(
        [sys.executable, script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "torch"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@runs_once
def test_table1_experiment_smoke_writes_its_table_and_figure(tmp_path):
    # Through the experiments' index, which runs benchmarks/layer_timing.py.
    result = run_experiment("experiments.py", "table1", "--smoke", "--out", str(tmp_path))
    assert "layer_timing.py --smoke" in result.stdout
    measured = json.loads((tmp_path / "table1.json").read_text())
    assert measured["lengths"] == [4, 8, 16]
    assert set(measured["results"]) == {"self-attention", "recurrent", "convolution"}
    for timing in measured["results"].values():
        assert all(seconds > 0 for key in timing for seconds in timing[key])
    table = (tmp_path / "table1.md").read_text().splitlines()
    assert sum(line.startswith("| ") for line in table) == 4  # the header and three layers
    assert (tmp_path / "table1.png").stat().st_size > 10_000


@runs_once
def test_each_experiment_analyses_the_runs_it_trains():
    sys.path.insert(0, os.path.join(REPOSITORY, "benchmarks"))
    import experiments
    import quality

    for name in experiments.EXPERIMENTS:
        found = experiments.commands(name, "out")
        trained = [command for command in found if command[1].endswith("quality.py")]
        for command in trained:
            runs = command[command.index("--runs") + 1].split(",")
            assert set(runs) <= set(quality.RUNS), (name, runs)
        analysis = [command for command in found if not command[1].endswith("quality.py")]
        assert found and len(analysis) <= 1, name
        if analysis and trained:
            (command,) = trained
            folder = os.path.join(command[command.index("--out") + 1], "multi30k-en-de")
            assert analysis[0][analysis[0].index("--runs") + 1] == folder, name


@runs_once
def test_normalization_experiment_smoke_measures_batch_dependence_and_statistics(tmp_path):
    run_experiment("normalization_experiment.py", "--smoke", "--variants",
                   "batch-norm,masked-batch-norm", "--out", str(tmp_path))  # fmt: skip
    measured = json.loads((tmp_path / "normalization.json").read_text())["variants"]
    assert set(measured) == {"batch-norm", "masked-batch-norm"}
    for variant in measured.values():
        # Frozen statistics at inference: no translation depends on its batch.
        assert set(variant["batches"]) == {"2/sorted", "2/unsorted", "1/sorted"}
        assert all(run["differ"] == 0 for run in variant["batches"].values())
        buckets = variant["statistics"]
        assert sum(bucket["batches"] for bucket in buckets.values()) == 3
        shares = [buckets[length]["padding_share"] for length in sorted(buckets, key=int)]
        assert all(0 <= share < 1 for share in shares)
        assert all(bucket["variance_ratio"] > 0 for bucket in buckets.values())
    assert (tmp_path / "normalization_curves.png").stat().st_size > 10_000
    assert "| variant |" in (tmp_path / "normalization.md").read_text()


@runs_once
def test_scaling_smoke_measures_one_and_two_pinned_jax_processes():
    script = os.path.join(REPOSITORY, "benchmarks", "scaling.py")
    result = subprocess.run(
        [sys.executable, script, "--smoke", "--backends", "jax"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.startswith("CPU: ")
    (row,) = [line.split() for line in result.stdout.splitlines() if line.strip().startswith("jax")]
    one, two, efficiency = (float(cell.replace(",", "")) for cell in row[1:4])
    assert one > 0 and two > 0
    assert abs(efficiency - two / (2 * one)) < 0.01 * efficiency + 0.005


@runs_once
def test_recurrence_smoke_trains_ours_and_the_lstm_alike_through_quality(tmp_path):
    """recurrence_experiment.py --smoke runs quality.py --smoke for both, then compares them."""
    run_experiment("recurrence_experiment.py", "--smoke", "--out", str(tmp_path))
    task = tmp_path / "smoke-runs" / "multi30k-en-de"
    model = json.loads((task / "lstm" / "workdir" / "config.json").read_text())["model"]
    assert model["architecture"] == "recurrent" and model["hidden_dim"] == 32
    ours = json.loads((task / "ours" / "workdir" / "config.json").read_text())["model"]
    assert "architecture" not in ours and ours["num_heads"] == 4
    measured = json.loads((tmp_path / "recurrence.json").read_text())["models"]
    assert set(measured) == {"ours", "lstm"}
    for run, values in measured.items():
        stored = json.loads((task / run / "result.json").read_text())
        assert values["steps"] == stored["steps"] == 2 and stored["run"] == run
        assert values["test_bleu"] == stored["bleu"] and values["decode_sentences_per_s"] > 0
        assert values["tokens_per_s"] > 0 and values["parameters"] == stored["parameters"]
        # --validate-every 1: a validation at each of the two steps, with its minute.
        assert [len(point) for point in values["curve"]] == [3, 3]
        assert values["curve"][0][0] < values["curve"][1][0]
    assert measured["lstm"]["parameters"] != measured["ours"]["parameters"]
    assert (tmp_path / "recurrence_curves.png").stat().st_size > 10_000
    assert "| LSTM + attention |" in (tmp_path / "recurrence.md").read_text()


@runs_once
def test_table3_smoke_sets_runs_beside_the_papers_rows(tmp_path):
    """table3_experiment.py --smoke trains ours and key-16 through quality.py, then compares."""
    run_experiment("table3_experiment.py", "--smoke", "--out", str(tmp_path))
    task = tmp_path / "smoke-runs" / "multi30k-en-de"
    model = json.loads((task / "key-16" / "workdir" / "config.json").read_text())["model"]
    assert model["key_dim"] == 16
    measured = json.loads((tmp_path / "table3.json").read_text())
    rows = {row["run"]: row for row in measured["rows"]}
    assert measured["steps"] == 2 and "key-16" not in measured["missing"]
    for run in ("ours", "key-16"):
        stored = json.loads((task / run / "result.json").read_text())
        history = (task / run / "workdir" / "logs" / "history.csv").read_text().splitlines()
        header, last = history[0].split(","), history[-1].split(",")
        assert rows[run]["test_bleu"] == stored["bleu"]
        assert rows[run]["params_m"] == stored["parameters"] / 1e6
        assert rows[run]["val_ppl"] == float(last[header.index("val_perplexity")])
    key_16, ours = rows["key-16"], rows["ours"]
    assert key_16["delta_bleu"] == key_16["test_bleu"] - ours["test_bleu"]
    assert abs(key_16["ppl_change_pct"] - 100 * (key_16["val_ppl"] / ours["val_ppl"] - 1)) < 1e-9
    assert key_16["paper_delta_bleu"] == -0.7  # 25.1 against base's 25.8
    assert key_16["paper_ppl_change_pct"] == 4.9  # 5.16 against base's 4.92
    assert "test_bleu" not in rows["heads-1"]  # not trained in the smoke run
    assert (tmp_path / "table3.png").stat().st_size > 10_000
    assert "| B | d_k=16 |" in (tmp_path / "table3.md").read_text()
