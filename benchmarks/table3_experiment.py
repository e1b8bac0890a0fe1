"""The paper's Table 3 (variations on the Transformer) rerun at `small` size (issue #31).

Reads the runs that `quality.py` trains for the same `--steps` on Multi30k
en->de (`ours` and one ablation per row, below) and sets each beside the row
of the paper's Table 3 that it varies the same way. The paper measured its
rows on newstest2013 after 100,000 steps of the `base` model, without
checkpoint averaging; ours are `small` (d_model 256, 4 heads, 3 layers,
d_ff 1,024) after a few hundred steps, scored on test2016 with the last
checkpoint (`--average-last 1`) and beam 4. Perplexity is per subword on the
validation split, without label smoothing, as in the paper.

Our `small` has 4 heads where `base` has 8, so row (A)'s head counts line up
with the paper's at the same d_k = d_model / h ratio: our baseline *is* the
paper's h=4 row, and its own baseline (h=8) is our `heads-8`. Both sides'
differences are taken against their own baseline, `ours` and `base`.

Writes `table3.md`, `.json` and `table3.png` (BLEU and perplexity changes,
ours beside the paper's) to `--out`.

    python benchmarks/quality.py --steps 300 --average-last 1 --tasks multi30k-en-de \\
        --runs ours,heads-1,heads-8,heads-16,key-32,key-16,layers-2,ffn-2048,no-dropout,\\
dropout-0.3,no-smoothing,learned-positions --out runs/table3
    python benchmarks/table3_experiment.py --runs runs/table3/multi30k-en-de
    python benchmarks/table3_experiment.py --smoke   # seconds: tiny models, the test runs it
"""

import csv
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import cpu_model, parse_experiment_args, print_table, quality_smoke_runs  # noqa: E402

RUNS_HELP = "quality.py's task folder, holding ours/, heads-1/, ..."

# The paper's Table 3 (newstest2013, base trained 100K steps): perplexity, BLEU,
# parameters in millions (None where the paper leaves it blank: as base).
PAPER_BASE = ("base", 4.92, 25.8, 65)
# (row, our quality.py run, what it changes in ours, the paper's matching row)
ROWS = (
    ("", "ours", "small: h=4, d_k=64, N=3, d_ff=1024", ("h=4, d_k=128", 5.00, 25.5, None)),
    ("A", "heads-1", "h=1, d_k=256", ("h=1, d_k=512", 5.29, 24.9, None)),
    ("A", "heads-8", "h=8, d_k=32", PAPER_BASE),
    ("A", "heads-16", "h=16, d_k=16", ("h=16, d_k=32", 4.91, 25.8, None)),
    ("B", "key-32", "d_k=32", ("d_k=32", 5.01, 25.4, 60)),
    ("B", "key-16", "d_k=16", ("d_k=16", 5.16, 25.1, 58)),
    ("C", "layers-2", "N=2", ("N=2", 6.11, 23.7, 36)),
    ("C", "ffn-2048", "d_ff=2048", ("d_ff=4096", 4.75, 26.2, 90)),
    ("D", "no-dropout", "P_drop=0", ("P_drop=0.0", 5.77, 24.6, None)),
    ("D", "dropout-0.3", "P_drop=0.3", ("P_drop=0.2", 4.95, 25.5, None)),
    ("D", "no-smoothing", "eps_ls=0", ("eps_ls=0.0", 4.67, 25.3, None)),
    ("E", "learned-positions", "learned positions", ("positional embedding", 4.92, 25.7, None)),
)
SMOKE_RUNS = ("ours", "key-16")


def measure(run_folder):
    """Steps, parameters, validation perplexity at the end and test BLEU of one run."""
    with open(os.path.join(run_folder, "result.json"), encoding="utf-8") as file:
        result = json.load(file)
    with open(os.path.join(run_folder, "workdir", "logs", "history.csv")) as file:
        history = list(csv.DictReader(file))
    if len(result["averaged_steps"]) != 1:
        raise SystemExit(f"{run_folder}: the paper's Table 3 averages no checkpoints; "
                         "train it with quality.py --average-last 1")  # fmt: skip
    return {
        "steps": result["steps"],
        "parameters": result["parameters"],
        "val_perplexity": float(history[-1]["val_perplexity"]),
        "test_bleu": result["bleu"],
    }


def compare(folder):
    """One row per Table 3 variation run under `folder`, with the paper's beside it."""
    measured = {}
    for _, run, _, _ in ROWS:
        if os.path.isfile(os.path.join(folder, run, "result.json")):
            measured[run] = measure(os.path.join(folder, run))
    if "ours" not in measured:
        raise SystemExit(f"no finished quality.py run 'ours' under {folder}")
    steps = {values["steps"] for values in measured.values()}
    if len(steps) != 1:
        raise SystemExit(f"runs under {folder} trained for different steps: {sorted(steps)}")
    ours, rows = measured["ours"], []
    for row, run, change, (paper_change, paper_ppl, paper_bleu, paper_params) in ROWS:
        values = measured.get(run)
        rows.append({
            "row": row, "run": run, "change": change, "paper_change": paper_change,
            "paper_ppl": paper_ppl, "paper_bleu": paper_bleu,
            "paper_params_m": paper_params or PAPER_BASE[3],
            "paper_delta_bleu": round(paper_bleu - PAPER_BASE[2], 2),
            "paper_ppl_change_pct": round(100 * (paper_ppl / PAPER_BASE[1] - 1), 1),
            **({} if values is None else {
                "params_m": values["parameters"] / 1e6,
                "val_ppl": values["val_perplexity"],
                "test_bleu": values["test_bleu"],
                "delta_bleu": values["test_bleu"] - ours["test_bleu"],
                "ppl_change_pct": 100 * (values["val_perplexity"] / ours["val_perplexity"] - 1),
            }),
        })  # fmt: skip
    return {"steps": steps.pop(), "rows": rows,
            "missing": [run for _, run, _, _ in ROWS if run not in measured]}  # fmt: skip


COLUMNS = [("row", "row"), ("change", "ours"), ("params_m", "params (M)"),
           ("val_ppl", "valid PPL"), ("test_bleu", "test BLEU"), ("delta_bleu", "ΔBLEU"),
           ("paper_change", "paper"), ("paper_params_m", "params (M)"),
           ("paper_ppl", "PPL"), ("paper_bleu", "BLEU"), ("paper_delta_bleu", "ΔBLEU")]  # fmt: skip


def write_table(results, path):
    print(f"CPU: {results['cpu']}; {results['steps']} steps each")
    print_table(results["rows"], COLUMNS)

    def cell(key, value):
        if value is None:
            return "not run"
        if "delta" in key:
            return f"{value:+.2f}"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(key, row.get(key)) for key, _ in COLUMNS) + " |"
              for row in results["rows"]]  # fmt: skip
    with open(path, "w", encoding="utf-8") as file:
        file.write(f"CPU: {results['cpu']}; {results['steps']} steps each\n\n")
        file.write("\n".join(lines) + "\n")


def plot(rows, path):
    """Each variation's BLEU and perplexity changes against its baseline: ours, the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in rows if row["run"] != "ours" and "delta_bleu" in row]
    labels = [f"({row['row']}) {row['change']}" for row in rows]
    positions = range(len(rows))
    figure, axes = plt.subplots(1, 2, figsize=(9, 0.45 * len(rows) + 1.6), sharey=True)
    # Perplexity in per cent: ours, early in training, is ten times the paper's.
    panels = ((axes[0], "delta_bleu", "BLEU change (points)"),
              (axes[1], "ppl_change_pct", "valid perplexity change (%)"))  # fmt: skip
    for axis, key, title in panels:
        axis.barh([p + 0.2 for p in positions], [row[key] for row in rows],
                  height=0.4, label="ours (small)")  # fmt: skip
        axis.barh([p - 0.2 for p in positions], [row[f"paper_{key}"] for row in rows],
                  height=0.4, label="paper (base)")  # fmt: skip
        axis.axvline(0, color="black", linewidth=0.8)
        axis.set_title(title)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(positions), labels)
    axes[0].invert_yaxis()
    axes[1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None):
    args = parse_experiment_args(__doc__.splitlines()[0], RUNS_HELP, argv)
    os.makedirs(args.out, exist_ok=True)
    smoke_out = os.path.join(args.out, "smoke-runs")
    folder = (
        quality_smoke_runs(smoke_out, SMOKE_RUNS, "--average-last", "1")
        if args.smoke
        else args.runs
    )
    results = {"cpu": cpu_model(), "runs": os.path.abspath(folder), **compare(folder)}
    plot(results["rows"], os.path.join(args.out, "table3.png"))
    with open(os.path.join(args.out, "table3.json"), "w") as file:
        json.dump(results, file, indent=1)
    write_table(results, os.path.join(args.out, "table3.md"))
    if results["missing"]:
        print(f"not run yet: {', '.join(results['missing'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
