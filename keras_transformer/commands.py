"""The bodies of the `keras-transformer` commands; `cli.py` parses and calls them."""

import codecs
import json
import os
import sys

from keras_transformer import workdir
from keras_transformer.progress import Progress, is_terminal


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


def translator_for(args):
    """The translator `--workdir` or `--model` names, with the decoding flags applied."""
    overrides = {"beam_size": args.beam_size, "length_penalty": args.length_penalty}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.model and os.path.isdir(args.model):
        return _export_translator(args.model, overrides)
    import keras

    from keras_transformer.config import DecodingConfig
    from keras_transformer.decoding import Translator
    from keras_transformer.tokenization import Tokenizer

    if args.model:  # a .keras file, its tokenizer beside it unless --tokenizer says
        model_path, decoding = args.model, DecodingConfig()
        tokenizer_path = args.tokenizer or os.path.join(
            os.path.dirname(os.path.abspath(args.model)), workdir.TOKENIZER
        )
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"No model at {model_path}: a .keras file or an export")
    else:
        model_path, tokenizer_path, decoding = workdir.model_files(args.workdir)
    model = keras.saving.load_model(model_path, compile=False)
    return Translator(
        model,
        Tokenizer.load(tokenizer_path),
        decoding,
        batch_size=args.batch_size,
        jit_compile=not args.no_jit,
        **overrides,
    )


def _export_translator(path, overrides):
    """A SavedModel (its search fixed at export) or a CTranslate2 directory."""
    from keras_transformer.ctranslate2 import DECODING_FILE, CTranslate2Translator
    from keras_transformer.serving import load_translator

    if os.path.isfile(os.path.join(path, DECODING_FILE)):
        return CTranslate2Translator(path, **overrides)
    if overrides:
        raise ValueError(
            f"{path}: a SavedModel's beam size and length penalty are fixed at export; "
            f"drop {', '.join('--' + key.replace('_', '-') for key in overrides)}"
        )
    return load_translator(path)


def translate(args):
    from keras_transformer.data import read_lines

    if args.output and os.path.exists(args.output) and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; pass --overwrite to replace it")
    translator = translator_for(args)
    # A file is translated whole (sorted by length, batches pad little); stdin streams.
    chunks = [read_lines(args.input)] if args.input else read_chunks(sys.stdin, args.batch_size)
    progress = Progress() if args.input else None
    write = _n_best_writer(translator, args.n_best) if args.n_best else _writer(translator, args)
    if not args.output:
        return _translate_chunks(chunks, sys.stdout, write, progress)
    with workdir.atomic_write(args.output) as temporary:
        with open(temporary, "w", encoding="utf-8") as file:
            _translate_chunks(chunks, file, write, progress)


def _translate_chunks(chunks, file, write, progress):
    """Writes and flushes each chunk's translations, in order, before reading the next."""
    index = 0
    for lines in chunks:
        write(file, lines, index, progress)
        index += len(lines)
        file.flush()


def _writer(translator, args):
    """One line per input: the translation, or `translation<TAB>score` with `--scores`."""

    def write(file, lines, index, progress):
        translations, values = translator.translate(lines, return_scores=True, progress=progress)
        for translation, value in zip(translations, values, strict=True):
            file.write(f"{translation}\t{value:.4f}\n" if args.scores else f"{translation}\n")

    return write


def _n_best_writer(translator, n):
    """`INDEX ||| TRANSLATION ||| SCORE` for each of the n best hypotheses, best first."""

    def write(file, lines, index, progress):
        for offset, hypotheses in enumerate(translator.translate_n_best(lines, n, progress)):
            for translation, score in hypotheses:
                file.write(f"{index + offset} ||| {translation} ||| {score:.4f}\n")

    return write


def read_chunks(stream, size):
    """The lines of `stream` in lists of at most `size`, each list as soon as it is there.

    A list ends at `size` lines or where the input pauses, so a pipe that
    sends one line at a time gets its translation before sending the next.
    """
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError):  # not a file: an io.StringIO
        lines = [line.rstrip("\n") for line in stream]
        yield from (lines[start : start + size] for start in range(0, len(lines), size))
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    pending = ""
    while True:
        data = os.read(descriptor, 1 << 16)  # what is there now, waiting only for the first byte
        *lines, pending = (pending + decoder.decode(data, final=not data)).split("\n")
        yield from (lines[start : start + size] for start in range(0, len(lines), size))
        if not data:
            break
    if pending:
        yield [pending]


def evaluate(args):
    from keras_transformer.evaluation import score

    pairs = read_pairs(args, "src", "ref", corpus=args.corpus, split="test", size=args.size)
    if pairs is None:
        raise ValueError("No test data: give --src and --ref, or --corpus")
    translator = translator_for(args)
    name = os.path.basename(args.src) if args.src else args.corpus.replace(":", "-") + ".test"
    output = args.output or os.path.join(args.workdir or ".", f"{name}.hyp")
    if args.output and os.path.exists(output):
        raise FileExistsError(f"{output} exists; choose another --output")
    sources = [source for source, _ in pairs]
    hypotheses = translator.translate(sources, progress=Progress())
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
