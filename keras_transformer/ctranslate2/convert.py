"""Our Transformer as a `ctranslate2.specs.TransformerSpec`, saved as a model directory.

`export_ctranslate2` fills the spec with our weights: post-LN or pre-LN as
trained, ReLU, embeddings scaled by sqrt(d_model), our interleaved sinusoid
table given explicitly (CTranslate2's own concatenates sines and cosines) or
the learned position table in its place, the shared matrix (or the untied
ones) for source, target and output, optionally quantized (int8 and others).
Our SentencePiece model and decoding settings go beside it, for
`CTranslate2Translator`. Batch norms are refused: CTranslate2's Transformer
has layer norms only; and so is a `key_dim` (d_k) other than d_model / h:
its attention has one head size for queries, keys and values.
"""

import json
import os
import tempfile

import numpy as np

from keras_transformer.checks import received
from keras_transformer.config import TransformerConfig
from keras_transformer.tokenization import BOS_ID

QUANTIZATIONS = ("int8", "int8_float32", "int8_float16", "int16", "float16", "bfloat16", "float32")
DECODING_FILE = "keras_transformer_decoding.json"
TOKENIZER_FILE = "tokenizer.model"


def import_ctranslate2():
    try:
        import ctranslate2
    except ImportError as error:
        raise ImportError(
            "CTranslate2 export and inference need the `ctranslate2` package: "
            'pip install ".[ctranslate2]" (or pip install ctranslate2)'
        ) from error
    return ctranslate2


def export_ctranslate2(translator_or_workdir, out_dir, quantization=None):
    """Writes a CTranslate2 model directory to `out_dir` and returns it.

    Args:
        translator_or_workdir: a `Translator`, or a training work directory
            (its `model.keras`, tokenizer and decoding settings). A model
            trained on any backend exports.
        out_dir: str. A directory that must not exist yet; it is written
            beside itself first and renamed at the end.
        quantization: None (float32 weights) or one of `QUANTIZATIONS`, as
            CTranslate2's converters take it: `"int8"` stores int8 weights.

    Returns:
        str: `out_dir`.
    """
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Unknown quantization {quantization!r}; expected one of {', '.join(QUANTIZATIONS)}"
        )
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} exists; an export never replaces a directory")
    model, tokenizer, decoding = _model_tokenizer_decoding(translator_or_workdir)
    spec = transformer_spec(model, tokenizer)
    spec.optimize(quantization=quantization)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-ct2-", dir=parent) as scratch:
        staging = os.path.join(scratch, "model")
        os.makedirs(staging)
        spec.save(staging)
        tokenizer.save(os.path.join(staging, TOKENIZER_FILE))
        settings = {**decoding.to_dict(), "max_length": model.config.max_length}
        with open(os.path.join(staging, DECODING_FILE), "w", encoding="utf-8") as file:
            json.dump(settings, file, indent=2)
        if os.path.exists(out_dir):
            raise FileExistsError(f"{out_dir} appeared during the export; it was left as it was")
        os.rename(staging, out_dir)
    return out_dir


def _model_tokenizer_decoding(translator_or_workdir):
    translator = translator_or_workdir
    if isinstance(translator, (str, os.PathLike)):
        from keras_transformer.decoding import Translator

        translator = Translator.from_workdir(translator)
    return translator.model, translator.tokenizer, translator.decoding_config


def transformer_spec(model, tokenizer):
    """Our `Transformer`'s weights as a `ctranslate2.specs.TransformerSpec` (not yet saved)."""
    config = model.config
    if not isinstance(config, TransformerConfig):  # the recurrent baseline
        raise ValueError(
            f"CTranslate2 export takes a Transformer; received a {type(model).__name__} "
            f"({type(config).__name__}). Export it as a SavedModel (export_saved_model) instead."
        )
    if config.normalization != "layer":
        # A batch norm at inference is a fixed per-feature affine map; CTranslate2's
        # layer norm always normalizes each token, and the residual stream carries
        # the map's output, so no weight of the spec can absorb it.
        raise _unrepresentable(
            "its Transformer has layer norms only", normalization=config.normalization
        )
    if config.key_dim not in (None, config.head_dim):
        # Its attention spec has one `head_dim` for queries, keys and values (and
        # splits the fused projections into equal parts), so d_k must equal d_v.
        raise _unrepresentable(
            f"its attention heads have d_k = d_v = hidden_dim / num_heads = {config.head_dim}",
            key_dim=config.key_dim,
        )
    ctranslate2 = import_ctranslate2()
    specs = ctranslate2.specs
    weights = _Weights(model)
    spec = specs.TransformerSpec.from_config(
        config.num_layers,
        config.num_heads,
        pre_norm=config.normalize_first,
        activation=specs.Activation.RELU,
    )
    spec.config.add_source_eos = True  # our sources end in EOS
    spec.config.layer_norm_epsilon = config.layer_norm_epsilon
    if config.position_encoding == "learned":
        # (max_length, D): CTranslate2 adds row p at position p, as the sinusoid table.
        table = weights.take("position_encoding/embedding/embeddings")
    else:
        table = _sinusoids(config.max_length, config.hidden_dim)
    if config.share_embeddings:
        source = target = output = weights.take("token_embedding/embeddings")
    else:
        source = weights.take("encoder_token_embedding/embeddings")
        target = weights.take("decoder_token_embedding/embeddings")
        output = weights.take("output_projection/kernel").T
    spec.encoder.embeddings[0].weight = source
    spec.decoder.embeddings.weight = target
    for stack in (spec.encoder, spec.decoder):
        stack.scale_embeddings = True  # x sqrt(d_model), paper §3.4
        stack.position_encodings.encodings = table
    spec.decoder.projection.weight = output
    for index, layer in enumerate(spec.encoder.layer):
        prefix = f"encoder_layer_{index}"
        _self_attention(layer.self_attention, weights, f"{prefix}/self_attention")
        _feedforward(layer.ffn, weights, prefix)
    for index, layer in enumerate(spec.decoder.layer):
        prefix = f"decoder_layer_{index}"
        _self_attention(layer.self_attention, weights, f"{prefix}/self_attention")
        _cross_attention(layer.attention, weights, f"{prefix}/cross_attention")
        _feedforward(layer.ffn, weights, prefix)
    if config.normalize_first:
        _layer_norm(spec.encoder.layer_norm, weights, "encoder_output_layer_norm")
        _layer_norm(spec.decoder.layer_norm, weights, "decoder_output_layer_norm")
    weights.check_all_taken()
    pieces = [tokenizer.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    pieces += [f"<unused_{i}>" for i in range(tokenizer.vocab_size, config.vocab_size)]
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = pieces[1:4]
    spec.config.decoder_start_token = pieces[BOS_ID]
    spec.validate()
    return spec


def _unrepresentable(reason, **setting):
    return ValueError(
        f"CTranslate2 cannot represent this model: {reason}. {received(setting)}; "
        "export it as a SavedModel (export_saved_model) instead."
    )


class _Weights:
    """The model's variables by path, as float32 NumPy arrays; each must be used once."""

    def __init__(self, model):
        import keras

        self._arrays = {
            variable.path: np.asarray(keras.ops.convert_to_numpy(variable), "float32")
            for variable in model.weights
        }
        self._taken = set()

    def take(self, path):
        if path not in self._arrays:
            raise ValueError(f"The model has no weight {path!r}: not a keras_transformer model?")
        self._taken.add(path)
        return self._arrays[path]

    def dense(self, spec, path, bias=True):
        """A Keras `Dense` (kernel `(in, out)`) as CTranslate2's linear (weight `(out, in)`)."""
        spec.weight = self.take(f"{path}/kernel").T
        if bias:
            spec.bias = self.take(f"{path}/bias")

    def check_all_taken(self):
        left = sorted(set(self._arrays) - self._taken)
        if left:
            raise ValueError(f"CTranslate2 has no place for these weights: {left}")


def _stacked(weights, path, names):
    """Several projections as one CTranslate2 linear: weights and biases concatenated."""
    kernels = [weights.take(f"{path}/{name}/kernel").T for name in names]
    biases = [weights.take(f"{path}/{name}/bias") for name in names]
    return np.concatenate(kernels, axis=0), np.concatenate(biases, axis=0)


def _self_attention(spec, weights, path):
    # CTranslate2 fuses the query, key and value projections of self-attention.
    spec.linear[0].weight, spec.linear[0].bias = _stacked(weights, path, ("query", "key", "value"))
    weights.dense(spec.linear[1], f"{path}/attention_output")
    _layer_norm(spec.layer_norm, weights, f"{path}_layer_norm")


def _cross_attention(spec, weights, path):
    # Queries from the decoder; keys and values, fused, from the encoder output.
    weights.dense(spec.linear[0], f"{path}/query")
    spec.linear[1].weight, spec.linear[1].bias = _stacked(weights, path, ("key", "value"))
    weights.dense(spec.linear[2], f"{path}/attention_output")
    _layer_norm(spec.layer_norm, weights, f"{path}_layer_norm")


def _feedforward(spec, weights, prefix):
    weights.dense(spec.linear_0, f"{prefix}/feedforward/feedforward_intermediate_dense")
    weights.dense(spec.linear_1, f"{prefix}/feedforward/feedforward_output_dense")
    _layer_norm(spec.layer_norm, weights, f"{prefix}/feedforward_layer_norm")


def _layer_norm(spec, weights, path):
    spec.gamma = weights.take(f"{path}/gamma")
    spec.beta = weights.take(f"{path}/beta")


def _sinusoids(length, hidden_dim):
    """Our position table (sin on even dimensions, cos on odd: paper §3.5), `(length, D)`."""
    import keras

    from keras_transformer.layers.position_encoding import SinusoidalPositionEncoding

    table = SinusoidalPositionEncoding()(keras.ops.zeros((1, length, hidden_dim)))
    return np.asarray(keras.ops.convert_to_numpy(table)[0], "float32")
