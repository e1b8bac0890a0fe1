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
import json
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


# --- commands -------------------------------------------------------------------


def presets(args):
    from keras_transformer.config import PRESETS, TransformerConfig

    configs = {name: TransformerConfig.preset(name, args.vocab_size).to_dict() for name in PRESETS}
    print(json.dumps(configs, indent=2))


def built_in(corpus, split, size):
    from keras_transformer.data import number_words

    name, _, lang = corpus.partition(":")
    if name != "number-words":
        raise ValueError(f"Unknown corpus {corpus!r}; the built-in one is number-words:de|fr|es")
    return number_words(split, target_lang=lang or "de", size=size)


def read_pairs(args, src, tgt, tsv=None, corpus=None, split="train", size=None):
    from keras_transformer.data import read_parallel, read_tsv

    given = [bool(getattr(args, src, None) or getattr(args, tgt, None)), bool(tsv), bool(corpus)]
    if sum(given) > 1:
        raise ValueError(f"Give one of --{src}/--{tgt}, --tsv or --corpus, not several")
    if corpus:
        return built_in(corpus, split, size)
    if tsv:
        return read_tsv(tsv)
    source, target = getattr(args, src, None), getattr(args, tgt, None)
    if source and target:
        return read_parallel(source, target)
    if source or target:
        raise ValueError(f"--{src} and --{tgt} go together")
    return None


def train(args):
    from keras_transformer import workdir as workdirs
    from keras_transformer.config import (
        DecodingConfig,
        TrainingConfig,
        TransformerConfig,
        apply_overrides,
        differences,
    )
    from keras_transformer.tokenization import Tokenizer
    from keras_transformer.training import average_checkpoints_in, train

    pairs = read_pairs(args, "src", "tgt", args.tsv, args.corpus, "train", args.train_size)
    if pairs is None:
        raise ValueError("No training data: give --src and --tgt, --tsv or --corpus")
    valid = read_pairs(args, "valid_src", "valid_tgt", args.valid_tsv)
    if valid is None and args.corpus:
        valid = built_in(args.corpus, "valid", 500)

    if any(item.partition("=")[0].strip().endswith("vocab_size") for item in args.set):
        raise ValueError("Set the vocabulary with --vocab-size, not --set vocab_size=...")
    tokenizer_path = workdirs.path(args.workdir, workdirs.TOKENIZER)
    existing = os.path.isfile(tokenizer_path)
    tokenizer = (
        Tokenizer.load(tokenizer_path)
        if existing
        else Tokenizer.train([text for pair in pairs for text in pair], args.vocab_size)
    )
    configs = {
        "model": TransformerConfig.preset(args.preset, tokenizer.vocab_size),
        "training": TrainingConfig(),
        "decoding": DecodingConfig(),
    }
    configs = apply_overrides(configs, args.set)
    if os.path.isfile(workdirs.path(args.workdir, workdirs.CONFIG)):
        stored = workdirs.read_config(args.workdir)
        changed = differences(stored, configs)
        if changed:
            raise ValueError(
                f"{args.workdir} holds a run with another config (workdir -> this command):\n  "
                + "\n  ".join(changed)
                + "\nUse another --workdir, or the same --preset and --set as before."
            )
    else:
        workdirs.write_config(args.workdir, configs)
    if not existing:
        tokenizer.save(tokenizer_path)
        print(f"Trained a joint BPE vocabulary of {tokenizer.vocab_size} pieces", flush=True)
    train(
        args.workdir,
        tokenizer,
        pairs,
        valid,
        max_steps=args.max_steps,
        epochs=args.epochs,
        time_budget=args.time_budget,
        checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints,
        jit_compile=not args.no_jit,
    )
    print(f"Wrote {workdirs.path(args.workdir, workdirs.MODEL)}", flush=True)
    if args.average_last:
        print(average_checkpoints_in(args.workdir, args.average_last), flush=True)


def load_translator(args):
    import keras

    from keras_transformer import workdir as workdirs
    from keras_transformer.decoding import Translator
    from keras_transformer.tokenization import Tokenizer

    model_path, tokenizer_path, decoding = workdirs.model_files(args.workdir)
    model = keras.saving.load_model(model_path, compile=False)
    return Translator(
        model,
        Tokenizer.load(tokenizer_path),
        beam_size=args.beam_size or decoding.beam_size,
        length_penalty=(
            decoding.length_penalty if args.length_penalty is None else args.length_penalty
        ),
        max_extra_length=decoding.max_extra_length,
        batch_size=args.batch_size,
        jit_compile=not args.no_jit,
    )


def translate(args):
    from keras_transformer.data import read_lines

    if args.output and os.path.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
    translator = load_translator(args)
    if args.input and args.output:
        translator.translate_file(args.input, args.output, overwrite=args.overwrite)
        return
    lines = read_lines(args.input) if args.input else [line.rstrip("\n") for line in sys.stdin]
    translations = translator.translate(lines)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            file.writelines(f"{line}\n" for line in translations)
    else:
        sys.stdout.writelines(f"{line}\n" for line in translations)


def evaluate(args):
    from keras_transformer import workdir as workdirs
    from keras_transformer.evaluation import score

    pairs = read_pairs(args, "src", "ref", corpus=args.corpus, split="test", size=args.size)
    if pairs is None:
        raise ValueError("No test data: give --src and --ref, or --corpus")
    translator = load_translator(args)
    name = os.path.basename(args.src) if args.src else args.corpus.replace(":", "-") + ".test"
    output = args.output or workdirs.path(args.workdir, f"{name}.hyp")
    if args.output and os.path.exists(output):
        raise FileExistsError(f"{output} exists; choose another --output")
    sources = [source for source, _ in pairs]
    hypotheses = translator.translate(sources, progress=_progress)
    sys.stderr.write("\n")
    with open(output, "w", encoding="utf-8") as file:
        file.writelines(f"{line}\n" for line in hypotheses)
    for (source, reference), hypothesis in list(zip(pairs, hypotheses, strict=True))[
        : args.examples
    ]:
        print(f"{source}\n  -> {hypothesis}\n     (reference: {reference})")
    scores = score(hypotheses, [reference for _, reference in pairs])
    print("\n".join(scores.lines()))
    short = sum(len(reference.split()) < 4 for _, reference in pairs) / len(pairs)
    if short > 0.5:
        print(
            f"note: {short:.0%} of the references have fewer than 4 words, and BLEU counts "
            "word 4-grams: it says little here; chrF and exact match do."
        )
    print(f"hypotheses: {output}")
    return scores


def _progress(done, total):
    sys.stderr.write(f"\rtranslated {done}/{total} sentences")
    sys.stderr.flush()


def average(args):
    from keras_transformer.training import average_checkpoints_in

    print(average_checkpoints_in(args.workdir, args.last))


def export(args):
    from keras_transformer.export import export_saved_model

    directory = export_saved_model(
        args.workdir, args.out, version=args.model_version, jit_compile=args.jit_compile
    )
    print(f"Exported {directory}")
    if args.check:
        from keras_transformer.serving import check_export

        lines = check_export(directory, args.check_text or ["Hello, world.", ""])
        print("Checked in TF Serving's session loader, in a fresh TensorFlow process:")
        print("\n".join(lines))


COMMANDS = {
    "presets": presets,
    "train": train,
    "translate": translate,
    "evaluate": evaluate,
    "average": average,
    "export": export,
}


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
    from keras_transformer.data import CorpusError
    from keras_transformer.training import TrainingError

    try:
        COMMANDS[args.command](args)
    except TrainingError as error:
        print(f"keras-transformer: {error}", file=sys.stderr)
        return 1
    except (ValueError, CorpusError, FileNotFoundError, FileExistsError) as error:
        print(f"keras-transformer: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
