"""The bodies of the `keras-transformer` commands; `cli.py` parses and calls them."""

import json
import os
import sys

from keras_transformer import workdir
from keras_transformer.progress import is_terminal

# The commands that translate, with their readers and writers, live apart.
from keras_transformer.translating import evaluate, translate  # noqa: F401


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
    from keras_transformer import multiprocess
    from keras_transformer.averaging import average_checkpoints_in
    from keras_transformer.config import DecodingConfig, TrainingConfig, TransformerConfig
    from keras_transformer.distribution import resolve_devices
    from keras_transformer.run import train
    from keras_transformer.tokenization import Tokenizer

    cluster = multiprocess.join_from_arguments(args)  # before anything is read or written
    devices = resolve_devices(args.devices) if cluster is None else None
    chief = cluster is None or cluster.is_chief
    pairs = read_pairs(args, "src", "tgt", args.tsv, args.corpus, "train", args.train_size)
    if pairs is None:
        raise ValueError("No training data: give --src and --tgt, --tsv or --corpus")
    valid = read_pairs(args, "valid_src", "valid_tgt", args.valid_tsv)
    if valid is None and args.corpus:
        valid = built_in(args.corpus, "valid", 500)

    if any(item.partition("=")[0].strip().endswith("vocab_size") for item in args.set):
        raise ValueError("Set the vocabulary with --vocab-size, not --set vocab_size=...")
    tokenizer_path = workdir.path(args.workdir, workdir.TOKENIZER)
    if not chief:  # process 0 prepares the work directory; the others read it
        multiprocess.barrier("workdir ready")
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
    precision = [f"training.precision={args.precision}"] if args.precision else []
    configs = workdir.apply_overrides(configs, [*args.set, *precision])
    if os.path.isfile(workdir.path(args.workdir, workdir.CONFIG)):
        stored = workdir.read_config(args.workdir)
        changed = workdir.differences(stored, configs)
        if changed:
            raise ValueError(
                f"{args.workdir} holds a run with another config (workdir -> this command):\n  "
                + "\n  ".join(changed)
                + "\nUse another --workdir, or the same --preset and --set as before."
            )
    elif chief:
        workdir.write_config(args.workdir, configs)
    if not existing and chief:
        tokenizer.save(tokenizer_path)
        print(f"Trained a joint BPE vocabulary of {tokenizer.vocab_size} pieces", flush=True)
    if chief and cluster is not None:
        multiprocess.barrier("workdir ready")
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
        log_every=None if is_terminal(sys.stdout) else args.log_every,
        validate_every=args.validate_every,
        devices=devices,
        cluster=cluster,
    )
    if not chief:
        return
    print(f"Wrote {workdir.path(args.workdir, workdir.MODEL)}", flush=True)
    if args.average_last:
        print(average_checkpoints_in(args.workdir, args.average_last), flush=True)


def average(args):
    from keras_transformer.averaging import average_checkpoints_in

    print(average_checkpoints_in(args.workdir, args.last))


def export(args):
    savedmodel_only = {"--version": args.model_version, "--jit-compile": args.jit_compile,
                       "--check": args.check, "--check-text": args.check_text}  # fmt: skip
    if args.quantization and args.format != "ctranslate2":
        raise ValueError("--quantization: only for --format ctranslate2")
    if args.format != "savedmodel":
        given = [flag for flag, value in savedmodel_only.items() if value]
        if given:
            raise ValueError(f"{', '.join(given)}: only for --format savedmodel")
    if args.format == "ctranslate2":
        from keras_transformer.ctranslate2 import export_ctranslate2

        print(f"Exported {export_ctranslate2(args.workdir, args.out, args.quantization)}")
        return
    if args.format == "onnx":
        from keras_transformer.onnx import export_onnx

        print(f"Exported {export_onnx(args.workdir, args.out)}")
        return
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
