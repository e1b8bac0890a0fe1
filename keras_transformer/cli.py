"""The `keras-transformer` command line (wiring only; also `python -m keras_transformer`).

    keras-transformer train --src train.en --tgt train.de --workdir runs/en-de --preset small \
        [--valid-src F --valid-tgt F] [--set key=value ...] \
        [--max-steps N | --epochs N | --time-budget MIN]
    keras-transformer translate --workdir runs/en-de [--input F --output F] [--beam-size 4]
    keras-transformer evaluate --workdir runs/en-de --src test.en --ref test.de
    keras-transformer average --workdir runs/en-de --last 5
    keras-transformer export --workdir runs/en-de --out saved_models/en-de
    keras-transformer presets

`--backend tensorflow|jax|torch` picks the Keras backend. `--corpus
number-words:de` (fr, es) uses the built-in corpus instead of files.
"""

import argparse
import os
import subprocess
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def build_parser():
    from keras_transformer import __version__
    from keras_transformer.config import PRESETS

    parser = argparse.ArgumentParser(
        prog="keras-transformer",
        description='The Transformer of "Attention Is All You Need" on Keras 3.',
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name, help):
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--backend", choices=BACKENDS, help="the Keras backend")
        return sub

    def corpus_arguments(sub, side, src, tgt):
        sub.add_argument(f"--{src}", metavar="FILE", help=f"{side} source sentences, one a line")
        sub.add_argument(f"--{tgt}", metavar="FILE", help=f"{side} target sentences, aligned")

    presets = command("presets", "print the architecture presets as JSON")
    presets.add_argument("--vocab-size", type=int, default=37000)

    train = command("train", "train (or resume) a model in a work directory")
    train.add_argument("--workdir", required=True)
    corpus_arguments(train, "training", "src", "tgt")
    train.add_argument("--tsv", metavar="FILE", help="training pairs as source<TAB>target lines")
    train.add_argument("--corpus", metavar="number-words:LANG", help="the built-in corpus")
    train.add_argument("--train-size", type=int, help="pairs of the built-in corpus to draw")
    corpus_arguments(train, "validation", "valid-src", "valid-tgt")
    train.add_argument("--valid-tsv", metavar="FILE")
    train.add_argument("--preset", default="small", choices=PRESETS)
    train.add_argument("--vocab-size", type=int, default=8000, help="joint BPE vocabulary, at most")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field: model.dropout=0.2, training.warmup_steps=1000, beam_size=5",
    )
    train.add_argument("--max-steps", type=int)
    train.add_argument("--epochs", type=int)
    train.add_argument("--time-budget", type=float, metavar="MINUTES")
    train.add_argument("--checkpoint-every", type=int, default=1000, metavar="STEPS")
    train.add_argument("--keep-checkpoints", type=int, default=5)
    train.add_argument("--no-jit", action="store_true", help="do not compile with XLA")
    train.add_argument(
        "--average-last",
        type=int,
        default=0,
        metavar="N",
        help="after training, average the last N checkpoints into model.keras",
    )

    translate = command("translate", "translate stdin (or --input) to stdout (or --output)")
    translate.add_argument("--workdir", required=True)
    translate.add_argument("--input", metavar="FILE")
    translate.add_argument("--output", metavar="FILE")
    translate.add_argument("--overwrite", action="store_true", help="replace --output")
    decoding_arguments(translate)

    evaluate = command("evaluate", "translate a test set and print sacreBLEU and chrF")
    evaluate.add_argument("--workdir", required=True)
    corpus_arguments(evaluate, "test", "src", "ref")
    evaluate.add_argument("--corpus", metavar="number-words:LANG", help="its test split")
    evaluate.add_argument("--size", type=int, help="sentences of the built-in test split")
    evaluate.add_argument("--output", metavar="FILE", help="hypotheses (default: in the workdir)")
    evaluate.add_argument("--examples", type=int, default=0, help="print N translations")
    decoding_arguments(evaluate)

    average = command("average", "average the last N checkpoints into model.keras (§6.1)")
    average.add_argument("--workdir", required=True)
    average.add_argument("--last", type=int, default=5)

    export = command("export", "write a TF Serving SavedModel: OUT/<version>/")
    export.add_argument("--workdir", required=True)
    export.add_argument("--out", required=True, metavar="saved_models/NAME")
    export.add_argument("--version", type=int, dest="model_version")
    export.add_argument(
        "--jit-compile",
        action="store_true",
        help="XLA in the graph (TF Serving: --xla_cpu_compilation_enabled=true)",
    )
    export.add_argument(
        "--check",
        action="store_true",
        help="run the export in a fresh TensorFlow process, in a session as TF Serving does",
    )
    export.add_argument(
        "--check-text", action="append", metavar="TEXT", help="a sentence for --check (repeatable)"
    )
    return parser


def decoding_arguments(sub):
    sub.add_argument("--no-jit", action="store_true", help="do not compile the search with XLA")
    sub.add_argument("--beam-size", type=int, help="default: config.json's decoding.beam_size")
    sub.add_argument("--length-penalty", type=float)
    sub.add_argument("--batch-size", type=int, default=64)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    backend = getattr(args, "backend", None)
    if backend:
        import keras

        if keras.backend.backend() != backend:
            # Keras fixes its backend at import: run again under the chosen one.
            env = {**os.environ, "KERAS_BACKEND": backend}
            command = [sys.executable, "-m", "keras_transformer", *argv]
            return subprocess.run(command, env=env).returncode
    from keras_transformer import commands
    from keras_transformer.data import CorpusError
    from keras_transformer.run import TrainingError

    try:
        getattr(commands, args.command)(args)
    except TrainingError as error:
        print(f"keras-transformer: {error}", file=sys.stderr)
        return 1
    except (ValueError, CorpusError, FileNotFoundError, FileExistsError) as error:
        print(f"keras-transformer: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
