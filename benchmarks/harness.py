"""Side-by-side measurement: each peer runs in its own subprocess, results come back as JSON."""

import json
import os
import platform
import resource
import subprocess
import sys


def add_model_arguments(parser):
    """The model size every benchmark shares: the `small` preset at V=8000, batch 64."""
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--hidden-dim", type=int, default=256)
    parser.add_argument("--intermediate-dim", type=int, default=1024)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--num-layers", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)


def add_step_arguments(parser, steps=20, warmup=3):
    """Sequence length and the timed and untimed (compiling) steps of a training benchmark."""
    parser.add_argument("--length", type=int, default=32, help="source and target tokens")
    parser.add_argument("--steps", type=int, default=steps, help="timed steps")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed steps (compilation)")


def parse_experiment_args(description, runs_help, argv=None):
    """`--runs` (a quality.py task folder), `--out` and `--smoke` of the experiment scripts."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", help=runs_help)
    parser.add_argument("--out", default=os.path.join("runs", "experiments"))
    parser.add_argument("--smoke", action="store_true", help="tiny models trained here: seconds")
    args = parser.parse_args(argv)
    if not args.smoke and not args.runs:
        parser.error("--runs is required (or --smoke)")
    return args


def quality_smoke_runs(out, runs, *options):
    """quality.py's `--smoke` runs of `runs` on Multi30k en-de, in `out`; their task folder."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "quality.py")
    command = [sys.executable, script, "--smoke", "--tasks", "multi30k-en-de",
               "--runs", ",".join(runs), *options, "--out", out]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return os.path.join(out, "multi30k-en-de")


def cpu_model():
    """The CPU's model name, which benchmarks print beside their figures."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mib():
    """Peak resident memory of this process, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(script, args, backend=None, timeout=3600, pythonpath=None):
    """Runs `script --worker ARGS` under `backend`; returns the JSON it prints last.

    `pythonpath`, when given, comes first on the worker's import path (to
    measure another copy of the library).
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
    if backend:
        env["KERAS_BACKEND"] = backend
    result = subprocess.run(
        [sys.executable, script, "--worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if "Error" in line]
        return {"error": (errors or result.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(result):
    """The worker's last line: one JSON object on stdout."""
    print(json.dumps(result), flush=True)


def print_table(rows, columns):
    """Prints `rows` (dicts) as an aligned text table with the given `(key, title)` columns."""
    cells = [[title for _, title in columns]]
    for row in rows:
        cells.append([_format(row.get(key)) for key, _ in columns])
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for n, line in enumerate(cells):
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * width for width in widths))


def _format(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    return str(value)


def plot_panels(curves, titles, xlabel, ylabels, path, sharey=False):
    """Curves side by side, one panel per title, written to `path` (PNG).

    `curves` maps a legend label to one `(x, y)` per panel; `ylabels` holds a
    label (or None) per panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(titles), figsize=(9, 3.6), sharey=sharey)
    for label, series in curves.items():
        for axis, (x, y) in zip(axes, series, strict=True):
            axis.plot(x, y, marker="." if len(x) < 20 else None, label=label)
    for axis, title, ylabel in zip(axes, titles, ylabels, strict=True):
        axis.set_title(title)
        axis.set_xlabel(xlabel)
        if ylabel:
            axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    axes[-1].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
