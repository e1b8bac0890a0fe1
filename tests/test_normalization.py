"""Batch norm in place of the paper's layer norm, and learned positions (issue #31).

The cached decoder's equality with the full one, per variant, is in
test_model.py; the CTranslate2 export of learned positions in test_ctranslate2.py.
"""

import os

import keras
import numpy as np
import pytest
from helpers import random_ids, randomize_moving_statistics, runs_once, to_numpy
from keras import ops

import keras_transformer as kt
from keras_transformer.layers.normalization import (
    BATCH_NORM_MOMENTUM,
    make_normalization,
    normalize,
)
from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT

BATCH_NORMS = ["batch", "masked_batch"]


def inputs(source, target):
    return {ENCODER_INPUT: source, DECODER_INPUT: target}


@pytest.fixture
def batch(tiny_config):
    rng = np.random.default_rng(0)
    source = random_ids(rng, 3, 7, tiny_config.vocab_size, pad_tail=2)
    target = random_ids(rng, 3, 6, tiny_config.vocab_size, pad_tail=1)
    source[1, 3:] = target[1, 4:] = kt.PAD_ID  # lengths differ within the batch
    return source, target


def moving_statistics(model):
    return {w.path: to_numpy(w) for w in model.non_trainable_weights if "moving_" in w.path}


# Both batch norms, post-LN and pre-LN (with the stacks' final norms), and learned positions.
TRAINED = {
    "batch": {"normalization": "batch"},
    "masked_batch_pre_ln_learned": {
        "normalization": "masked_batch",
        "normalize_first": True,
        "position_encoding": "learned",
    },
}


@pytest.mark.parametrize("variant", TRAINED)
def test_variants_train_and_reload_from_a_keras_file(tiny_config, batch, variant, tmp_path):
    config = tiny_config.replace(num_layers=1, **TRAINED[variant])  # one layer: a quick compile
    # Keras' own BatchNormalization trains eagerly on TensorFlow, where tracing a train step
    # costs seconds; our layer trains in the compiled step on every backend.
    eager = variant == "batch" and keras.backend.backend() == "tensorflow"
    model = kt.compile_model(
        kt.build_transformer(config), kt.TrainingConfig(warmup_steps=10), run_eagerly=eager
    )
    source, target = batch
    initial = {w.path: to_numpy(w) for w in model.weights}
    for _ in range(3):  # random labels will do
        logs = model.train_on_batch(inputs(source, target), target, return_dict=True)
    assert np.isfinite(logs["loss"])
    trained = moving_statistics(model)
    # A mean and a variance per norm: 2 in the encoder layer, 3 in the decoder's, 2 closing pre-LN.
    assert len(trained) == 2 * (2 + 3 + 2 * config.normalize_first)
    # Moving averages, scales and shifts moved, and so did learned positions.
    checked = [w for w in model.weights if "_norm/" in w.path or "position" in w.path]
    assert len(checked) == 2 * len(trained) + (config.position_encoding == "learned")
    unchanged = [w.path for w in checked if np.array_equal(to_numpy(w), initial[w.path])]
    assert not unchanged, unchanged
    logits = to_numpy(model(inputs(source, target)))

    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path, compile=False)
    assert restored.config == config
    assert moving_statistics(restored).keys() == trained.keys()
    for name, value in moving_statistics(restored).items():
        np.testing.assert_array_equal(value, trained[name])
    np.testing.assert_array_equal(to_numpy(restored(inputs(source, target))), logits)


def statistics_seen(model, source, target):
    """The batch mean and variance every batch norm computed in one training-mode
    call, read back from its moving averages (which are then restored)."""
    before = moving_statistics(model)
    model(inputs(source, target), training=True)
    seen = {}
    for weight in model.non_trainable_weights:
        if weight.path in before:
            moved = to_numpy(weight)
            seen[weight.path] = (moved - BATCH_NORM_MOMENTUM * before[weight.path]) / (
                1 - BATCH_NORM_MOMENTUM
            )
            weight.assign(before[weight.path])
    return seen


@pytest.mark.parametrize("normalization", BATCH_NORMS)
def test_appended_padding_changes_the_statistics_of_the_unmasked_batch_norm_only(
    tiny_config, batch, normalization
):
    # Pre-LN: the norms of every residual block and the two closing the stacks.
    config = tiny_config.replace(normalization=normalization, normalize_first=True)
    model = kt.build_transformer(config)
    source, target = batch
    initial = moving_statistics(model)
    seen = statistics_seen(model, source, target)
    # The call did update each moving average: a fresh layer's 0s and 1s are not the batch's.
    assert not [path for path in seen if np.allclose(seen[path], initial[path], atol=1e-3)]
    padded = statistics_seen(
        model, np.pad(source, ((0, 0), (0, 5))), np.pad(target, ((0, 0), (0, 4)))
    )
    assert len(seen) == 2 * (2 * 2 + 2 * 3 + 2)
    differences = [np.abs(padded[path] - seen[path]).max() for path in seen]
    if normalization == "masked_batch":
        # Over real tokens only: padding is neither counted nor seen by real tokens.
        assert max(differences) < 1e-3, max(differences)
    else:
        # Over every position: the padded ones pull every statistic.
        assert min(differences) > 1e-2, min(differences)


@pytest.mark.parametrize("normalization", BATCH_NORMS)
def test_inference_does_not_depend_on_the_other_sentences(tiny_config, batch, normalization):
    model = kt.build_transformer(tiny_config.replace(normalization=normalization))
    randomize_moving_statistics(model)
    source, target = batch
    together = to_numpy(model(inputs(source, target)))
    for row in range(len(source)):
        # Alone: the other rows hold padding only. (The same shapes: on JAX, where each
        # new shape compiles every operation again, a batch of one costs seconds.)
        others = np.arange(len(source)) != row
        alone_source, alone_target = source.copy(), target.copy()
        alone_source[others] = alone_target[others] = kt.PAD_ID
        alone = to_numpy(model(inputs(alone_source, alone_target)))
        np.testing.assert_allclose(alone[row], together[row], atol=1e-5)


@pytest.mark.parametrize("normalization", BATCH_NORMS)
def test_batch_norm_statistics_are_float32(normalization):
    """As test_precision's layer-norm test: 256, 258, ..., 318 are exact in bfloat16,
    their sum is not; here they are one feature's values over 32 tokens."""
    norm = make_normalization(normalization, 1e-6, "mixed_bfloat16", "norm")
    values = 256.0 + 2.0 * np.arange(32)
    x = ops.cast(np.tile(values[None, :, None], (2, 1, 4)), "bfloat16")
    normalized = normalize(norm, x, ops.ones((2, 32), "bool"), training=True)
    assert keras.backend.standardize_dtype(normalized.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(norm.moving_mean.dtype) == "float32"
    expected = (values - values.mean()) / np.sqrt(values.var() + 1e-6)
    np.testing.assert_allclose(
        to_numpy(ops.cast(normalized, "float32"))[0, :, 0], expected, atol=0.01
    )
    np.testing.assert_allclose(
        to_numpy(norm.moving_mean), (1 - BATCH_NORM_MOMENTUM) * values.mean(), rtol=1e-6
    )


@runs_once
def test_new_fields_are_checked_and_old_configs_load_with_the_papers_choices():
    for field, value, allowed in (
        ("normalization", "group", "'layer', 'batch', 'masked_batch'"),
        ("position_encoding", "rotary", "'sinusoidal', 'learned'"),
    ):
        message = f"{field} must be one of {allowed}. Received: {field}='{value}'"
        with pytest.raises(ValueError, match=message):
            kt.TransformerConfig(vocab_size=10, **{field: value})
    with pytest.raises(ValueError, match="normalization must be one of .*normalization='Batch'"):
        kt.layers.TransformerEncoderLayer(
            hidden_dim=8, intermediate_dim=16, num_heads=2, normalization="Batch"
        )
    config = kt.TransformerConfig.tiny(
        vocab_size=10, normalization="masked_batch", position_encoding="learned"
    )
    assert kt.TransformerConfig.from_json(config.to_json()) == config
    assert config.override(["normalization=batch"]).normalization == "batch"
    # config.json of 0.2.0 has neither field.
    old = {
        k: v for k, v in config.to_dict().items() if k not in ("normalization", "position_encoding")
    }
    loaded = kt.TransformerConfig.from_dict(old)
    assert (loaded.normalization, loaded.position_encoding) == ("layer", "sinusoidal")


def test_learned_positions_stop_at_max_length():
    positions = kt.layers.LearnedPositionEmbedding(max_length=5, hidden_dim=4)
    np.testing.assert_array_equal(
        to_numpy(positions(np.zeros((1, 1, 4), "float32"), start_index=3))[0, 0],
        to_numpy(positions(np.zeros((1, 5, 4), "float32")))[0, 3],
    )
    with pytest.raises(ValueError, match=r"max_length=5 positions. Received: positions 3 .. 5"):
        positions(np.zeros((1, 3, 4), "float32"), start_index=3)
