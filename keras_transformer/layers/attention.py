"""Multi-head scaled dot-product attention with a key/value cache (paper §3.2)."""

import math

import keras
from keras import ops

from keras_transformer.checks import check_fraction, check_heads, check_key_dim
from keras_transformer.layers.attention_masks import fused_kernel_supports, rows_first, visible
from keras_transformer.layers.cache import write_positions
from keras_transformer.layers.initializers import clone_initializer


@keras.saving.register_keras_serializable(package="keras_transformer")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention, paper §3.2.2, with a cache for decoding.

        MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O
        head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d_k)) V W_i^V

    The h heads are computed together: one `(D, D)` projection each for
    queries, keys and values, split into heads first, `(B, h, T, d)` with
    d = D / h: the layout of the cache and of the attention products, so a
    decoding step reads the cache as it is, with no transposed copy (under
    XLA the new position is also written in place; eager PyTorch's
    `slice_update` copies the buffer). `call` projects, updates the cache,
    calls `_attend` (the attention maths, which subclasses may replace) and
    merges the heads. `key_dim` sets d_k, the depth of queries and keys
    (Table 3, row B): their projections are then `(D, h * d_k)` and their
    heads `(B, h, T, d_k)`, while values keep d_v = d.

    Cached decoding takes two forms; a cache is a pair `(keys, values)`,
    `(B, h, Tk, d_k)` and `(B, h, Tk, d)`.

    - self-attention: the pair is a fixed-size `T_max` buffer; the keys and
      values of the new positions are written into it at
      `cache_update_index`, and the updated pair is returned. For beam
      search the K beams of a sentence (query rows b*K .. b*K + K - 1, one
      position each) may share one buffer of `T_max * K` slots, with a
      `(B, K, 1, T_max * K)` mask that tells each beam which slots hold its
      own history (see `cache.py`).
    - cross-attention: the pair holds the encoder's keys and values, computed
      once per sentence by `compute_cache()`, and `cache_update_index` is
      None. The queries may hold K rows per cached sentence (K beams): the K
      beams then read their sentence's keys and values, which are never
      copied per beam.

    **Masking**: `attention_mask` is boolean, True where a query may attend to
    a key, of shape `(B, Tq, Tk)`, where B, Tq or Tk may be 1 to broadcast
    (`causal_mask` gives `(1, Tq, Tk)`). A query whose every
    key is masked (a sentence of padding only) attends to all keys instead, so
    that its output and gradients stay finite; such positions are padding and
    masked out of the loss.

    **Precision**: under a mixed policy the projections and both products run
    in the compute dtype (bfloat16 or float16), the softmax in float32. The
    explicit path casts the logits to float32 itself; the fused kernel does
    so inside (Keras casts on TensorFlow and JAX; PyTorch's
    `scaled_dot_product_attention` accumulates half precision in float32).
    The attention probabilities returned are float32.

    Args:
        num_heads: int. h; must divide `hidden_dim`. Default 8.
        hidden_dim: int. D (d_model). Default 512.
        dropout: float. Dropout on the attention probabilities. Not in the
            paper, default 0.0.
        use_bias: bool. Biases in the four projections. Default True.
        kernel_initializer: initializer for the projections, cloned for each
            so that they start independent. Default "glorot_uniform".
        key_dim: int. d_k, the size of each head's queries and keys, which
            sets the scale 1 / sqrt(d_k) (Table 3, row B); values keep
            d = D / h. Default None: d.

    Call arguments:
        query: `(B*K, Tq, D)`; K = 1 unless a cross-attention cache of B
            sentences is read by K rows each.
        value: `(B, Tk, D)` keys and values come from (the same tensor as
            `query` for self-attention). Unused for cross-attention with a cache.
        attention_mask: bool `(B, Tq, Tk)`, see above, or `(B, K, Tq, Tk)`
            with K query rows per cached sentence. Optional.
        cache: optional `(keys, values)`, `(B, h, Tk, d_k)` and `(B, h, Tk, d)`,
            see above.
        cache_update_index: optional int scalar, where the new keys go.
        return_attention_scores: bool. Also return the `(B*K, h, Tq, Tk)`
            attention probabilities.
        training: bool. Enables attention dropout.

    Returns:
        `(B*K, Tq, D)`; with a cache, the tuple `(outputs, cache)`; with
        `return_attention_scores=True` the scores are appended to that.

    Example:
        >>> attention = MultiHeadAttention(num_heads=2, hidden_dim=8)
        >>> x = keras.ops.ones((1, 3, 8))
        >>> tuple(attention(x, x).shape)
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
        key_dim=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_heads(hidden_dim, num_heads)
        check_fraction(dropout=dropout)
        check_key_dim(key_dim)
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.key_dim = key_dim
        self.head_dim = hidden_dim // num_heads
        # d_k, the depth of each head's queries and keys.
        self.key_head_dim = self.head_dim if key_dim is None else key_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, query_shape=None, value_shape=None):
        def projection(name, units=self.hidden_dim):
            dense = keras.layers.Dense(
                units,
                use_bias=self.use_bias,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=name,
            )
            dense.build((None, None, self.hidden_dim))
            return dense

        # (B, T, D) -> (B, T, h * d_k), which is (B, T, D) unless key_dim is set
        self.query_dense = projection("query", self.num_heads * self.key_head_dim)
        self.key_dense = projection("key", self.num_heads * self.key_head_dim)
        self.value_dense = projection("value")
        self.output_dense = projection("attention_output")
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def _split_heads(self, x, depth):
        # (B, T, h * depth) -> (B, T, h, depth) -> (B, h, T, depth)
        shape = ops.shape(x)
        x = ops.reshape(x, (shape[0], shape[1], self.num_heads, depth))
        return ops.transpose(x, (0, 2, 1, 3))

    def _merge_heads(self, x):
        # (B, h, T, d) -> (B, T, h, d) -> (B, T, D)
        x = ops.transpose(x, (0, 2, 1, 3))
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1], self.hidden_dim))

    def compute_cache(self, value):
        """Keys and values of `value` for reuse.

        `(B, Tk, D)` -> keys `(B, h, Tk, d_k)` and values `(B, h, Tk, d)`;
        d_k is `key_dim`, or d = D / h when that is None.
        """
        keys = self._split_heads(self.key_dense(value), self.key_head_dim)
        return keys, self._split_heads(self.value_dense(value), self.head_dim)

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
        # (B*K, Tq, D) -> (B*K, h, Tq, d_k)
        query_heads = self._split_heads(self.query_dense(query), self.key_head_dim)
        if cache is None:
            keys, values = self.compute_cache(value)
        elif cache_update_index is None:
            keys, values = cache
        else:
            # Self-attention: the new positions written into the buffers.
            keys, values = cache = tuple(
                write_positions(buffer, new, cache_update_index)
                for buffer, new in zip(cache, self.compute_cache(value), strict=True)
            )
        attention_output, scores = self._attend(
            query_heads,
            keys,
            values,
            visible(attention_mask),
            shared_keys=cache is not None,
            return_scores=return_attention_scores,
            training=training,
        )
        outputs = self.output_dense(self._merge_heads(attention_output))

        results = (outputs,)
        if cache is not None:
            results += (cache,)
        if return_attention_scores:
            results += (scores,)
        return results[0] if len(results) == 1 else results

    def _attend(self, query, keys, values, mask, shared_keys, return_scores, training):
        """Scaled dot-product attention (§3.2.1): the extension point for its maths.

        Takes the backend's fused kernel where it can, and otherwise the
        products written out, which return the probabilities, drop some of
        them in training, and let K query rows read one sentence's keys.

        Args:
            query: `(B*K, h, Tq, d_k)`, K rows per sentence of `keys`.
            keys: `(B, h, Tk, d_k)`.
            values: `(B, h, Tk, d)`.
            mask: bool `(B or 1, Tq, Tk)`, the same for the K rows of a
                sentence, or `(B, K, Tq, Tk)`, one per row; or None.
            shared_keys: bool. Keys and values come from a cache, which K
                query rows may share; the fused kernel wants one row each.
            return_scores: bool. Also return the probabilities.
            training: bool. Enables attention dropout.

        Returns:
            `(B*K, h, Tq, d)` outputs and float32 `(B*K, h, Tq, Tk)`
            probabilities (None unless `return_scores`).
        """
        dropping = training and self.dropout > 0
        fused = fused_kernel_supports(query, self.key_head_dim, self.head_dim)
        if not (shared_keys or return_scores or dropping) and fused:
            # (B, h, T, d) -> (B, T, h, d), the kernel's layout, and back; its
            # softmax is float32 for half-precision inputs on every backend,
            # and its scale 1 / sqrt(d_k), d_k read from the queries.
            outputs = ops.dot_product_attention(
                *(ops.transpose(x, (0, 2, 1, 3)) for x in (query, keys, values)),
                mask=None if mask is None else mask[:, None],
            )
            return ops.transpose(outputs, (0, 2, 1, 3)), None
        batch, heads, key_length, key_depth = ops.shape(keys)
        query_length = ops.shape(query)[2]
        # (B*K, h, Tq, d_k) -> (B, K, h, Tq, d_k) -> (B, h, K, Tq, d_k) -> (B, h, K*Tq, d_k):
        # one plain batched product per sentence and head, which XLA runs
        # several times faster than the same product with K and Tq apart.
        query = ops.reshape(query, (batch, -1, heads, query_length, key_depth))
        query = ops.reshape(ops.transpose(query, (0, 2, 1, 3, 4)), (batch, heads, -1, key_depth))
        # Scaled before the product, so half-precision logits stay in range.
        query = query / ops.cast(math.sqrt(self.key_head_dim), query.dtype)
        logits = ops.cast(ops.einsum("bhqd,bhsd->bhqs", query, keys), "float32")
        # (B, h, K*Tq, Tk) -> (B, h, K, Tq, Tk)
        logits = ops.reshape(logits, (batch, heads, -1, query_length, key_length))
        if mask is not None:
            # (B, Tq, Tk) -> (B, 1, 1, Tq, Tk), the same for every head and beam;
            # (B, K, Tq, Tk) -> (B, 1, K, Tq, Tk), the same for every head
            mask = mask[:, None, None] if len(mask.shape) == 3 else mask[:, None]
            # Added, not selected: on XLA (CPU) the addition fuses with the product
            # and costs nothing; a select cost about as much as the product.
            logits = logits + ops.cast(ops.logical_not(mask), "float32") * -1e9
        probabilities = ops.softmax(logits, axis=-1)
        dropped = self.dropout_layer(ops.cast(probabilities, values.dtype), training=training)
        # (B, h, K*Tq, Tk) x (B, h, Tk, d) -> (B, h, K*Tq, d) -> (B, h, K, Tq, d)
        dropped = ops.reshape(dropped, (batch, heads, -1, key_length))
        outputs = ops.einsum("bhqs,bhsd->bhqd", dropped, values)
        outputs = ops.reshape(outputs, (batch, heads, -1, query_length, self.head_dim))
        scores = rows_first(probabilities) if return_scores else None
        return rows_first(outputs), scores

    def compute_output_shape(self, query_shape, value_shape=None, **kwargs):
        return query_shape

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "hidden_dim": self.hidden_dim,
            "key_dim": self.key_dim,
            "dropout": self.dropout,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
