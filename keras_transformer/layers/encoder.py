"""One encoder layer (paper §3.1)."""

import keras

from keras_transformer.layers.masks import key_padding_mask
from keras_transformer.layers.transformer_layer import TransformerLayer


@keras.saving.register_keras_serializable(package="keras_transformer")
class TransformerEncoderLayer(TransformerLayer):
    """Self-attention then a feed-forward network, each in a residual block (§3.1).

        x = LayerNorm(x + Dropout(SelfAttention(x)))
        x = LayerNorm(x + Dropout(FeedForward(x)))

    With `normalize_first=True` each block is `x + Dropout(Sublayer(LayerNorm(x)))`
    (pre-LN, not the paper's); the stack then needs a final layer norm, which
    the model adds. `normalization="batch"` or `"masked_batch"` puts a batch
    norm where each layer norm sits (see `normalization.py`).

    **Masking**: `padding_mask` `(B, S)`, True at real tokens, hides padded
    keys from every query, and padding from a masked batch norm's statistics.

    Args:
        hidden_dim: int. D (d_model). Default 512.
        intermediate_dim: int. F (d_ff). Default 2048.
        num_heads: int. h. Default 8.
        dropout: float. P_drop on each sublayer output. Default 0.1.
        attention_dropout: float. On attention probabilities. Default 0.0.
        normalize_first: bool. Pre-LN instead of the paper's post-LN. Default False.
        layer_norm_epsilon: float. The norms' epsilon, whichever kind. Default 1e-6.
        normalization: str. "layer" (the paper's), "batch" or "masked_batch".
            Default "layer".
        activation: feed-forward activation. Default "relu".
        kernel_initializer: initializer of every projection, cloned for each.
            Default "glorot_uniform".
        key_dim: int. d_k, the size of each attention head's queries and
            keys (Table 3, row B); values keep d = D / h. Default None: d.

    Call arguments:
        inputs: `(B, S, D)`.
        padding_mask: optional bool `(B, S)`.
        return_attention_scores: bool. Also return `(B, h, S, S)` probabilities.
        training: bool.

    Returns:
        `(B, S, D)`, or `(outputs, scores)`.

    Example:
        >>> layer = TransformerEncoderLayer(hidden_dim=8, intermediate_dim=16, num_heads=2)
        >>> tuple(layer(keras.ops.ones((2, 5, 8))).shape)
        (2, 5, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, §3.1, §5.4.
    """

    def build(self, input_shape=None):
        self.self_attention = self._attention("self_attention")
        self._add_norm("self_attention")
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.feedforward = self._feedforward()
        self._add_norm("feedforward")
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
            padding_mask,
        )
        x, _ = self._residual(x, self.feedforward, "feedforward", training, padding_mask)
        if return_attention_scores:
            return x, scores[0]
        return x
