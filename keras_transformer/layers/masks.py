"""Attention masks (paper §3.2.3).

Every mask here is boolean and True where attention is allowed, the
convention of `keras.ops.dot_product_attention`.
"""

from keras import ops

from keras_transformer.tokenization import PAD_ID


def padding_mask(token_ids, pad_id=PAD_ID):
    """True at real tokens: `(B, L)` int ids -> `(B, L)` bool."""
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


def beam_history_mask(beam_slots, batch_size):
    """Which slots of a self-attention buffer shared by K beams hold each beam's history.

    The K beams of sentence b share one buffer of `T_max * K` slots, beam k's
    position t at slot `t * K + k`. `beam_slots[b*K + k, t]` is the beam
    whose slot holds position t of beam k's hypothesis (its ancestor's,
    after beam search reorders the beams), or -1 for a position not written.

    Args:
        beam_slots: int32 `(B*K, T_max)`.
        batch_size: B.

    Returns:
        `(B, K, 1, T_max * K)` bool, True at the slots of the beam's own prefix.
    """
    rows, max_length = ops.shape(beam_slots)
    beams = rows // batch_size
    # (B*K, T_max, 1) == (1, 1, K) -> (B*K, T_max, K), flattened as the slots are
    visible = ops.equal(beam_slots[:, :, None], ops.arange(beams, dtype="int32")[None, None, :])
    return ops.reshape(visible, (batch_size, beams, 1, max_length * beams))
