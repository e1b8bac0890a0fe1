"""The `translate` and `evaluate` commands: a translator from the arguments, streaming
input in chunks, the output writers; `commands.py` holds the others."""

import codecs
import os
import sys

from keras_transformer import workdir
from keras_transformer.progress import Progress


def translator_for(args):
    """The translator `--workdir` or `--model` names, with the decoding flags applied."""
    overrides = {"beam_size": args.beam_size, "length_penalty": args.length_penalty}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    threads = {"inter_threads": args.inter_threads, "intra_threads": args.intra_threads}
    threads = {key: value for key, value in threads.items() if value is not None}
    if args.model and os.path.isdir(args.model):
        return _export_translator(args.model, overrides, threads, args.batch_size)
    if args.intra_threads is not None:
        raise ValueError("--intra-threads: only a CTranslate2 export (--model DIR) takes it")
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
        **threads,  # --inter-threads only: --intra-threads was refused above
    )


def _export_translator(path, overrides, threads, batch_size):
    """A SavedModel (its search fixed at export) or a CTranslate2 directory."""
    from keras_transformer.ctranslate2 import DECODING_FILE, CTranslate2Translator
    from keras_transformer.serving import load_translator

    if os.path.isfile(os.path.join(path, DECODING_FILE)):
        return CTranslate2Translator(path, batch_size=batch_size, **overrides, **threads)
    if threads:
        flags = ", ".join("--" + key.replace("_", "-") for key in threads)
        raise ValueError(f"{path}: a SavedModel's search runs in its own session; drop {flags}")
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
    from keras_transformer.commands import read_pairs  # loaded already: it loads this module
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
