"""One encoder layer (paper §3.1)."""

import keras

from keras_transformer.layers.attention import MultiHeadAttention
from keras_transformer.layers.feedforward import PositionwiseFeedForward
from keras_transformer.layers.initializers import clone_initializer
from keras_transformer.layers.masks import key_padding_mask
from keras_transformer.layers.residual import residual_connection


def validate_layer_arguments(hidden_dim, intermediate_dim, num_heads, dropout, attention_dropout):
    """Shared by the encoder and decoder layers: errors that quote the values."""
    if hidden_dim <= 0 or intermediate_dim <= 0:
        raise ValueError(
            "hidden_dim and intermediate_dim must be positive. "
            f"Received: hidden_dim={hidden_dim}, intermediate_dim={intermediate_dim}"
        )
    if num_heads <= 0 or hidden_dim % num_heads:
        raise ValueError(
            "num_heads must divide hidden_dim. "
            f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
        )
    for name, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1). Received: {name}={value}")


class _TransformerLayer(keras.layers.Layer):
    """Arguments, validation, sublayer factories and config of both layer kinds."""

    def __init__(
        self,
        hidden_dim=512,
        intermediate_dim=2048,
        num_heads=8,
        dropout=0.1,
        attention_dropout=0.0,
        normalize_first=False,
        layer_norm_epsilon=1e-6,
        activation="relu",
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        validate_layer_arguments(
            hidden_dim, intermediate_dim, num_heads, dropout, attention_dropout
        )
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.normalize_first = normalize_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def _built(self, layer):
        layer.build((None, None, self.hidden_dim))
        return layer

    def _attention(self, name):
        return self._built(
            MultiHeadAttention(
                num_heads=self.num_heads,
                hidden_dim=self.hidden_dim,
                dropout=self.attention_dropout,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=name,
            )
        )

    def _layer_norm(self, name):
        return self._built(
            keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
            )
        )

    def _dropout(self, name):
        return keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=name)

    def _feedforward(self):
        return self._built(
            PositionwiseFeedForward(
                hidden_dim=self.hidden_dim,
                intermediate_dim=self.intermediate_dim,
                activation=self.activation,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy,
                name="feedforward",
            )
        )

    def _residual(self, inputs, sublayer, name, training):
        return residual_connection(
            inputs,
            sublayer,
            getattr(self, f"{name}_layer_norm"),
            getattr(self, f"{name}_dropout"),
            self.normalize_first,
            training,
        )

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "intermediate_dim": self.intermediate_dim,
            "num_heads": self.num_heads,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "normalize_first": self.normalize_first,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="keras_transformer")
class TransformerEncoderLayer(_TransformerLayer):
    """Self-attention then a feed-forward network, each in a residual block (§3.1).

        x = LayerNorm(x + Dropout(SelfAttention(x)))
        x = LayerNorm(x + Dropout(FeedForward(x)))

    With `normalize_first=True` each block is `x + Dropout(Sublayer(LayerNorm(x)))`
    (pre-LN, not the paper's); the stack then needs a final layer norm, which
    the model adds.

    **Masking**: `padding_mask` `(B, S)`, True at real tokens, hides padded
    keys from every query.

    Args:
        hidden_dim: int. d_model. Default 512.
        intermediate_dim: int. d_ff. Default 2048.
        num_heads: int. h. Default 8.
        dropout: float. P_drop on each sublayer output. Default 0.1.
        attention_dropout: float. On attention probabilities. Default 0.0.
        normalize_first: bool. Pre-LN instead of the paper's post-LN. Default False.
        layer_norm_epsilon: float. Default 1e-6.
        activation: feed-forward activation. Default "relu".
        kernel_initializer: initializer of every projection, cloned for each.
            Default "glorot_uniform".

    Call arguments:
        inputs: `(B, S, D)`.
        padding_mask: optional bool `(B, S)`.
        return_attention_scores: bool. Also return `(B, h, S, S)` probabilities.
        training: bool.

    Returns:
        `(B, S, D)`, or `(outputs, scores)`.

    Example:
        >>> layer = TransformerEncoderLayer(hidden_dim=8, intermediate_dim=16, num_heads=2)
        >>> layer(keras.ops.ones((2, 5, 8))).shape
        (2, 5, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, §3.1, §5.4.
    """

    def build(self, input_shape=None):
        self.self_attention = self._attention("self_attention")
        self.self_attention_layer_norm = self._layer_norm("self_attention_layer_norm")
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.feedforward = self._feedforward()
        self.feedforward_layer_norm = self._layer_norm("feedforward_layer_norm")
        self.feedforward_dropout = self._dropout("feedforward_dropout")
        self.built = True

    def call(self, inputs, padding_mask=None, return_attention_scores=False, training=None):
        mask = None if padding_mask is None else key_padding_mask(padding_mask)
        x, scores = self._residual(
            inputs,
            lambda x: self.self_attention(
                x,
                x,
                attention_mask=mask,
                return_attention_scores=return_attention_scores,
                training=training,
            ),
            "self_attention",
            training,
        )
        x, _ = self._residual(x, self.feedforward, "feedforward", training)
        if return_attention_scores:
            return x, scores[0]
        return x
