"""One decoder layer (paper §3.1), with caches for step-by-step decoding."""

import keras
from keras import ops

from keras_transformer.layers.masks import (
    causal_mask,
    decoder_self_attention_mask,
    key_padding_mask,
)
from keras_transformer.layers.transformer_layer import TransformerLayer


@keras.saving.register_keras_serializable(package="keras_transformer")
class TransformerDecoderLayer(TransformerLayer):
    """Masked self-attention, cross-attention over the encoder, then a feed-forward network.

        y = LayerNorm(y + Dropout(MaskedSelfAttention(y)))
        y = LayerNorm(y + Dropout(CrossAttention(y, encoder_output)))
        y = LayerNorm(y + Dropout(FeedForward(y)))

    `normalize_first=True` gives pre-LN blocks and `normalization` batch
    norms, as in `TransformerEncoderLayer`.

    Decoding one token at a time passes two caches (see `MultiHeadAttention`):
    the self-attention keys/values, a pair of `(B, h, T_max, d)` buffers
    (the keys' `d_k` deep when `key_dim` is set; likewise below)
    updated at `self_attention_cache_update_index` and returned, and the
    cross-attention keys/values of the encoder output, a pair of
    `(B, h, S, d)` computed once by `compute_cross_attention_cache()`. The
    decoder sequence may hold K rows per sentence (K beams, adjacent), B*K
    rows in all, which share their sentence's cross-attention cache; they
    may also share self-attention buffers of `(B, h, T_max * K, d)`, given
    with the `self_attention_mask` that says which slots hold each beam's
    history.

    **Masking**: self-attention is causal (§3.2.3): position i sees positions
    <= i. Without a cache, `decoder_padding_mask` `(B, T)` also hides padded
    target keys; with a cache, keys past the current step are hidden.
    `encoder_padding_mask` `(B, S)` hides padded source keys from
    cross-attention. `_compute_self_attention_mask` makes the choice.
    `decoder_padding_mask` also keeps padding out of a masked batch norm's
    statistics (in training; decoding with a cache is inference).

    Args:
        hidden_dim, intermediate_dim, num_heads, dropout, attention_dropout,
        normalize_first, layer_norm_epsilon, normalization, activation,
        kernel_initializer, key_dim:
            as in `TransformerEncoderLayer`.

    Call arguments:
        decoder_sequence: `(B*K, T, D)`; K = 1 without beams.
        encoder_sequence: `(B, S, D)` encoder output. Unused with a
            cross-attention cache.
        decoder_padding_mask: optional bool `(B, T)`.
        encoder_padding_mask: optional bool `(B, S)`.
        self_attention_cache: optional pair of `(B*K, h, T_max, d)`, or of
            `(B, h, T_max * K, d)` shared by the K beams.
        self_attention_cache_update_index: int scalar, the position of
            `decoder_sequence[:, 0]`; required with `self_attention_cache`.
        cross_attention_cache: optional pair of `(B, h, S, d)`.
        self_attention_mask: optional bool mask replacing the causal one,
            for self-attention buffers that K beams share (`(B, K, 1,
            T_max * K)`, see `cache.py`).
        return_attention_scores: bool. Also return a dict of `(B*K, h, T, .)`
            probabilities, keys "self_attention" and "cross_attention".
        training: bool.

    Returns:
        `(B*K, T, D)`; with a self-attention cache `(outputs, cache)`; the
        scores dict is appended when requested.

    Example:
        >>> layer = TransformerDecoderLayer(hidden_dim=8, intermediate_dim=16, num_heads=2)
        >>> tuple(layer(keras.ops.ones((2, 4, 8)), keras.ops.ones((2, 5, 8))).shape)
        (2, 4, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, §3.1, §3.2.3, §5.4.
    """

    def build(self, decoder_sequence_shape=None, encoder_sequence_shape=None):
        self.self_attention = self._attention("self_attention")
        self._add_norm("self_attention")
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.cross_attention = self._attention("cross_attention")
        self._add_norm("cross_attention")
        self.cross_attention_dropout = self._dropout("cross_attention_dropout")
        self.feedforward = self._feedforward()
        self._add_norm("feedforward")
        self.feedforward_dropout = self._dropout("feedforward_dropout")
        self.built = True

    def compute_cross_attention_cache(self, encoder_sequence):
        """`(B, S, D)` encoder output -> keys and values, a pair of `(B, h, S, d)`."""
        return self.cross_attention.compute_cache(encoder_sequence)

    def _compute_self_attention_mask(
        self, decoder_sequence, decoder_padding_mask, cache, cache_update_index, given_mask
    ):
        """The self-attention mask: the one given (beams sharing buffers), else causal
        over the cache's `T_max` positions, else causal and padding, else causal."""
        if cache is not None and cache_update_index is None:
            raise ValueError(
                "self_attention_cache_update_index is required with self_attention_cache"
            )
        if given_mask is not None:
            return given_mask
        length = ops.shape(decoder_sequence)[1]
        if cache is not None:
            return causal_mask(length, ops.shape(cache[0])[2], cache_update_index)
        if decoder_padding_mask is not None:
            return decoder_self_attention_mask(decoder_padding_mask)
        return causal_mask(length, length)

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        self_attention_cache=None,
        self_attention_cache_update_index=None,
        cross_attention_cache=None,
        self_attention_mask=None,
        return_attention_scores=False,
        training=None,
    ):
        self_mask = self._compute_self_attention_mask(
            decoder_sequence,
            decoder_padding_mask,
            self_attention_cache,
            self_attention_cache_update_index,
            self_attention_mask,
        )
        cross_mask = None
        if encoder_padding_mask is not None:
            cross_mask = key_padding_mask(encoder_padding_mask)

        y, self_extras = self._residual(
            decoder_sequence,
            lambda y: self.self_attention(
                y,
                y,
                attention_mask=self_mask,
                cache=self_attention_cache,
                cache_update_index=self_attention_cache_update_index,
                return_attention_scores=return_attention_scores,
                training=training,
            ),
            "self_attention",
            training,
            decoder_padding_mask,
        )
        y, cross_extras = self._residual(
            y,
            lambda y: self.cross_attention(
                y,
                encoder_sequence,
                attention_mask=cross_mask,
                cache=cross_attention_cache,
                return_attention_scores=return_attention_scores,
                training=training,
            ),
            "cross_attention",
            training,
            decoder_padding_mask,
        )
        y, _ = self._residual(y, self.feedforward, "feedforward", training, decoder_padding_mask)

        results = (y,)
        if self_attention_cache is not None:
            results += (self_extras[0],)
        if return_attention_scores:
            results += ({"self_attention": self_extras[-1], "cross_attention": cross_extras[-1]},)
        return results[0] if len(results) == 1 else results
