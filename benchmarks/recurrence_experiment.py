"""Self-attention against recurrence at equal wall-clock (issue #31, docs/experiments.md).

Reads the runs `ours` (Transformer `small`) and `lstm` (`kt.RecurrentBaseline`,
an LSTM encoder-decoder with global attention and as many parameters) that
`quality.py` trains for the same `--budget` minutes on the same data,
vocabulary, batches and recipe, and sets them side by side:

- **BLEU against minutes**: greedy BLEU and loss on the validation sample at
  each validation (`--validate-every`), against training minutes
  (`recurrence_curves.png`);
- **what the budget bought**: optimizer steps, training tokens/s (the median
  of `logs/steps.csv`), validation loss at the end, test BLEU (the last
  checkpoints averaged, beam 4) and beam-4 decoding sentences/s on the test
  set.

Writes `recurrence.md`, `.json` and `recurrence_curves.png` to `--out`.

    python benchmarks/quality.py --budget 15 --validate-every 100 \\
        --tasks multi30k-en-de --runs ours,lstm --out runs/wall-clock
    python benchmarks/recurrence_experiment.py --runs runs/wall-clock/multi30k-en-de
    python benchmarks/recurrence_experiment.py --smoke   # seconds: tiny models, the test runs it
"""

import csv
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import cpu_model, parse_experiment_args, plot_panels, print_table, quality_smoke_runs  # noqa: E402

RUNS_HELP = "quality.py's task folder, holding ours/ and lstm/"

MODELS = {"ours": "Transformer small", "lstm": "LSTM + attention"}


def read_rows(run_folder):
    """The rows of the run's `logs/steps.csv`, numbers as floats (None where empty)."""
    path = os.path.join(run_folder, "workdir", "logs", "steps.csv")
    with open(path) as file:
        return [{key: float(value) if value else None for key, value in row.items()}
                for row in csv.DictReader(file)]  # fmt: skip


def summarize(run_folder):
    with open(os.path.join(run_folder, "result.json"), encoding="utf-8") as file:
        result = json.load(file)
    rows = read_rows(run_folder)
    validations = [row for row in rows if row["val_loss"] is not None]
    speeds = [row["tokens_per_s"] for row in rows if row["tokens_per_s"]]
    with open(os.path.join(run_folder, result["hypotheses"]), encoding="utf-8") as file:
        sentences = sum(1 for _ in file)
    return {
        "parameters": result["parameters"],
        "steps": result["steps"],
        "train_minutes": result["train_minutes"],
        "tokens_per_s": statistics.median(speeds) if speeds else None,
        "val_loss": validations[-1]["val_loss"] if validations else None,
        "test_bleu": result["bleu"],
        "test_chrf": result["chrf"],
        "decode_sentences_per_s": sentences / result["translate_seconds"],
        "curve": [(row["minutes"], row["val_bleu"], row["val_loss"]) for row in validations],
    }


def plot_curves(results, path):
    curves = {}
    for name, measured in results.items():
        minutes, bleu, loss = zip(*measured["curve"], strict=True)
        curves[MODELS[name]] = [(minutes, bleu), (minutes, loss)]
    plot_panels(curves, ("validation BLEU (greedy)", "validation loss"), "training minutes",
                (None, "label-smoothed cross-entropy"), path)  # fmt: skip


def write_tables(results, path):
    columns = [("model", "model"), ("parameters", "parameters"), ("steps", "steps"),
               ("train_minutes", "minutes"), ("tokens_per_s", "train tokens/s"),
               ("val_loss", "valid loss"), ("test_bleu", "test BLEU"),
               ("decode_sentences_per_s", "beam-4 sentences/s")]  # fmt: skip
    rows = [{"model": MODELS[name], **measured} for name, measured in results["models"].items()]
    print(f"CPU: {results['cpu']}")
    print_table(rows, columns)

    def cell(value):
        if isinstance(value, (int, float)):
            return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[key]) for key, _ in columns) + " |" for row in rows]
    with open(path, "w", encoding="utf-8") as file:
        file.write(f"CPU: {results['cpu']}\n\n" + "\n".join(lines) + "\n")


def main(argv=None):
    args = parse_experiment_args(__doc__.splitlines()[0], RUNS_HELP, argv)
    os.makedirs(args.out, exist_ok=True)
    # The smoke runs stay in --out, so that a test can look at quality.py's files too.
    smoke_out = os.path.join(args.out, "smoke-runs")
    folder = (
        quality_smoke_runs(smoke_out, MODELS, "--validate-every", "1") if args.smoke else args.runs
    )
    missing = [name for name in MODELS
               if not os.path.isfile(os.path.join(folder, name, "result.json"))]  # fmt: skip
    if missing:
        raise SystemExit(f"no finished quality.py run {missing} under {folder}")
    models = {name: summarize(os.path.join(folder, name)) for name in MODELS}
    results = {"cpu": cpu_model(), "runs": os.path.abspath(folder), "models": models}
    plot_curves(results["models"], os.path.join(args.out, "recurrence_curves.png"))
    with open(os.path.join(args.out, "recurrence.json"), "w") as file:
        json.dump(results, file, indent=1)
    write_tables(results, os.path.join(args.out, "recurrence.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
