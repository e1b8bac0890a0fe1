"""Position encodings (paper §3.5): the fixed sinusoids, or learned embeddings (Table 3, row E).

Both layers take the `(B, T, D)` embeddings and the absolute position of
their first row, `start_index`, and return the `(B, T, D)` encodings to add,
so cached decoding reads position `index` from either alike.
"""

import math

import keras
from keras import ops

from keras_transformer.checks import check_choice, check_positive
from keras_transformer.config import POSITION_ENCODINGS


def make_position_encoding(position_encoding, max_length, hidden_dim, dtype, name):
    """A new `position_encoding` layer ("sinusoidal" or "learned"), or a ValueError naming it."""
    check_choice(POSITION_ENCODINGS, position_encoding=position_encoding)
    if position_encoding == "learned":
        return LearnedPositionEmbedding(max_length, hidden_dim, dtype=dtype, name=name)
    return SinusoidalPositionEncoding(dtype=dtype, name=name)


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


@keras.saving.register_keras_serializable(package="keras_transformer")
class LearnedPositionEmbedding(keras.layers.Layer):
    """One trained vector per position, in place of the sinusoids (paper §3.5, Table 3 row E).

    "We also experimented with using learned positional embeddings instead,
    and found that the two versions produced nearly identical results" (§3.5).
    A `keras.layers.Embedding` over positions: a `(max_length, D)` table,
    position p reads its row p. Unlike the sinusoids it has a length limit:
    positions from `max_length` on have no row (an error where the shapes are
    known when called; the decoding search never reaches them, its length
    limit being `max_length`).

    **Masking**: as `SinusoidalPositionEncoding`, every position is encoded,
    padding included; attention masks padding later.

    Args:
        max_length: int. Positions 0 .. max_length - 1 have a vector.
        hidden_dim: int. D (d_model).
        embeddings_initializer: initializer. Default N(0, d_model^-0.5); the
            paper does not say.

    Call arguments:
        inputs: `(B, T, D)` embeddings; only their shape and dtype are used.
        start_index: int or scalar tensor. Absolute position of `inputs[:, 0]`.
            Default 0.

    Returns:
        `(B, T, D)` position embeddings in the dtype of `inputs`, to be added.

    Example:
        >>> positions = LearnedPositionEmbedding(max_length=8, hidden_dim=16)
        >>> tuple(positions(keras.ops.zeros((2, 5, 16))).shape)
        (2, 5, 16)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, §3.5, Table 3 (E).
    """

    def __init__(self, max_length, hidden_dim, embeddings_initializer=None, **kwargs):
        super().__init__(**kwargs)
        check_positive(max_length=max_length, hidden_dim=hidden_dim)
        self.max_length = max_length
        self.hidden_dim = hidden_dim
        if embeddings_initializer is None:
            embeddings_initializer = keras.initializers.RandomNormal(stddev=hidden_dim**-0.5)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embedding = keras.layers.Embedding(
            self.max_length,
            self.hidden_dim,
            embeddings_initializer=self.embeddings_initializer,
            dtype=self.dtype_policy,
            name="embedding",
        )
        self.embedding.build((None,))
        self.built = True

    def call(self, inputs, start_index=0):
        shape = ops.shape(inputs)
        length = shape[-2]
        if isinstance(length, int) and isinstance(start_index, int):
            if start_index + length > self.max_length:
                raise ValueError(
                    f"{self.name} has max_length={self.max_length} positions. "
                    f"Received: positions {start_index} .. {start_index + length - 1}"
                )
        positions = ops.arange(length, dtype="int32") + ops.cast(start_index, "int32")
        # (T,) -> (T, D)
        encoding = self.embedding(positions)
        return ops.broadcast_to(ops.cast(encoding, inputs.dtype), shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "max_length": self.max_length,
            "hidden_dim": self.hidden_dim,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }
