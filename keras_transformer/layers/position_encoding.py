"""Sinusoidal position encoding (paper §3.5)."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_transformer")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """The fixed sinusoids of paper §3.5, interleaved as the paper writes them.

        PE(pos, 2i)     = sin(pos / 10000^(2i / d_model))
        PE(pos, 2i + 1) = cos(pos / 10000^(2i / d_model))

    Sine on even dimensions and cosine on odd ones. The layer has no weights
    and no length limit: positions are computed, not looked up.

    **Masking**: returns the encoding of every position, padding included;
    padding positions are masked later, in attention.

    Args:
        max_wavelength: float. The base of the geometric progression of
            wavelengths, 10000 in the paper.

    Call arguments:
        inputs: `(B, T, D)` embeddings; only their shape and dtype are used.
        start_index: int or scalar tensor. Absolute position of `inputs[:, 0]`,
            for cached decoding one token at a time. Default 0.

    Returns:
        `(B, T, D)` position encodings in the dtype of `inputs`, to be added.

    Example:
        >>> embeddings = keras.ops.zeros((2, 5, 16))
        >>> tuple(SinusoidalPositionEncoding()(embeddings).shape)
        (2, 5, 16)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, §3.5.
    """

    def __init__(self, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength
        self.built = True

    def call(self, inputs, start_index=0):
        shape = ops.shape(inputs)
        length, hidden_dim = shape[-2], shape[-1]
        positions = ops.arange(length, dtype="float32") + ops.cast(start_index, "float32")
        # 2i / d_model for each pair of dimensions: (D/2,)
        exponents = ops.arange(0, hidden_dim, 2, dtype="float32") / hidden_dim
        inverse_wavelengths = ops.exp(-math.log(self.max_wavelength) * exponents)
        # (T, 1) * (1, D/2) -> (T, D/2)
        angles = positions[:, None] * inverse_wavelengths[None, :]
        # (T, D/2, 2) -> (T, D): sin at 2i, cos at 2i + 1
        encoding = ops.reshape(
            ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1), (length, hidden_dim)
        )
        return ops.broadcast_to(ops.cast(encoding, inputs.dtype), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}
