"""Multi-head scaled dot-product attention with a key/value cache (paper §3.2)."""

import math

import keras
from keras import ops

from keras_transformer.layers.initializers import clone_initializer


@keras.saving.register_keras_serializable(package="keras_transformer")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention, paper §3.2.2, with a cache for decoding.

        MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O
        head_i = softmax(Q W_i^Q (K W_i^K)^T / sqrt(d_k)) V W_i^V

    The h heads are computed together: one `(D, D)` projection each for
    queries, keys and values, reshaped into `(h, d)` with d = D / h.

    Cached decoding takes two forms. A cache is a pair `(keys, values)`,
    each `(B, h, T, d)`: heads first, the layout the attention products read,
    so a step reads the buffers as they are, with no transposed or sliced
    copy (under XLA the new position is also written in place; eager
    PyTorch's `slice_update` copies the buffer).

    - self-attention: the pair is a fixed-size `T_max` buffer; the keys and
      values of the new positions are written into it at
      `cache_update_index`, and the updated pair is returned. For beam
      search, the K beams of a sentence (queries b*K .. b*K + K - 1, one
      position each) may share one buffer of `T_max * K` slots: beam k's
      position t is slot `t * K + k`, and a `(B, K, 1, T_max * K)` mask
      tells each beam which slots hold its own history.
    - cross-attention: the pair holds the encoder's keys and values, computed
      once per sentence by `compute_cache()`, and `cache_update_index` is
      None. The queries may hold K rows per cached sentence (K beams,
      sentence b's at rows b*K .. b*K + K - 1): the K beams then read their
      sentence's keys and values, which are never copied per beam.

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
        hidden_dim: int. d_model. Default 512.
        dropout: float. Dropout on the attention probabilities. Not in the
            paper, default 0.0.
        use_bias: bool. Biases in the four projections. Default True.
        kernel_initializer: initializer for the projections, cloned for each
            so that they start independent. Default "glorot_uniform".

    Call arguments:
        query: `(N, Tq, D)`: N = B, or B*K with a cross-attention cache of B
            sentences.
        value: `(B, Tk, D)` keys and values come from (the same tensor as
            `query` for self-attention). Unused for cross-attention with a cache.
        attention_mask: bool `(B, Tq, Tk)`, see above, or `(B, K, Tq, Tk)`
            with K query rows per cached sentence. Optional. With a cache, B
            is the cache's batch, not the queries'.
        cache: optional `(keys, values)`, each `(B, h, Tk, d)`, see above.
        cache_update_index: optional int scalar, where the new keys go.
        return_attention_scores: bool. Also return the `(N, h, Tq, Tk)`
            attention probabilities.
        training: bool. Enables attention dropout.

    Returns:
        `(N, Tq, D)`; with a cache, the tuple `(outputs, cache)`; with
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
                kernel_initializer=clone_initializer(self.kernel_initializer),
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

    def _heads_first(self, x):
        # (B, T, D) -> (B, h, T, d)
        return ops.transpose(self._split_heads(x), (0, 2, 1, 3))

    def compute_cache(self, value):
        """Keys and values of `value` for reuse: `(B, Tk, D)` -> a pair of `(B, h, Tk, d)`."""
        return self._heads_first(self.key_dense(value)), self._heads_first(self.value_dense(value))

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
        mask = _visible(attention_mask)
        # (N, Tq, D) -> (N, Tq, h, d); N = K rows per sentence of a cross-attention cache
        query_heads = self._split_heads(self.query_dense(query))
        explicit = return_attention_scores or (training and self.dropout > 0)
        if cache is None and not explicit and _fused_kernel_supports(query_heads.dtype):
            # (B, T, D) -> (B, T, h, d), twice; the backend's fused kernel, whose
            # softmax is float32 for half-precision inputs on every backend
            attention_output = ops.dot_product_attention(
                query_heads,
                self._split_heads(self.key_dense(value)),
                self._split_heads(self.value_dense(value)),
                mask=None if mask is None else mask[:, None],
            )
            scores = None
        else:
            if cache is None:
                keys, values = self.compute_cache(value)
            elif cache_update_index is None:
                keys, values = cache
            else:
                # Self-attention: write the new positions into the buffers.
                keys, values = cache = tuple(
                    _write_cache(buffer, new, cache_update_index)
                    for buffer, new in zip(cache, self.compute_cache(value), strict=True)
                )
            attention_output, scores = self._attend(
                query_heads, keys, values, mask, return_attention_scores, training
            )
        # (N, Tq, h, d) -> (N, Tq, D)
        shape = ops.shape(attention_output)
        attention_output = ops.reshape(attention_output, (shape[0], shape[1], self.hidden_dim))
        outputs = self.output_dense(attention_output)

        results = (outputs,)
        if cache is not None:
            results += (cache,)
        if return_attention_scores:
            results += (scores,)
        return results[0] if len(results) == 1 else results

    def _attend(self, query, keys, values, mask, return_scores, training):
        """Scaled dot-product attention (§3.2.1), written out.

        Args:
            query: `(N, Tq, h, d)`, N = B*K: K rows per sentence of `keys`.
            keys, values: `(B, h, Tk, d)`.
            mask: bool `(B or 1, Tq, Tk)`, the same for the K rows of a
                sentence, or `(B, K, Tq, Tk)`, one per row; or None.

        Returns:
            `(N, Tq, h, d)` outputs and `(N, h, Tq, Tk)` probabilities (None
            unless `return_scores`).
        """
        batch, heads, key_length, depth = ops.shape(keys)
        query_shape = ops.shape(query)
        query_length = query_shape[1]
        # (N, Tq, h, d) -> (B, K, Tq, h, d) -> (B, h, K, Tq, d) -> (B, h, K*Tq, d):
        # one plain batched product per sentence and head, which XLA runs
        # several times faster than the same product with K and Tq apart.
        query = ops.reshape(query, (batch, -1, query_length, heads, depth))
        query = ops.reshape(ops.transpose(query, (0, 3, 1, 2, 4)), (batch, heads, -1, depth))
        # Scaled before the product, so half-precision logits stay in range.
        query = query / ops.cast(math.sqrt(self.head_dim), query.dtype)
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
        # (B, h, K*Tq, Tk) x (B, h, Tk, d) -> (B, h, K, Tq, d) -> (B, K, Tq, h, d) -> (N, Tq, h, d)
        dropped = ops.reshape(dropped, (batch, heads, -1, key_length))
        outputs = ops.einsum("bhqs,bhsd->bhqd", dropped, values)
        outputs = ops.reshape(outputs, (batch, heads, -1, query_length, depth))
        outputs = ops.reshape(ops.transpose(outputs, (0, 2, 3, 1, 4)), query_shape)
        scores = None
        if return_scores:
            # (B, h, K, Tq, Tk) -> (B, K, h, Tq, Tk) -> (N, h, Tq, Tk)
            scores = ops.transpose(probabilities, (0, 2, 1, 3, 4))
            scores = ops.reshape(scores, (-1, *ops.shape(scores)[2:]))
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


def _write_cache(buffer, new, index):
    """Writes `(N, h, Tq, d)` keys or values into a `(B, h, T, d)` buffer at `index`.

    With N = B, row b's positions go to `index .. index + Tq - 1`. With one
    position (Tq = 1) and N = B*K, the K beams of sentence b share its
    buffer, T = T_max * K slots, and beam k's position `index` goes to slot
    `index * K + k`: the K beams write one contiguous block.
    """
    if new.shape[2] == 1:
        # (B*K, h, 1, d) -> (B, K, h, d) -> (B, h, K, d)
        batch = ops.shape(buffer)[0]
        rows, heads, _, depth = ops.shape(new)
        beams = rows // batch
        new = ops.transpose(ops.reshape(new, (batch, beams, heads, depth)), (0, 2, 1, 3))
        index = index * beams
    return ops.slice_update(buffer, [0, 0, index, 0], ops.cast(new, buffer.dtype))


def _fused_kernel_supports(dtype):
    """JAX on CPU: `jax.nn.dot_product_attention` asks XLA for float32 logits
    from float16 operands (precision `F16_F16_F32`), which XLA's CPU dot
    rejects; float16 attention there takes the explicit path instead."""
    if keras.backend.backend() != "jax" or keras.backend.standardize_dtype(dtype) != "float16":
        return True
    import jax

    return jax.default_backend() != "cpu"


def _visible(attention_mask):
    """The boolean mask, where a query with no visible key sees every key instead.

    Such a query is padding; attending everywhere keeps its output and
    gradients finite, and the loss never sees it.
    """
    if attention_mask is None:
        return None
    mask = ops.cast(attention_mask, "bool")
    return ops.logical_or(mask, ops.logical_not(ops.any(mask, axis=-1, keepdims=True)))
