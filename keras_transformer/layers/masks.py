"""Attention masks (paper §3.2.3).

Every mask here is boolean and True where attention is allowed, the
convention of `keras.ops.dot_product_attention`.
"""

from keras import ops

from keras_transformer.tokenization import PAD_ID


def padding_mask(token_ids, pad_id=PAD_ID):
    """True at real tokens: `(B, T)` int ids -> `(B, T)` bool (or `(B, S)`)."""
    return ops.not_equal(token_ids, pad_id)


def causal_mask(query_length, key_length, start_index=0):
    """True where key position <= query position, so no position sees the future.

    Query `i` sits at absolute position `start_index + i`; keys start at 0.

    Returns:
        `(1, query_length, key_length)` bool.
    """
    query_positions = ops.arange(query_length, dtype="int32") + ops.cast(start_index, "int32")
    key_positions = ops.arange(key_length, dtype="int32")
    # (Tq, 1) >= (1, Tk) -> (Tq, Tk)
    mask = ops.greater_equal(query_positions[:, None], key_positions[None, :])
    return mask[None, :, :]


def key_padding_mask(padding):
    """`(B, Tk)` -> `(B, 1, Tk)`: every query may see the real keys only."""
    return padding[:, None, :]


def decoder_self_attention_mask(decoder_padding):
    """Causal and padding mask for teacher-forced decoding: `(B, T)` -> `(B, T, T)`."""
    length = ops.shape(decoder_padding)[1]
    return ops.logical_and(causal_mask(length, length), key_padding_mask(decoder_padding))
