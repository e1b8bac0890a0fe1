import inspect
import math

import keras
import numpy as np
import pytest
from helpers import random_ids, run_python, runs_once, to_numpy
from keras import ops

import keras_transformer as kt
from keras_transformer import layers
from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT


@runs_once
def test_layers_and_package_import_without_tensorflow():
    """On JAX the layers and the package load no TensorFlow; the input pipeline,
    export and serving load on first use."""
    code = (
        "import sys\n"
        "import keras_transformer.layers\n"
        "assert 'tensorflow' not in sys.modules, 'the layers imported TensorFlow'\n"
        "import keras_transformer as kt\n"
        "assert 'tensorflow' not in sys.modules, 'the package imported TensorFlow'\n"
        "lazy = {f'keras_transformer.{name}' for name in ('data', 'export', 'serving')}\n"
        "assert not lazy & set(sys.modules), sorted(lazy & set(sys.modules))\n"
        "assert callable(kt.export_saved_model) and callable(kt.load_translator)\n"
        "assert callable(kt.data.read_parallel) and lazy <= set(sys.modules)\n"
    )
    run_python(code, "jax")


def test_sinusoids_equal_the_paper_formula():
    length, dim = 60, 16
    encoding = to_numpy(layers.SinusoidalPositionEncoding()(np.zeros((1, length, dim), "float32")))
    expected = np.zeros((length, dim))
    for pos in range(length):
        for i in range(dim // 2):
            angle = pos / 10000 ** (2 * i / dim)
            expected[pos, 2 * i] = math.sin(angle)
            expected[pos, 2 * i + 1] = math.cos(angle)
    np.testing.assert_allclose(encoding[0], expected, atol=2e-5)


def test_positions_piecewise_equal_positions_whole():
    encode = layers.SinusoidalPositionEncoding()
    whole = to_numpy(encode(np.zeros((2, 10, 8), "float32")))
    for start in (0, 3, 9):
        piece = to_numpy(encode(np.zeros((2, 1, 8), "float32"), start_index=start))
        np.testing.assert_allclose(piece[:, 0], whole[:, start], atol=1e-6)


def test_token_embedding_scales_and_ties():
    embedding = layers.TokenEmbedding(vocab_size=11, hidden_dim=4)
    ids = np.array([[1, 5, 10]], "int32")
    out = to_numpy(embedding(ids))
    matrix = to_numpy(embedding.embeddings)
    np.testing.assert_allclose(out, matrix[ids] * 2.0, rtol=1e-6)
    hidden = np.random.default_rng(0).normal(size=(1, 3, 4)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(embedding(hidden, reverse=True)), hidden @ matrix.T, rtol=1e-5, atol=1e-5
    )
    with pytest.raises(TypeError, match="integer token ids.*float32"):
        embedding(ids.astype("float32"))


def test_masks_equal_hand_built_masks():
    ids = np.array([[5, 6, 0, 0], [5, 6, 7, 8]], "int32")
    np.testing.assert_array_equal(to_numpy(layers.padding_mask(ids)), ids != kt.PAD_ID)
    causal = np.tril(np.ones((4, 4), bool))
    np.testing.assert_array_equal(to_numpy(layers.causal_mask(4, 4))[0], causal)
    np.testing.assert_array_equal(
        to_numpy(layers.causal_mask(1, 6, start_index=2))[0], [[1, 1, 1, 0, 0, 0]]
    )
    expected = causal[None] & (ids != kt.PAD_ID)[:, None, :]
    combined = to_numpy(layers.decoder_self_attention_mask(layers.padding_mask(ids)))
    np.testing.assert_array_equal(combined, expected)


def numpy_attention(layer, query, value, mask):
    """Multi-head attention written out in NumPy from the layer's weights."""

    def project(dense, x):
        return x @ to_numpy(dense.kernel) + to_numpy(dense.bias)

    # d_k for queries and keys (`key_dim`, or D / h), d_v = D / h for values.
    h = layer.num_heads
    d_v = layer.hidden_dim // h
    d_k = layer.key_dim or d_v
    q = project(layer.query_dense, query).reshape(*query.shape[:2], h, d_k)
    k = project(layer.key_dense, value).reshape(*value.shape[:2], h, d_k)
    v = project(layer.value_dense, value).reshape(*value.shape[:2], h, d_v)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d_k)
    logits = np.where(mask[:, None], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(*query.shape[:2], h * d_v)
    return project(layer.output_dense, out), weights


# Table 3, row B: d_k = 2 or 6 beside d_v = 8 / 2 = 4 (None: d_k = d_v).
KEY_DIMS = [None, 2, 6]


@pytest.mark.parametrize("key_dim", KEY_DIMS)
def test_attention_equals_numpy_reference_on_both_paths(key_dim):
    rng = np.random.default_rng(0)
    layer = layers.MultiHeadAttention(num_heads=2, hidden_dim=8, key_dim=key_dim)
    query = rng.normal(size=(2, 3, 8)).astype("float32")
    value = rng.normal(size=(2, 5, 8)).astype("float32")
    mask = np.ones((2, 3, 5), bool)
    mask[0, :, 3:] = False
    fused = to_numpy(layer(query, value, attention_mask=mask))
    explicit, scores = layer(query, value, attention_mask=mask, return_attention_scores=True)
    expected, expected_scores = numpy_attention(layer, query, value, mask)
    np.testing.assert_allclose(fused, expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(explicit), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(scores), expected_scores, atol=1e-6)


def test_fully_masked_rows_stay_finite():
    layer = layers.MultiHeadAttention(num_heads=2, hidden_dim=8)
    x = np.ones((1, 3, 8), "float32")
    out = to_numpy(layer(x, x, attention_mask=np.zeros((1, 3, 3), bool)))
    assert np.isfinite(out).all()


@pytest.mark.parametrize("key_dim", KEY_DIMS)
def test_attention_cache_equals_full_attention(key_dim):
    rng = np.random.default_rng(1)
    layer = layers.MultiHeadAttention(num_heads=2, hidden_dim=8, key_dim=key_dim)
    x = rng.normal(size=(2, 4, 8)).astype("float32")
    full = to_numpy(layer(x, x, attention_mask=layers.causal_mask(4, 4)))
    # (B, h, T_max, d_k) keys, (B, h, T_max, d) values
    cache = (ops.zeros((2, 2, 4, layer.key_head_dim)), ops.zeros((2, 2, 4, 4)))
    for t in range(4):
        step, cache = layer(
            x[:, t : t + 1],
            x[:, t : t + 1],
            attention_mask=layers.causal_mask(1, 4, start_index=t),
            cache=cache,
            cache_update_index=t,
        )
        np.testing.assert_allclose(to_numpy(step)[:, 0], full[:, t], atol=1e-5)
    # Cross-attention with keys/values computed once.
    memory = rng.normal(size=(2, 5, 8)).astype("float32")
    cross = layer(x, memory, cache=layer.compute_cache(memory))[0]
    np.testing.assert_allclose(to_numpy(cross), to_numpy(layer(x, memory)), atol=1e-5)
    # Three queries per cached sentence (beams) read that sentence's keys, as copies would.
    beams = np.repeat(x, 3, axis=0) + rng.normal(size=(6, 4, 8)).astype("float32")
    padding = np.array([[True] * 5, [True, True, False, False, False]])
    shared, scores = layer(
        beams, memory, attention_mask=layers.key_padding_mask(padding),
        cache=layer.compute_cache(memory), return_attention_scores=True,
    )[::2]  # fmt: skip
    copies = dict(
        value=np.repeat(memory, 3, axis=0),
        attention_mask=layers.key_padding_mask(np.repeat(padding, 3, axis=0)),
    )
    _, copied_scores = layer(beams, **copies, return_attention_scores=True)
    # Against the backend's fused kernel, which computes the copies' attention apart.
    np.testing.assert_allclose(to_numpy(shared), to_numpy(layer(beams, **copies)), atol=1e-5)
    np.testing.assert_allclose(to_numpy(scores), to_numpy(copied_scores), atol=1e-6)


LAYER_FACTORIES = {
    "MultiHeadAttention": lambda: layers.MultiHeadAttention(num_heads=2, hidden_dim=8, key_dim=3),
    "PositionwiseFeedForward": lambda: layers.PositionwiseFeedForward(8, 16),
    "TransformerEncoderLayer": lambda: layers.TransformerEncoderLayer(
        hidden_dim=8, intermediate_dim=16, num_heads=2, normalize_first=True
    ),
    "TransformerDecoderLayer": lambda: layers.TransformerDecoderLayer(
        hidden_dim=8,
        intermediate_dim=16,
        num_heads=2,
        dropout=0.2,
        normalization="masked_batch",
        key_dim=3,
    ),
    "TokenEmbedding": lambda: layers.TokenEmbedding(vocab_size=10, hidden_dim=8),
    "SinusoidalPositionEncoding": lambda: layers.SinusoidalPositionEncoding(max_wavelength=500.0),
    "LearnedPositionEmbedding": lambda: layers.LearnedPositionEmbedding(
        max_length=12, hidden_dim=8
    ),
    "MaskedBatchNormalization": lambda: layers.MaskedBatchNormalization(momentum=0.9, epsilon=1e-5),
}


@pytest.mark.parametrize("name", sorted(LAYER_FACTORIES))
def test_layers_are_registered_and_round_trip_their_config(name):
    layer = LAYER_FACTORIES[name]()
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"] == f"keras_transformer>{name}"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()
    # Every constructor argument is in the config, so none falls back to its default.
    arguments = set(inspect.signature(type(layer).__init__).parameters) - {"self", "kwargs"}
    assert arguments <= set(layer.get_config()), arguments - set(layer.get_config())


def test_encoder_layer_ignores_padded_keys():
    rng = np.random.default_rng(2)
    layer = layers.TransformerEncoderLayer(hidden_dim=8, intermediate_dim=16, num_heads=2)
    x = rng.normal(size=(1, 3, 8)).astype("float32")
    padded = np.concatenate([x, rng.normal(size=(1, 2, 8)).astype("float32")], axis=1)
    mask = np.array([[True] * 3 + [False] * 2])
    np.testing.assert_allclose(
        to_numpy(layer(padded, padding_mask=mask))[:, :3], to_numpy(layer(x)), atol=1e-5
    )


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: layers.MultiHeadAttention(num_heads=3, hidden_dim=8), "hidden_dim=8, num_heads=3"),
        (
            lambda: layers.TransformerEncoderLayer(hidden_dim=8, intermediate_dim=16, num_heads=3),
            "hidden_dim=8, num_heads=3",
        ),
        (
            lambda: layers.TransformerDecoderLayer(8, 16, 2, dropout=1.0),
            "dropout=1.0",
        ),
        (lambda: layers.MultiHeadAttention(num_heads=2, hidden_dim=8, key_dim=0), "key_dim=0"),
        (lambda: layers.TransformerEncoderLayer(8, 16, 2, key_dim=2.5), "key_dim=2.5"),
    ],
)
def test_invalid_layer_arguments_quote_the_values(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_random_ids_helper_avoids_specials():
    ids = random_ids(np.random.default_rng(0), 4, 6, 20, pad_tail=2)
    assert (ids[:, :4] > kt.EOS_ID).all() and (ids[:, 4:] == kt.PAD_ID).all()


# --- dropout (§5.4), tested with dropout on ---------------------------------

RESIDUAL_BLOCKS = {
    layers.TransformerEncoderLayer: ("self_attention", "feedforward"),
    layers.TransformerDecoderLayer: ("self_attention", "cross_attention", "feedforward"),
}


def drop_everything(layer, blocks):
    """Makes each residual dropout of `layer` zero its input in training, as a rate of 1
    would (the layers refuse 1.0); returns the `training` flags the dropouts see."""
    seen = []

    def call(inputs, training=False):
        seen.append(training)
        return ops.zeros_like(inputs) if training else inputs

    for block in blocks:
        getattr(layer, f"{block}_dropout").call = call
    return seen


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
@pytest.mark.parametrize("cls", sorted(RESIDUAL_BLOCKS, key=lambda c: c.__name__))
def test_dropout_drops_the_sublayer_output_before_the_residual_add(cls, normalize_first):
    rng = np.random.default_rng(3)
    blocks = RESIDUAL_BLOCKS[cls]
    layer = cls(hidden_dim=8, intermediate_dim=16, num_heads=2, dropout=0.1,
                normalize_first=normalize_first)  # fmt: skip
    x = rng.normal(size=(2, 3, 8)).astype("float32")
    args = (x,) if cls is layers.TransformerEncoderLayer else (x, rng.normal(size=(2, 4, 8)))
    layer(*args)  # builds the sublayers
    # Each layer norm its own scale and shift, so the expected chain below pins their order.
    for block in blocks:
        norm = getattr(layer, f"{block}_layer_norm")
        norm.set_weights([rng.uniform(0.5, 1.5, size=(8,)), rng.normal(size=(8,)) * 0.1])
    inference = to_numpy(layer(*args))

    seen = drop_everything(layer, blocks)
    dropped = to_numpy(layer(*args, training=True))
    assert seen == [True] * len(blocks)
    # A block with its sublayer's output dropped whole: post-LN LayerNorm(x + 0), pre-LN x + 0.
    expected = x
    if not normalize_first:
        for block in blocks:
            expected = to_numpy(getattr(layer, f"{block}_layer_norm")(expected))
    np.testing.assert_allclose(dropped, expected, atol=1e-5)
    # In inference dropout passes everything: the sublayers count.
    np.testing.assert_allclose(to_numpy(layer(*args)), inference, atol=1e-6)
    assert not np.allclose(inference, expected, atol=1e-2)


def test_embedding_dropout_applies_in_training_after_the_position_add():
    config = kt.TransformerConfig.tiny(vocab_size=40, dropout=0.5)
    model = kt.build_transformer(config)
    # What the first encoder and decoder layers receive: the dropped embeddings.
    received = {}
    for side, layer in (("encoder", model.encoder_layers[0]), ("decoder", model.decoder_layers[0])):

        def spy(inputs, *args, _side=side, _call=layer.call, **kwargs):
            received[_side] = to_numpy(inputs)
            return _call(inputs, *args, **kwargs)

        layer.call = spy
    rng = np.random.default_rng(4)
    inputs = {ENCODER_INPUT: random_ids(rng, 2, 7, 40), DECODER_INPUT: random_ids(rng, 2, 5, 40)}
    inference = to_numpy(model(inputs, training=False))
    clean = dict(received)
    received.clear()
    training = to_numpy(model(inputs, training=True))
    assert not np.allclose(training, inference, atol=1e-3)
    assert sorted(received) == ["decoder", "encoder"]
    for side, dropped in received.items():
        zeros = dropped == 0
        assert not (clean[side] == 0).any()
        assert 0.3 < zeros.mean() < 0.7, side
        # Kept entries are (embedding + position) / (1 - P_drop): the positions are dropped too.
        np.testing.assert_allclose(
            dropped[~zeros], clean[side][~zeros] / (1 - config.dropout), rtol=1e-5, atol=1e-6
        )
