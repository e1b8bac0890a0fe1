"""Multi-head scaled dot-product attention with a key/value cache (paper §3.2)."""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_transformer")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention, paper §3.2.2, with a cache for decoding.

        MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O
        head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d_k)) V W_i^V

    The h heads are computed together: one `(D, D)` projection each for
    queries, keys and values, reshaped into `(h, d)` with d = D / h.

    Cached decoding takes two forms:

    - self-attention: `cache` is a fixed-size `(B, 2, T_max, h, d)` buffer of
      keys and values; the keys and values of the new positions are written
      into it at `cache_update_index`, and the updated buffer is returned.
    - cross-attention: `cache` holds the encoder's keys and values, computed
      once per sentence by `compute_cache()`, and `cache_update_index` is None.

    The attention maths is `_compute_attention()`, the one place to change
    it. Without attention dropout and without scores requested it calls
    `keras.ops.dot_product_attention`, each backend's fused kernel.

    **Masking**: `attention_mask` is boolean, True where a query may attend to
    a key, of shape `(B, Tq, Tk)` or broadcastable to it. A query whose every
    key is masked (a sentence of padding only) attends to all keys instead, so
    that its output and gradients stay finite; such positions are padding and
    masked out of the loss.

    Args:
        num_heads: int. h; must divide `hidden_dim`. Default 8.
        hidden_dim: int. d_model. Default 512.
        dropout: float. Dropout on the attention probabilities. Not in the
            paper, default 0.0.
        use_bias: bool. Biases in the four projections. Default True.
        kernel_initializer: initializer for the projections. Default
            "glorot_uniform".

    Call arguments:
        query: `(B, Tq, D)`.
        value: `(B, Tk, D)` keys and values come from (the same tensor as
            `query` for self-attention). Unused for cross-attention with a cache.
        attention_mask: bool, `(B, Tq, Tk)` or broadcastable. Optional.
        cache: optional `(B, 2, Tk, h, d)` keys and values, see above.
        cache_update_index: optional int scalar, where the new keys go.
        return_attention_scores: bool. Also return the `(B, h, Tq, Tk)`
            attention probabilities.
        training: bool. Enables attention dropout.

    Returns:
        `(B, Tq, D)`; with a cache, the tuple `(outputs, cache)`; with
        `return_attention_scores=True` the scores are appended to that.

    Example:
        >>> attention = MultiHeadAttention(num_heads=2, hidden_dim=8)
        >>> x = keras.ops.ones((1, 3, 8))
        >>> attention(x, x).shape
        (1, 3, 8)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, §3.2.
    """

    def __init__(
        self,
        num_heads=8,
        hidden_dim=512,
        dropout=0.0,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if num_heads <= 0 or hidden_dim % num_heads != 0:
            raise ValueError(
                "num_heads must be positive and divide hidden_dim. "
                f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.head_dim = hidden_dim // num_heads
        self.dropout = dropout
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, query_shape=None, value_shape=None):
        def projection(name):
            dense = keras.layers.Dense(
                self.hidden_dim,
                use_bias=self.use_bias,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name=name,
            )
            dense.build((None, None, self.hidden_dim))
            return dense

        self.query_dense = projection("query")
        self.key_dense = projection("key")
        self.value_dense = projection("value")
        self.output_dense = projection("attention_output")
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def _split_heads(self, x):
        # (B, T, D) -> (B, T, h, d)
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1], self.num_heads, self.head_dim))

    def compute_cache(self, value):
        """Keys and values of `value` for reuse: `(B, Tk, D)` -> `(B, 2, Tk, h, d)`."""
        key = self._split_heads(self.key_dense(value))
        value = self._split_heads(self.value_dense(value))
        return ops.stack([key, value], axis=1)

    def call(
        self,
        query,
        value,
        attention_mask=None,
        cache=None,
        cache_update_index=None,
        return_attention_scores=False,
        training=None,
    ):
        # (B, Tq, D) -> (B, Tq, h, d)
        query_heads = self._split_heads(self.query_dense(query))
        if cache is None:
            # (B, Tk, D) -> (B, Tk, h, d), twice
            key_heads = self._split_heads(self.key_dense(value))
            value_heads = self._split_heads(self.value_dense(value))
        elif cache_update_index is None:
            # Cross-attention: (B, 2, S, h, d) computed once by compute_cache().
            key_heads, value_heads = cache[:, 0], cache[:, 1]
        else:
            # Self-attention: write the new positions into (B, 2, T_max, h, d).
            new_keys_values = self.compute_cache(value)
            start = [0, 0, cache_update_index, 0, 0]
            cache = ops.slice_update(cache, start, ops.cast(new_keys_values, cache.dtype))
            key_heads, value_heads = cache[:, 0], cache[:, 1]

        attention_output, scores = self._compute_attention(
            query_heads, key_heads, value_heads, attention_mask, return_attention_scores, training
        )
        # (B, Tq, h, d) -> (B, Tq, D)
        shape = ops.shape(attention_output)
        attention_output = ops.reshape(attention_output, (shape[0], shape[1], self.hidden_dim))
        outputs = self.output_dense(attention_output)

        results = (outputs,)
        if cache is not None:
            results += (cache,)
        if return_attention_scores:
            results += (scores,)
        return results[0] if len(results) == 1 else results

    def _compute_attention(self, query, key, value, attention_mask, return_scores, training):
        """Scaled dot-product attention (§3.2.1) over `(B, T, h, d)` heads.

        Returns `(B, Tq, h, d)` outputs and `(B, h, Tq, Tk)` probabilities
        (None unless `return_scores`).
        """
        mask = None
        if attention_mask is not None:
            mask = ops.cast(attention_mask, "bool")
            # A row with no visible key attends everywhere: finite, and only at padding.
            mask = ops.logical_or(mask, ops.logical_not(ops.any(mask, axis=-1, keepdims=True)))
            # (B, Tq, Tk) -> (B, 1, Tq, Tk): the same mask for every head
            mask = ops.expand_dims(mask, axis=1)

        use_dropout = bool(training) and self.dropout > 0
        if not return_scores and not use_dropout:
            outputs = ops.dot_product_attention(query, key, value, mask=mask)
            return outputs, None

        # (B, Tq, h, d) x (B, Tk, h, d) -> (B, h, Tq, Tk)
        logits = ops.einsum("bqhd,bkhd->bhqk", query, key) / math.sqrt(self.head_dim)
        logits = ops.cast(logits, "float32")
        if mask is not None:
            logits = ops.where(mask, logits, ops.full_like(logits, -1e9))
        scores = ops.softmax(logits, axis=-1)
        probabilities = self.dropout_layer(ops.cast(scores, value.dtype), training=training)
        # (B, h, Tq, Tk) x (B, Tk, h, d) -> (B, Tq, h, d)
        outputs = ops.einsum("bhqk,bkhd->bqhd", probabilities, value)
        return outputs, scores

    def compute_output_shape(self, query_shape, value_shape=None, **kwargs):
        return query_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
