"""Position-wise feed-forward network (paper §3.3)."""

import keras

from keras_transformer.checks import check_positive
from keras_transformer.layers.initializers import clone_initializer


@keras.saving.register_keras_serializable(package="keras_transformer")
class PositionwiseFeedForward(keras.layers.Layer):
    """FFN(x) = max(0, x W1 + b1) W2 + b2, the same at every position (§3.3).

    **Masking**: acts on each position alone; nothing to mask.

    Args:
        hidden_dim: int. D (d_model), input and output width. Default 512.
        intermediate_dim: int. F (d_ff), the inner width. Default 2048.
        activation: activation of the inner layer. Default "relu".
        kernel_initializer: initializer, cloned for each of the two
            projections. Default "glorot_uniform".

    Call arguments:
        inputs: `(B, T, D)`.

    Returns:
        `(B, T, D)`.

    Example:
        >>> layer = PositionwiseFeedForward(hidden_dim=8, intermediate_dim=32)
        >>> tuple(layer(keras.ops.ones((2, 3, 8))).shape)
        (2, 3, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, §3.3.
    """

    def __init__(
        self,
        hidden_dim=512,
        intermediate_dim=2048,
        activation="relu",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive(hidden_dim=hidden_dim, intermediate_dim=intermediate_dim)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape=None):
        self.intermediate_dense = keras.layers.Dense(
            self.intermediate_dim,
            activation=self.activation,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="feedforward_intermediate_dense",
        )
        self.intermediate_dense.build((None, None, self.hidden_dim))
        self.output_dense = keras.layers.Dense(
            self.hidden_dim,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="feedforward_output_dense",
        )
        self.output_dense.build((None, None, self.intermediate_dim))
        self.built = True

    def call(self, inputs):
        # (B, T, D) -> (B, T, F) -> (B, T, D)
        return self.output_dense(self.intermediate_dense(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
