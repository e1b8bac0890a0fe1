"""Gradient accumulation and data-parallel training on several devices of one process."""

import pathlib

import keras
import numpy as np
import pytest
from helpers import random_ids, run_python, to_numpy

import keras_transformer as kt
from keras_transformer import distribution
from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT

# Adam's epsilon for comparing two ways of computing one gradient: with the
# paper's 1e-9, float noise on a gradient that is 0 in exact arithmetic (the
# key projections' biases: softmax ignores a shift of all the logits) becomes
# a step of +-learning rate, whose sign the order of the sums decides.
ADAM_EPSILON = 1e-3


def test_four_accumulated_micro_batches_equal_one_step_on_the_four_times_batch():
    # 16 pairs: 8 micro-batches of 2 with accumulation_steps=4, or 2 batches
    # of 8: two updates either way. No padding, so each micro-batch has as
    # many target tokens and the mean of their losses is the whole batch's.
    config = kt.TransformerConfig.tiny(vocab_size=40, num_layers=1, dropout=0.0)
    rng = np.random.default_rng(5)
    vocab_size = config.vocab_size
    inputs = {
        ENCODER_INPUT: random_ids(rng, 16, 6, vocab_size),
        DECODER_INPUT: random_ids(rng, 16, 5, vocab_size),
    }
    labels = random_ids(rng, 16, 5, vocab_size)
    initial = kt.build_transformer(config).get_weights()

    def trained(accumulation_steps, batch_size):
        model = kt.build_transformer(config)
        model.set_weights(initial)
        training = kt.TrainingConfig(
            warmup_steps=2, accumulation_steps=accumulation_steps, epsilon=ADAM_EPSILON
        )
        kt.compile_model(model, training)
        model.fit(inputs, labels, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        return model

    accumulated, whole = trained(4, 2), trained(1, 8)
    # The schedule counts updates: after 8 micro-batches, 2, and the rate is that of step 3.
    assert int(to_numpy(accumulated.optimizer.iterations)) == 2
    step_3 = float(to_numpy(kt.TransformerSchedule(config.hidden_dim, warmup_steps=2)(2)))
    np.testing.assert_allclose(float(to_numpy(accumulated.optimizer.learning_rate)), step_3)
    changed = [np.abs(a - b).max() for a, b in zip(whole.get_weights(), initial, strict=True)]
    assert max(changed) > 1e-3
    for a, b in zip(accumulated.get_weights(), whole.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_accumulation_steps_is_a_training_field_kept_in_the_config():
    training = kt.TrainingConfig().override(["accumulation_steps=4"])
    assert training.accumulation_steps == 4
    assert kt.TrainingConfig.from_json(training.to_json()) == training
    with pytest.raises(ValueError, match="accumulation_steps=0"):
        kt.TrainingConfig(accumulation_steps=0)
    optimizer = kt.create_optimizer(32, training)
    assert optimizer.gradient_accumulation_steps == 4
    assert kt.create_optimizer(32).gradient_accumulation_steps is None


def test_more_devices_than_found_are_refused_with_the_count():
    found = len(distribution.local_devices())
    if keras.backend.backend() == "torch":
        with pytest.raises(ValueError, match="one device per process"):
            distribution.resolve_devices(2)
    else:
        with pytest.raises(ValueError, match=f"found {found} device"):
            distribution.resolve_devices(found + 1)
    assert distribution.resolve_devices(1) == 1
    assert distribution.resolve_devices() == 1  # a CPU
    with pytest.raises(ValueError, match="positive integer"):
        distribution.resolve_devices(0)


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_two_virtual_devices_train_like_one(backend):
    """In a fresh process of `backend` with 2 CPU devices; in that backend's pass."""
    if keras.backend.backend() != backend:
        pytest.skip(f"runs in the {backend} pass (a process of its own)")
    script = pathlib.Path(__file__).with_name("data_parallel_check.py").read_text()
    run_python(script, backend, timeout=600)
