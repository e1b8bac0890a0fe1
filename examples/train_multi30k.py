"""Multi30k English -> German with the best measured recipe, through the command line.

    KERAS_BACKEND=jax python examples/train_multi30k.py ../shared/data/multi30k

Trains the `small` preset in `runs/multi30k-en-de` (resuming if it exists)
with the recipe of the best measured run (docs/results.md): batches of 2,048
target tokens, dropout 0.3, 800 warmup steps and the rate scaled by 0.5,
checkpoints every 100 steps, for 6,146 steps; then averages the last 5
checkpoints and reports sacreBLEU and chrF on test2016. That run gave 38.2
BLEU, chrF 61.5 (6,146 steps in 60 minutes on a fast 2-core CPU; the same
steps take about two hours on a slower one). `--time-budget MINUTES` stops
earlier; `--reverse` trains German -> English.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_transformer import cli  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a folder with train/valid/test2016 .en and .de files")
    parser.add_argument("--reverse", action="store_true", help="German -> English")
    parser.add_argument("--max-steps", type=int, default=6146, help="training steps")
    parser.add_argument("--time-budget", type=float, help="minutes of training, at most")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps")
    parser.add_argument("--workdir")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    src, tgt = ("de", "en") if args.reverse else ("en", "de")
    files = {f"{split}.{lang}": os.path.join(args.data, f"{split}.{lang}")
             for split in ("train", "valid", "test2016") for lang in ("en", "de")}  # fmt: skip
    missing = [path for path in files.values() if not os.path.isfile(path)]
    if missing:
        sys.exit(f"Multi30k files missing: {missing}")
    workdir = args.workdir or f"runs/multi30k-{src}-{tgt}"
    settings = [item for value in args.set for item in ("--set", value)]
    status = cli.main([
        "train", "--src", files[f"train.{src}"], "--tgt", files[f"train.{tgt}"],
        "--valid-src", files[f"valid.{src}"], "--valid-tgt", files[f"valid.{tgt}"],
        "--workdir", workdir, "--preset", args.preset, "--vocab-size", "8000",
        "--set", "max_tokens=2048", "--set", "dropout=0.3", "--set", "warmup_steps=800",
        "--set", "learning_rate_scale=0.5", *settings, "--max-steps", str(args.max_steps),
        *(["--time-budget", str(args.time_budget)] if args.time_budget else []),
        "--checkpoint-every", str(args.checkpoint_every), "--average-last", "5",
    ])  # fmt: skip
    if status:
        sys.exit(status)
    sys.exit(cli.main(["evaluate", "--workdir", workdir, "--src", files[f"test2016.{src}"],
                       "--ref", files[f"test2016.{tgt}"], "--examples", "3"]))  # fmt: skip


if __name__ == "__main__":
    main()
