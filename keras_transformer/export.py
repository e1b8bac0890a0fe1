"""The TF Serving SavedModel: text in, translation out.

TensorFlow by nature: a SavedModel is a TensorFlow graph. `export_saved_model`
puts the tokenizer (TensorFlow Text's SentencePiece ops, which TF Serving
links), the encoder and the whole beam search into one `tf.Module` and saves
it with three signatures:

- `serving_default`: `text` string `[batch]` -> `translation` string
  `[batch]`, `score` float32 `[batch]` (log p(Y) / lp(Y), 0 for an empty input);
- `translate_ids`: `token_ids` int32 `[batch, length]` -> `token_ids` int32
  `[batch, length]` (the best hypothesis, EOS then PAD), `score`;
- `logits`: `encoder_token_ids`, `decoder_token_ids` -> `logits` float32
  `[batch, length, vocab]` (teacher-forced scoring).

`assets.extra/tf_serving_warmup_requests` holds requests that TF Serving
replays at load time, one sentence per source length bucket, so that the
first real request does not pay for the graph's first run or, with
`jit_compile`, XLA's compilation.

The SavedModel runs in TensorFlow's session-based loader, as TF Serving runs
it (a session over the MetaGraph tagged `serve`, variables restored by its
restore op, the signature's tensors run by name), and with
`tf.saved_model.load`, in a process that imports only `tensorflow` and
`tensorflow_text`. A model on the JAX or PyTorch backend exports through its
`.keras` file in a TensorFlow-backend subprocess, so the graph is the same
whatever the training backend (`main` below is that subprocess's entry).
Reading an export back is `serving.py`'s job.
"""

import argparse
import logging
import os
import subprocess
import sys
import tempfile

import keras

from keras_transformer import workdir
from keras_transformer.checks import check_positive_integer
from keras_transformer.config import DecodingConfig
from keras_transformer.decoding.translator import SOURCE_BUCKETS
from keras_transformer.tokenization import EOS_ID, PAD_ID, Tokenizer
from keras_transformer.warmup import write_warmup

logger = logging.getLogger("keras_transformer")

TOKENIZER_ASSET = "tokenizer.model"


def export_saved_model(translator_or_workdir, path, version=None, jit_compile=False):
    """Writes a TF Serving SavedModel to `path/<version>/` and returns that directory.

    The export is written to a hidden temporary directory beside it and
    renamed at the end, so a failure never leaves a half-written version (TF
    Serving only loads numeric directory names). An existing version is never
    replaced.

    Args:
        translator_or_workdir: a `Translator` (its model, tokenizer and
            decoding settings are exported) or a training work directory
            (its `model.keras`, tokenizer and `config.json` decoding section).
        path: str. The model's base directory, `saved_models/NAME`; TF
            Serving's `model_base_path`.
        version: int or None. None takes the next integer after the largest
            version present (1 for a new base directory).
        jit_compile: bool. Compile the search with XLA inside the SavedModel.
            Faster on CPU and GPU, but TF Serving then needs
            `--xla_cpu_compilation_enabled=true`; the default graph runs on
            any TF Serving build.

    Returns:
        str: the version directory written.
    """
    path = os.path.abspath(path)
    version = _next_version(path) if version is None else _check_version(version)
    target = os.path.join(path, str(version))
    if os.path.exists(target):
        raise FileExistsError(
            f"{target} exists; TF Serving versions are never overwritten. "
            f"Pass another version or omit it to take the next one ({_next_version(path)})."
        )
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".tmp-{version}-", dir=path) as scratch:
        staging = os.path.join(scratch, "export")
        if isinstance(translator_or_workdir, (str, os.PathLike)):
            sources = workdir.model_files(os.fspath(translator_or_workdir))
            _export_files(*sources, staging, jit_compile)
        elif keras.backend.backend() == "tensorflow":
            _write_saved_model(translator_or_workdir, staging, jit_compile)
        else:
            translator = translator_or_workdir
            model_path = os.path.join(scratch, "model.keras")
            tokenizer_path = os.path.join(scratch, TOKENIZER_ASSET)
            translator.model.save(model_path)
            translator.tokenizer.save(tokenizer_path)
            _export_files(
                model_path, tokenizer_path, translator.decoding_config, staging, jit_compile
            )
        if os.path.exists(target):
            raise FileExistsError(f"{target} appeared during the export; it was left as it was")
        os.rename(staging, target)
    logger.info("Exported %s", target)
    return target


def versions(path):
    """The numeric version directories TF Serving would see under `path`."""
    return [int(name) for name in os.listdir(path) if name.isdigit()] if os.path.isdir(path) else []


def _next_version(path):
    return max(versions(path), default=0) + 1


def _check_version(version):
    check_positive_integer(version=version)
    return version


def _export_files(model_path, tokenizer_path, decoding, out, jit_compile):
    """Exports from files under the TensorFlow backend: here, or in a subprocess."""
    if keras.backend.backend() == "tensorflow":
        from keras_transformer.decoding.translator import Translator

        model = keras.saving.load_model(model_path, compile=False)
        translator = Translator(model, Tokenizer.load(tokenizer_path), **decoding.to_dict())
        _write_saved_model(translator, out, jit_compile)
        return
    command = [
        sys.executable, "-m", "keras_transformer.export",
        "--model", model_path, "--tokenizer", tokenizer_path, "--staging", out,
        *(f"--{key.replace('_', '-')}={value}" for key, value in decoding.to_dict().items()),
        *(["--jit-compile"] if jit_compile else []),
    ]  # fmt: skip
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"Export under the TensorFlow backend failed (exit {result.returncode}):\n"
            f"{result.stderr[-4000:]}"
        )


def _write_saved_model(translator, out, jit_compile):
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch:
        asset = os.path.join(scratch, TOKENIZER_ASSET)
        translator.tokenizer.save(asset)
        module = _serving_module(translator, asset, jit_compile)
        signatures = {
            "serving_default": module.serve,
            "translate_ids": module.translate_ids,
            "logits": module.logits,
        }
        tf.saved_model.save(module, out, signatures=signatures)
    limit = translator.model.config.max_length
    write_warmup(translator.tokenizer, _source_buckets(limit), jit_compile, out)


def _serving_module(translator, tokenizer_asset, jit_compile):
    """The `tf.Module` holding the model, the tokenizer and the search."""
    import tensorflow as tf

    model = translator.model
    limit = model.config.max_length
    extra = translator.decoding_config.max_extra_length

    search = tf.function(translator.search_batch, jit_compile=jit_compile)

    buckets = tf.constant(_source_buckets(limit), tf.int32)

    def best(token_ids):
        """The best hypothesis per row, padded as `Translator.translate` pads."""
        batch_size, length = tf.shape(token_ids)[0], tf.shape(token_ids)[1]
        tf.debugging.assert_less_equal(
            length, limit, message=f"token_ids are longer than the model's max_length={limit}"
        )
        # A bucket length and a power-of-two batch: few shapes to compile.
        width = tf.gather(buckets, tf.searchsorted(buckets, tf.reshape(length, [1]))[0])
        rows = tf.bitwise.left_shift(1, _bit_length(tf.maximum(batch_size, 1) - 1))
        padded = tf.pad(token_ids, [[0, rows - batch_size], [0, width - length]])
        # Each sentence: its input length + max_extra_length tokens (§6.1).
        lengths = tf.reduce_sum(tf.cast(tf.not_equal(padded, PAD_ID), tf.int32), axis=1)
        row_limits = tf.minimum(lengths + extra, limit)
        max_length = tf.minimum(width + extra, limit)
        sequences, scores = search(padded, row_limits, max_length)
        return sequences[:batch_size, 0, :], scores[:batch_size, 0]

    module = tf.Module()
    # The traced functions read the `tf.Variable` behind each Keras variable
    # (`variable.value`). Tracked through the Keras model instead, the graph
    # holds every weight under two handles: the restore op fills one, the
    # functions read the other. `tf.saved_model.load` copes; TF Serving's
    # session loader fails ("Could not find variable", issue #27). Tracking
    # the backing variables, as `keras.export.ExportArchive` does, keeps one.
    module.model_variables = [variable.value for variable in model.variables]
    module.tokenizer_asset = tf.saved_model.Asset(tokenizer_asset)
    module.tokenizer = translator.tokenizer.graph_tokenizer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        # The same rule as `Translator.encode`: max_length - 1 pieces, then EOS.
        pieces = module.tokenizer.tokenize(text)[:, : limit - 1]
        blank = tf.equal(pieces.row_lengths(), 0)
        eos = tf.fill([pieces.nrows(), 1], EOS_ID)
        token_ids = tf.concat([pieces, eos], axis=1).to_tensor(default_value=PAD_ID)
        sequences, scores = best(token_ids)
        translation = module.tokenizer.detokenize(_strip(sequences))
        # An input with no pieces translates to "" with score 0, as in `Translator`.
        return {
            "translation": tf.where(blank, "", translation),
            "score": tf.where(blank, 0.0, scores),
        }

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, name="token_ids")])
    def translate_ids(token_ids):
        sequences, scores = best(token_ids)
        return {"token_ids": sequences, "score": scores}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32, name="encoder_token_ids"),
            tf.TensorSpec([None, None], tf.int32, name="decoder_token_ids"),
        ]
    )
    def logits(encoder_token_ids, decoder_token_ids):
        inputs = {"encoder_token_ids": encoder_token_ids, "decoder_token_ids": decoder_token_ids}
        return {"logits": model(inputs, training=False)}

    module.serve, module.translate_ids, module.logits = serve, translate_ids, logits
    return module


def _source_buckets(limit):
    """The lengths the graph pads sources to: `Translator`'s buckets up to the model's limit."""
    return [b for b in SOURCE_BUCKETS if b < limit] + [limit]


def _bit_length(n):
    """Bits needed for the non-negative int32 scalar `n` (TensorFlow ops)."""
    import tensorflow as tf

    powers = tf.bitwise.left_shift(1, tf.range(31))
    return tf.reduce_sum(tf.cast(powers <= n, tf.int32))


def _strip(sequences):
    """`(B, T)` ids -> ragged ids before the first EOS (TensorFlow ops)."""
    import tensorflow as tf

    before_eos = tf.equal(tf.cumsum(tf.cast(tf.equal(sequences, EOS_ID), tf.int32), axis=1), 0)
    keep = tf.logical_and(before_eos, tf.not_equal(sequences, PAD_ID))
    return tf.ragged.boolean_mask(sequences, keep)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a .keras file")
    parser.add_argument("--tokenizer", required=True, help="its SentencePiece model")
    parser.add_argument("--staging", required=True, help="the directory to write")
    parser.add_argument("--beam-size", type=int, default=DecodingConfig.beam_size)
    parser.add_argument("--length-penalty", type=float, default=DecodingConfig.length_penalty)
    parser.add_argument("--max-extra-length", type=int, default=DecodingConfig.max_extra_length)
    parser.add_argument("--jit-compile", action="store_true")
    args = parser.parse_args(argv)
    decoding = DecodingConfig(args.beam_size, args.length_penalty, args.max_extra_length)
    _export_files(args.model, args.tokenizer, decoding, args.staging, args.jit_compile)


if __name__ == "__main__":
    main()
