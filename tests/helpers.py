"""Helpers shared by the tests."""

import os
import subprocess
import sys

import keras
import pytest

import keras_transformer as kt

# For a test that does not depend on the backend (the command line end to end,
# several processes, the C runtime): it runs in one pass of the suite, the
# PyTorch one, whose eager tiny models start quickest.
runs_once = pytest.mark.skipif(
    keras.backend.backend() != "torch",
    reason="does not depend on the backend; runs in the PyTorch pass",
)


def random_ids(rng, batch, length, vocab_size, pad_tail=0):
    """Token ids avoiding the special ids, with `pad_tail` trailing PAD_IDs in each row."""
    ids = rng.integers(kt.EOS_ID + 1, vocab_size, size=(batch, length)).astype("int32")
    if pad_tail:
        ids[:, -pad_tail:] = kt.PAD_ID
    return ids


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def gradient(function, x):
    """d function(x) / dx as NumPy, by the backend's own autodiff; `function` returns a scalar."""
    import numpy as np

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(function)(jax.numpy.asarray(x)))
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = function(x)
        return tape.gradient(value, x).numpy()
    import torch

    x = torch.tensor(x, requires_grad=True)
    function(x).backward()
    return x.grad.numpy()


def other_backend():
    """The next backend in the cycle tensorflow -> jax -> torch -> tensorflow."""
    backends = ("tensorflow", "jax", "torch")
    return backends[(backends.index(keras.backend.backend()) + 1) % len(backends)]


def run_python(code, backend, timeout=300):
    """Runs `code` in a fresh interpreter under `backend`; fails the test with its stderr."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{backend} subprocess failed:\n{result.stderr[-4000:]}"
    return result.stdout


def train_briefly(model, pairs, tokenizer, steps=20, learning_rate_scale=1.0, warmup_steps=10):
    """A few optimizer steps.

    A small `learning_rate_scale` keeps a model from collapsing to "EOS at
    once", so that its translations are worth comparing.
    """
    dataset = kt.data.make_dataset(
        pairs,
        tokenizer,
        max_tokens=256,
        max_length=model.config.max_length,
        buckets=(model.config.max_length,),  # one shape: one compiled train step
        seed=1,
    )
    kt.compile_model(
        model,
        kt.TrainingConfig(warmup_steps=warmup_steps, learning_rate_scale=learning_rate_scale),
    )
    model.fit(dataset.repeat(), steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    return model


def randomize_moving_statistics(model, seed=0):
    """Gives every batch norm of `model` random moving means and variances, so that
    inference with them is no longer close to the identity of a fresh layer."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for weight in model.non_trainable_weights:
        if weight.path.endswith("moving_mean"):
            weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
        elif weight.path.endswith("moving_variance"):
            weight.assign(rng.uniform(0.5, 2.0, weight.shape).astype("float32"))
