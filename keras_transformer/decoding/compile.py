"""Compiling a whole search into one program, per backend.

The one place that names backends in decoding: Keras has no public
"compile this function" call, so each backend gets its own.
"""

import keras


def compile_search(fn, model, jit_compile=True):
    """Compiles `fn(encoder_token_ids, row_limits, max_decode_length)`.

    `max_decode_length` is a Python int: one program per value.

    - TensorFlow: `tf.function(jit_compile=True)`, one XLA program per shape
      (`jit_compile=False`: a plain graph, quicker to build, slower to run).
    - JAX: `jax.jit` over the model's variables passed as arguments through a
      `keras.StatelessScope`, so weights are inputs, not baked-in constants.
    - PyTorch: eager under `torch.no_grad()`; `torch.compile` fails on Keras
      layers in torch 2.13 (see the README).
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile)
    if backend == "jax":
        import jax

        variables = model.variables

        def stateless(values, encoder_token_ids, row_limits, max_decode_length):
            with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
                return fn(encoder_token_ids, row_limits, max_decode_length)

        jitted = jax.jit(stateless, static_argnums=3)
        return lambda encoder_token_ids, row_limits, max_decode_length: jitted(
            [v.value for v in variables], encoder_token_ids, row_limits, max_decode_length
        )
    if backend == "torch":
        import torch

        def eager(encoder_token_ids, row_limits, max_decode_length):
            with torch.no_grad():
                return fn(encoder_token_ids, row_limits, max_decode_length)

        return eager
    raise ValueError(f"Unsupported Keras backend: {backend}")
