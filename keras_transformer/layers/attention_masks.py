"""Helpers of `MultiHeadAttention._attend`: the mask it applies, the layout of
shared beam rows, and whether the backend's fused kernel takes the inputs.
"""

import keras
from keras import ops


def rows_first(x):
    # (B, h, K, Tq, X) -> (B, K, h, Tq, X) -> (B*K, h, Tq, X)
    x = ops.transpose(x, (0, 2, 1, 3, 4))
    return ops.reshape(x, (-1, *ops.shape(x)[2:]))


def fused_kernel_supports(query, key_depth, value_depth):
    """Whether `ops.dot_product_attention` takes these queries (and is the faster path).

    JAX: `jax.nn.dot_product_attention` wants values as deep as the keys, so
    d_k != d_v (`key_dim`) takes the explicit path; and on CPU it asks XLA
    for float32 logits from float16 operands (precision `F16_F16_F32`), which
    XLA's CPU dot rejects, so float16 attention there does too.

    PyTorch on a CPU: the fused kernel's backward pass in bfloat16 or float16
    is several times slower than in float32 (at `small`, 79 against 20 ms a
    training step), where the explicit products run at the half-precision
    speed of the rest; half-precision attention there takes the explicit
    path (docs/precision.md).
    """
    backend = keras.backend.backend()
    dtype = keras.backend.standardize_dtype(query.dtype)
    if backend == "torch":
        return query.device.type != "cpu" or dtype not in ("bfloat16", "float16")
    if backend != "jax":
        return True
    if key_depth != value_depth:
        return False
    if dtype != "float16":
        return True
    import jax

    return jax.default_backend() != "cpu"


def visible(attention_mask):
    """The boolean mask, where a query with no visible key sees every key instead.

    Such a query is padding; attending everywhere keeps its output and
    gradients finite, and the loss never sees it.
    """
    if attention_mask is None:
        return None
    mask = ops.cast(attention_mask, "bool")
    return ops.logical_or(mask, ops.logical_not(ops.any(mask, axis=-1, keepdims=True)))
