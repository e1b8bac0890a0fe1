"""The decoder stack's key/value cache for decoding one token at a time.

The cache is a dict: "self_attention", a list of one `(keys, values)` pair of
buffers per decoder layer; "cross_attention", a list of one pair of the
encoder output's keys and values per layer, computed once per sentence;
"encoder_padding_mask" `(B, S)`; and, when K beams share buffers,
"beam_slots".

The K beams of sentence b (rows b*K .. b*K + K - 1) share their sentence's
cross-attention keys and values, and its self-attention buffers too: those
have `T_max * K` slots, beam k's position t at slot `t * K + k`, so the K
beams of a step fill one contiguous block. The int32 table "beam_slots"
`(B*K, T_max)` says which beam's slot holds position t of each beam's
hypothesis; beam search reorders that table after each step instead of the
buffers, and the self-attention mask follows it. This module is the only one
that knows the slot layout.
"""

from keras import ops, tree


def initialize_cache(decoder_layers, encoder_output, encoder_padding_mask, max_length, beam_size):
    """The cache for `max_length` (T_max) target positions and K beams per sentence.

    Returns:
        The dict above: L pairs of zero `(B, h, T_max * K, d)` buffers (the
        keys' `d_k` deep, the attention's `key_head_dim`), L pairs of
        `(B, h, S, d)` encoder keys and values (keys `d_k`), the `(B, S)` mask,
        and with K > 1 "beam_slots", `(B*K, T_max)`, -1 where nothing is
        written yet.
    """
    batch_size = ops.shape(encoder_output)[0]
    cache = {"self_attention": [], "cross_attention": []}
    for layer in decoder_layers:
        attention = layer.self_attention
        cache["self_attention"].append(
            tuple(
                ops.zeros(
                    (batch_size, attention.num_heads, max_length * beam_size, depth),
                    dtype=encoder_output.dtype,
                )
                for depth in (attention.key_head_dim, attention.head_dim)
            )
        )
        cache["cross_attention"].append(layer.compute_cross_attention_cache(encoder_output))
    cache["encoder_padding_mask"] = encoder_padding_mask
    if beam_size > 1:
        cache["beam_slots"] = ops.full((batch_size * beam_size, max_length), -1, "int32")
    return cache


def reorder_cache(cache, rows):
    """The cache with beam row `rows[i]`'s state at row i (beam search's `reorder_cache`).

    With beams sharing their sentence's buffers only the `(B*K, T_max)`
    "beam_slots" table moves; otherwise the self-attention buffers, one row
    per beam, do. The per-sentence cross-attention keys and values never move.
    """
    if "beam_slots" in cache:
        return {**cache, "beam_slots": ops.take(cache["beam_slots"], rows, axis=0)}
    buffers = tree.map_structure(lambda x: ops.take(x, rows, axis=0), cache["self_attention"])
    return {**cache, "self_attention": buffers}


def begin_step(cache, index):
    """Where the step at `index` writes, and what it may see.

    Returns:
        `(cache, self_attention_mask)`. With beams sharing buffers, the
        table records that each beam writes position `index` in its own slot,
        and the mask is `beam_history_mask` of it; otherwise the cache is
        unchanged and the mask None (the decoder's causal mask over the
        buffers serves).
    """
    if "beam_slots" not in cache:
        return cache, None
    beam_slots = cache["beam_slots"]
    batch_size = ops.shape(cache["encoder_padding_mask"])[0]
    rows = ops.shape(beam_slots)[0]
    # (B*K,): beam k of each sentence writes slot index * K + k
    own = ops.arange(rows, dtype="int32") % (rows // batch_size)
    beam_slots = ops.slice_update(beam_slots, (0, index), own[:, None])
    return {**cache, "beam_slots": beam_slots}, beam_history_mask(beam_slots, batch_size)


def beam_history_mask(beam_slots, batch_size):
    """Which slots of a buffer shared by K beams hold each beam's history.

    `beam_slots[b*K + k, t]` is the beam whose slot holds position t of beam
    k's hypothesis (its ancestor's, after beam search reorders the beams), or
    -1 for a position not written.

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


def write_positions(buffer, new, index):
    """Writes `(B*K, h, Tq, d)` keys or values into a `(B, h, T_max, d)` buffer at `index`.

    With K = 1, row b's positions go to `index .. index + Tq - 1`. With one
    position (Tq = 1) and K > 1 rows per sentence, the buffer has `T_max * K`
    slots and beam k's position `index` goes to slot `index * K + k`.
    """
    if new.shape[2] == 1:
        # (B*K, h, 1, d) -> (B, K, h, d) -> (B, h, K, d)
        batch = ops.shape(buffer)[0]
        rows, heads, _, depth = ops.shape(new)
        beams = rows // batch
        new = ops.transpose(ops.reshape(new, (batch, beams, heads, depth)), (0, 2, 1, 3))
        index = index * beams
    return ops.slice_update(buffer, [0, 0, index, 0], ops.cast(new, buffer.dtype))
