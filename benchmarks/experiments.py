"""The paper's questions, each answered by one command (issue #31; docs/experiments.md).

An experiment is the `quality.py` runs it trains on Multi30k en->de (kept per
run and resumable: rerun the command after a stop and it goes on) followed by
the script that turns them into a table and a figure.

    python benchmarks/experiments.py                        # the list: question, budget, commands
    python benchmarks/experiments.py table3                 # train the runs, then write the table
    python benchmarks/experiments.py table3 --dry-run       # print the commands only
    python benchmarks/experiments.py recurrence --smoke     # tiny models: seconds to a minute

Everything is written under `--out` (default `runs/experiments`): the runs in
a folder per experiment, the tables and figures beside them.
"""

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import table3_experiment  # noqa: E402  (its rows name the runs)

TASK = "multi30k-en-de"


@dataclass(frozen=True)
class Experiment:
    question: str
    budget: str  # on the 2-core CPU this project measures on
    trains: dict = None  # {folder under the experiment's ("" for itself): quality.py's arguments}
    analysis: str = ""  # the script that reads the runs, or "" where the runs are the result
    analysis_args: tuple = ()


def quality(*arguments):
    return ("--tasks", TASK, *arguments)


EXPERIMENTS = {
    "table1": Experiment(
        "Table 1: time per layer against n, self-attention, recurrence and convolution",
        "about 3 minutes",
        analysis="layer_timing.py",
        analysis_args=("--backend", "jax"),
    ),
    "normalization": Experiment(
        "Layer norm against batch norm and masked batch norm, at 1,000 equal steps",
        "about 90 minutes of training, then 15 minutes",
        trains={"": quality("--steps", "1000", "--runs", "ours,batch-norm,masked-batch-norm")},
        analysis="normalization_experiment.py",
    ),
    "learning-rate": Experiment(
        "The learning rate at which each norm stops training (300 steps, scales 1 and 4)",
        "about 30 minutes a scale",
        trains={
            f"scale-{scale}": quality(
                "--steps",
                "300",
                "--runs",
                "ours,batch-norm,masked-batch-norm",
                "--test-size",
                "200",
                "--set",
                f"training.learning_rate_scale={scale}",
            )
            for scale in ("1.0", "4.0")
        },
    ),
    "recurrence": Experiment(
        "Self-attention against an LSTM with attention at equal wall-clock (15 minutes each)",
        "about 40 minutes",
        trains={"": quality("--budget", "15", "--validate-every", "100", "--runs", "ours,lstm")},
        analysis="recurrence_experiment.py",
    ),
    "table3": Experiment(
        "Table 3 rows (A)-(E) at 300 equal steps, beside the paper's",
        "about 1 hour 40 minutes for the twelve runs",
        trains={
            "": quality(
                "--steps",
                "300",
                "--average-last",
                "1",
                "--runs",
                ",".join(run for _, run, _, _ in table3_experiment.ROWS),
            ),
        },
        analysis="table3_experiment.py",
    ),
}


def commands(name, out, smoke=False):
    """The commands (argument lists) that experiment `name` runs, writing under `out`."""
    experiment = EXPERIMENTS[name]
    python = sys.executable
    if smoke:  # the analysis scripts train their own tiny runs
        if not experiment.analysis:
            script = os.path.join(HERE, "quality.py")
            return [[python, script, "--smoke", "--tasks", TASK, "--runs", "ours",
                     "--out", os.path.join(out, name)]]  # fmt: skip
        analysis = os.path.join(HERE, experiment.analysis)
        return [[python, analysis, "--smoke", *experiment.analysis_args, "--out", out]]
    runs = os.path.join(out, name)
    found = []
    for folder, arguments in (experiment.trains or {}).items():
        folder = os.path.join(runs, folder) if folder else runs
        found.append([python, os.path.join(HERE, "quality.py"), *arguments, "--out", folder])
    if experiment.analysis:
        reads = ("--runs", os.path.join(runs, TASK)) if experiment.trains else ()
        found.append(
            [
                python,
                os.path.join(HERE, experiment.analysis),
                *reads,
                *experiment.analysis_args,
                "--out",
                out,
            ]
        )
    return found


def show(command):
    relative = [os.path.relpath(part) if os.path.isabs(part) else part for part in command[1:]]
    return shlex.join(["python", *relative])


def listing(out):
    lines = []
    for name, experiment in EXPERIMENTS.items():
        lines += [f"{name}: {experiment.question} ({experiment.budget})"]
        lines += [f"    {show(command)}" for command in commands(name, out)]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="experiments:\n" + "\n".join(
            f"  {name}: {e.question}" for name, e in EXPERIMENTS.items()
        ),
    )  # fmt: skip
    parser.add_argument("experiment", nargs="?", choices=sorted(EXPERIMENTS))
    parser.add_argument("--out", default=os.path.join("runs", "experiments"))
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--smoke", action="store_true", help="tiny models: the tests run this")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.experiment is None:
        print(listing(args.out))
        return 0
    for command in commands(args.experiment, args.out, args.smoke):
        print(show(command), flush=True)
        if not args.dry_run:
            returned = subprocess.run(command).returncode
            if returned:
                print(f"{args.experiment}: stopped, {show(command)} exited {returned}; "
                      "rerun to resume", file=sys.stderr)  # fmt: skip
                return returned
    return 0


if __name__ == "__main__":
    sys.exit(main())
