"""The command line's arguments: every command and flag of `keras-transformer`.

Imports nothing heavier than the configs, so that `--help` answers before
Keras loads (see `keras_transformer_cli`).
"""

import argparse

BACKENDS = ("tensorflow", "jax", "torch")
EXPORT_FORMATS = ("savedmodel", "ctranslate2", "onnx")


class _Formatter(argparse.HelpFormatter):
    """Shows an option's default after its help, where it has one."""

    def _get_help_string(self, action):
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if shown and action.option_strings and "%(default)" not in action.help:
            return f"{action.help} (default: %(default)s)"
        return action.help


def build_parser():
    from keras_transformer import __version__
    from keras_transformer.config import PRESETS

    parser = argparse.ArgumentParser(
        prog="keras-transformer",
        description='The Transformer of "Attention Is All You Need" on Keras 3.',
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help):
        sub = commands.add_parser(name, help=help, description=help, formatter_class=_Formatter)
        sub.add_argument(
            "--backend", choices=BACKENDS, help="the Keras backend (default: $KERAS_BACKEND)"
        )
        sub.add_argument("--debug", action="store_true", help="show the traceback of a failure")
        return sub

    def corpus_arguments(sub, side, src, tgt):
        sub.add_argument(f"--{src}", metavar="FILE", help=f"{side} source sentences, one a line")
        sub.add_argument(f"--{tgt}", metavar="FILE", help=f"{side} target sentences, aligned")

    presets = command("presets", "print the architecture presets as JSON")
    presets.add_argument(
        "--vocab-size", type=int, default=37000, metavar="N", help="their vocabulary size"
    )

    train = command("train", "train (or resume) a model in a work directory")
    train.add_argument("--workdir", required=True, help="the run's directory; created if new")
    corpus_arguments(train, "training", "src", "tgt")
    train.add_argument("--tsv", metavar="FILE", help="training pairs as source<TAB>target lines")
    train.add_argument("--corpus", metavar="number-words:LANG", help="the built-in corpus")
    train.add_argument(
        "--train-size", type=int, metavar="N", help="pairs of the built-in corpus to draw"
    )
    corpus_arguments(train, "validation", "valid-src", "valid-tgt")
    train.add_argument("--valid-tsv", metavar="FILE", help="validation pairs, source<TAB>target")
    train.add_argument("--preset", default="small", choices=PRESETS, help="the architecture")
    train.add_argument(
        "--vocab-size", type=int, default=8000, metavar="N", help="joint BPE vocabulary, at most"
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field: model.dropout=0.2, training.warmup_steps=1000, beam_size=5",
    )
    train.add_argument(
        "--precision",
        choices=("float32", "mixed_bfloat16", "mixed_float16"),
        help="the dtype policy, kept in config.json as training.precision (default: float32; "
        "a resumed run gives the same)",
    )
    train.add_argument(
        "--max-steps", type=int, metavar="N", help="stop after this many optimizer steps"
    )
    train.add_argument(
        "--epochs", type=int, metavar="N", help="stop after this many passes over the data"
    )
    train.add_argument(
        "--time-budget", type=float, metavar="MINUTES", help="stop after this many minutes"
    )
    train.add_argument(
        "--checkpoint-every", type=int, default=1000, metavar="STEPS", help="steps between saves"
    )
    train.add_argument(
        "--keep-checkpoints", type=int, default=5, metavar="N", help="the last N are kept"
    )
    train.add_argument("--no-jit", action="store_true", help="do not compile with XLA")
    train.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="train data-parallel on N devices of this process, each with a batch of "
        "training.max_tokens (JAX, TensorFlow; default: every GPU, or 1 on a CPU)",
    )
    train.add_argument(
        "--num-processes",
        type=int,
        metavar="N",
        help="train in N processes (machines, or one per device), data-parallel; start each "
        "with its --process-id and the same --coordinator (JAX only)",
    )
    train.add_argument(
        "--process-id", type=int, metavar="I", help="this process's rank, 0..N-1; 0 writes files"
    )
    train.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="process 0's address and a free port, where JAX's coordination service listens",
    )
    train.add_argument(
        "--peer-timeout",
        type=float,
        metavar="SECONDS",
        help="stop with an error when a process is silent this long (default: 120)",
    )
    train.add_argument(
        "--log-every",
        type=int,
        default=100,
        metavar="STEPS",
        help="steps between progress lines when stdout is not a terminal (a log file)",
    )
    train.add_argument(
        "--validate-every",
        type=int,
        default=0,
        metavar="STEPS",
        help="also validate (loss, greedy BLEU on the sample) every STEPS steps; 0: per epoch",
    )
    train.add_argument(
        "--average-last",
        type=int,
        default=0,
        metavar="N",
        help="after training, average the last N checkpoints into model.keras",
    )

    translate = command("translate", "translate stdin (or --input) to stdout (or --output)")
    model_arguments(translate)
    translate.add_argument("--input", metavar="FILE", help="sentences, one a line (default: stdin)")
    translate.add_argument("--output", metavar="FILE", help="translations (default: stdout)")
    translate.add_argument("--overwrite", action="store_true", help="replace --output")
    translate.add_argument(
        "--scores",
        action="store_true",
        help="print TRANSLATION<TAB>SCORE, the length-normalised log-probability",
    )
    translate.add_argument(
        "--n-best",
        type=int,
        metavar="N",
        help="print the N best hypotheses of each line as INDEX ||| TRANSLATION ||| SCORE "
        "(INDEX counts input lines from 0; N at most the beam size)",
    )
    decoding_arguments(translate)

    evaluate = command("evaluate", "translate a test set and print sacreBLEU and chrF")
    model_arguments(evaluate)
    corpus_arguments(evaluate, "test", "src", "ref")
    evaluate.add_argument("--corpus", metavar="number-words:LANG", help="its test split")
    evaluate.add_argument("--size", type=int, help="sentences of the built-in test split")
    evaluate.add_argument("--output", metavar="FILE", help="hypotheses (default: in the workdir)")
    evaluate.add_argument("--examples", type=int, default=0, help="print N translations")
    decoding_arguments(evaluate)

    average = command("average", "average the last N checkpoints into model.keras (§6.1)")
    average.add_argument("--workdir", required=True, help="a trained work directory")
    average.add_argument("--last", type=int, default=5, help="how many checkpoints, the last ones")

    export = command(
        "export", "write a TF Serving SavedModel (OUT/<version>/) or a CTranslate2 model (OUT/)"
    )
    export.add_argument("--workdir", required=True, help="a trained work directory")
    export.add_argument(
        "--out", required=True, metavar="saved_models/NAME", help="the model's root folder"
    )
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="savedmodel",
        help="a SavedModel for TF Serving (text in, text out), a CTranslate2 model directory "
        "(fast CPU inference), or the forward pass as ONNX (ids in, logits out; PyTorch backend)",
    )
    export.add_argument(
        "--quantization",
        metavar="TYPE",
        help="CTranslate2 weights: int8, int8_float32, int16, float16, bfloat16 (default: float32)",
    )
    export.add_argument(
        "--version", type=int, dest="model_version", help="default: one above the highest there"
    )
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


def model_arguments(sub):
    """`--workdir` or `--model`: what to translate with."""
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--workdir", help="a trained work directory")
    source.add_argument(
        "--model",
        metavar="PATH",
        help="a .keras file (its tokenizer.model beside it, or --tokenizer), an exported "
        "SavedModel directory, or a CTranslate2 export",
    )
    sub.add_argument("--tokenizer", metavar="FILE", help="the SentencePiece model of --model")


def decoding_arguments(sub):
    sub.add_argument("--no-jit", action="store_true", help="do not compile the search with XLA")
    sub.add_argument("--beam-size", type=int, help="default: config.json's decoding.beam_size")
    sub.add_argument(
        "--length-penalty", type=float, help="default: config.json's decoding.length_penalty"
    )
    sub.add_argument("--batch-size", type=int, default=64, help="sentences per search")
    sub.add_argument(
        "--inter-threads",
        type=int,
        metavar="N",
        help="batches searched at once (default: 2 for a work directory or .keras file; 1 "
        "for a CTranslate2 export, where the number of cores with --intra-threads 1 is "
        "fastest); not for a SavedModel",
    )
    sub.add_argument(
        "--intra-threads",
        type=int,
        metavar="N",
        help="a CTranslate2 export: threads per batch (default: CTranslate2's choice)",
    )
