"""Greedy and beam search over a step function (paper §6.1).

Both talk to the model through one function,

    step_fn(token_ids, cache, index) -> (logits, cache)

taking the `(B*K,)` tokens at position `index` and returning `(B*K, V)`
logits for position `index + 1` (K = 1 in greedy search). They know nothing
else of the model. Each loop is a `keras.ops.while_loop` over one dict of
fixed-shape tensors, so a backend can compile the whole search into one
program.

A hypothesis Y scores log p(Y) / lp(Y), with GNMT's length normalizer
lp(Y) = ((5 + |Y|) / 6) ** length_penalty (alpha = 0.6 in the paper). Beam
search keeps live and finished hypotheses, takes 2K candidates per step so
that beams which finish do not starve the live ones, and stops once no live
beam can beat the worst finished one.
"""

from keras import ops, tree

from keras_transformer.decoding.top_k import chunked_top_k
from keras_transformer.tokenization import BOS_ID, EOS_ID, PAD_ID

NEG_INF = -1.0e9


def length_normalizer(length, length_penalty):
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** length_penalty (Wu et al., 2016, eq. 14)."""
    return ((5.0 + ops.cast(length, "float32")) / 6.0) ** length_penalty


def greedy_search(
    step_fn, cache, batch_size, max_decode_length, length_penalty=0.6, row_limits=None
):
    """The most probable token at each step, until EOS or `max_decode_length` tokens.

    Args:
        step_fn: `(token_ids (B,), cache, index) -> (logits (B, V), cache)`.
        cache: the step function's state for B sentences.
        batch_size: int, B.
        max_decode_length: int, T. Tokens to generate at most (EOS included).
        length_penalty: float. The exponent of lp(Y) in the scores; the
            search itself does not use it.
        row_limits: optional int `(B,)`, tokens to generate at most per
            sentence (each <= T), so that a sentence's output does not depend
            on the others in its batch. The loop ends when every sentence has
            ended, by EOS or at its limit.

    Returns:
        `(tokens, scores)`: int32 `(B, T)` ending in EOS then PAD (or cut at
        the sentence's limit), and float32 `(B,)` scores log p(Y) / lp(Y), as
        beam search scores its hypotheses.
    """
    row_limits = _row_limits(row_limits, batch_size, max_decode_length)
    state = {
        "index": ops.convert_to_tensor(0, dtype="int32"),
        "tokens": _token_buffer((batch_size,), max_decode_length),
        "log_probs_sum": ops.zeros((batch_size,), dtype="float32"),
        "lengths": ops.zeros((batch_size,), dtype="int32"),
        "finished": ops.zeros((batch_size,), dtype="bool"),
        "cache": cache,
    }

    def cond(state):
        running = ops.logical_not(ops.all(state["finished"]))
        return ops.logical_and(state["index"] < max_decode_length, running)

    def body(state):
        index, finished = state["index"], state["finished"]
        # (B, 1 + T) -> (B,)
        current = ops.take(state["tokens"], index, axis=1)
        logits, cache = step_fn(current, state["cache"], index)
        log_probs = _log_probs(logits)
        # (B, V) -> (B,)
        next_tokens = ops.where(finished, PAD_ID, ops.cast(ops.argmax(log_probs, axis=-1), "int32"))
        next_log_probs = ops.where(finished, 0.0, ops.max(log_probs, axis=-1))
        ended = ops.logical_or(ops.equal(next_tokens, EOS_ID), index + 1 >= row_limits)
        return {
            "index": index + 1,
            "tokens": ops.slice_update(state["tokens"], (0, index + 1), next_tokens[:, None]),
            "log_probs_sum": state["log_probs_sum"] + next_log_probs,
            "lengths": state["lengths"] + ops.cast(ops.logical_not(finished), "int32"),
            "finished": ops.logical_or(finished, ended),
            "cache": cache,
        }

    state = ops.while_loop(cond, body, state)
    scores = state["log_probs_sum"] / length_normalizer(state["lengths"], length_penalty)
    return state["tokens"][:, 1:], scores


def _beam_state(cache, batch_size, beam_size, max_decode_length):
    """Beam search's loop state, one dict of fixed-shape tensors (Flax's `BeamState`).

    "index": the position the next step reads. "alive_sequences", int32
    `(B, K, 1 + T)`, BOS then the tokens of the live hypotheses, and
    "alive_log_probs", float32 `(B, K)`, their log p(Y), best first.
    "finished_sequences" and "finished_scores", log p(Y) / lp(Y): the best
    K finished hypotheses. "finished_filled" and "finished_eos", bool
    `(B, K)`: whether a slot holds a finished hypothesis, and whether it
    ended in EOS. "cache": the step function's state.
    """
    sequences = _token_buffer((batch_size, beam_size), max_decode_length)
    # Only the first beam is live at the start, or K copies would fill the beam.
    first_beam = [[0.0] + [NEG_INF] * (beam_size - 1)]
    return {
        "index": ops.convert_to_tensor(0, dtype="int32"),
        "alive_sequences": sequences,
        "alive_log_probs": ops.tile(ops.convert_to_tensor(first_beam, "float32"), (batch_size, 1)),
        "finished_sequences": ops.zeros_like(sequences),
        "finished_scores": ops.full((batch_size, beam_size), NEG_INF, dtype="float32"),
        "finished_filled": ops.zeros((batch_size, beam_size), dtype="bool"),
        "finished_eos": ops.zeros((batch_size, beam_size), dtype="bool"),
        "cache": cache,
    }


def beam_search(
    step_fn,
    cache,
    batch_size,
    max_decode_length,
    beam_size=4,
    length_penalty=0.6,
    row_limits=None,
    reorder_cache=None,
):
    """Beam search with length normalization and early stopping (§6.1, GNMT).

    A sentence's search ends once no live beam can beat its worst finished
    hypothesis, or at its length limit. There every candidate ends: those
    that do not end in EOS are *cut*, and a cut hypothesis ranks below every
    hypothesis that ended in EOS (as in tensor2tensor), so it is returned
    only in a slot that no EOS-ended hypothesis fills.

    Args:
        step_fn: `(token_ids (B*K,), cache, index) -> (logits (B*K, V), cache)`.
        cache: the step function's state, sentence b's beams at rows
            b*K .. b*K + K - 1: every entry `(B*K, ...)` (see `tile_beams`),
            or per-row and per-sentence entries with a `reorder_cache`
            (`Transformer.initialize_cache(..., beam_size=K)`).
        batch_size: int, B.
        max_decode_length: int, T. Tokens to generate at most (EOS included).
        beam_size: int, K.
        length_penalty: float. The exponent of lp(Y); 0 ranks by log p(Y).
        row_limits: optional int `(B,)`, tokens to generate at most per
            sentence (each <= T), so that a sentence's search, and its
            results, do not depend on what else its batch holds. A limit of 1
            ends a sentence at the first step.
        reorder_cache: optional `(cache, rows) -> cache` putting the state of
            row `rows[i]` at row i after each step, for a cache that also
            holds per-sentence state (`Transformer.reorder_cache`). Default:
            every entry is per row, `(B*K, ...)`, and is reordered.

    Returns:
        `(sequences, scores)`: int32 `(B, K, T)` hypotheses, each ending in
        EOS then PAD (or cut at its sentence's limit), and float32 `(B, K)`
        scores log p(Y) / lp(Y). Best first: the EOS-ended ones by score,
        then the cut ones by score. A slot left empty (fewer than K
        hypotheses in all) scores `NEG_INF`.
    """
    K = beam_size
    reorder_cache = reorder_cache or _reorder_rows
    row_limits = _row_limits(row_limits, batch_size, max_decode_length)
    # Log-probabilities only fall and lp(Y) grows with |Y|, so no live beam can
    # end with a score above its log-probability / lp(its sentence's limit).
    limit_normalizers = length_normalizer(row_limits, length_penalty)

    def cond(state):
        filled = state["finished_filled"]
        # (B, K) -> (B,)
        best_alive = state["alive_log_probs"][:, 0] / limit_normalizers
        worst_finished = ops.min(ops.where(filled, state["finished_scores"], NEG_INF), axis=1)
        improvable = ops.logical_or(
            ops.logical_not(ops.all(filled, axis=1)), best_alive > worst_finished
        )
        return ops.any(ops.logical_and(state["index"] < row_limits, improvable))

    def body(state):
        index = state["index"]
        # (B, K, 1 + T) -> (B*K,)
        current = ops.reshape(ops.take(state["alive_sequences"], index, axis=2), (-1,))
        logits, cache = step_fn(current, state["cache"], index)
        vocab_size = ops.shape(logits)[-1]
        # (B*K, V) -> (B, K, V)
        log_probs = ops.reshape(_log_probs(logits), (-1, K, vocab_size))

        # Candidates: (B, K, V) -> (B, K*V) -> the best 2K, (B, 2K).
        candidates = ops.reshape(state["alive_log_probs"][:, :, None] + log_probs, (batch_size, -1))
        top_log_probs, top_indices = chunked_top_k(candidates, k=2 * K)
        top_beams = top_indices // vocab_size
        top_tokens = ops.cast(top_indices % vocab_size, "int32")
        # (B, 2K, 1 + T): the parent's sequence with the new token at index + 1
        top_sequences = _gather_beams(state["alive_sequences"], top_beams)
        top_sequences = ops.slice_update(top_sequences, (0, 0, index + 1), top_tokens[:, :, None])
        # A candidate from a dead beam (log-prob near NEG_INF) never counts.
        # At a sentence's length limit all its candidates end; those without EOS are cut.
        possible = top_log_probs > 0.5 * NEG_INF
        top_eos = ops.logical_and(ops.equal(top_tokens, EOS_ID), possible)
        at_limit = (index + 1 >= row_limits)[:, None]
        top_finished = ops.logical_or(top_eos, ops.logical_and(at_limit, possible))

        # Live: the best K candidates that did not end, (B, 2K) -> (B, K).
        alive_log_probs, live = ops.top_k(ops.where(top_finished, NEG_INF, top_log_probs), k=K)
        # The parent beam of each live beam -> (B*K,) rows of the cache
        parents = _gather_beams(top_beams, live)
        rows = ops.reshape(parents + ops.arange(batch_size)[:, None] * K, (-1,))

        # Finished: the best K of the old finished and the new, (B, K) + (B, 2K) -> (B, 3K).
        top_scores = top_log_probs / length_normalizer(index + 1, length_penalty)
        sequences = ops.concatenate([state["finished_sequences"], top_sequences], axis=1)
        scores = ops.concatenate([state["finished_scores"], top_scores], axis=1)
        filled = ops.concatenate([state["finished_filled"], top_finished], axis=1)
        eos = ops.concatenate([state["finished_eos"], top_eos], axis=1)
        # (B, 3K) -> (B, K)
        kept, filled, eos = _rank_finished(scores, filled, eos, K)
        return {
            "index": index + 1,
            "alive_sequences": _gather_beams(top_sequences, live),
            "alive_log_probs": alive_log_probs,
            "finished_sequences": _gather_beams(sequences, kept),
            "finished_scores": ops.where(filled, _gather_beams(scores, kept), NEG_INF),
            "finished_filled": filled,
            "finished_eos": eos,
            "cache": reorder_cache(cache, rows),
        }

    state = ops.while_loop(cond, body, _beam_state(cache, batch_size, K, max_decode_length))
    # Every sentence that ran a step has a finished hypothesis: at its limit all end.
    return state["finished_sequences"][:, :, 1:], state["finished_scores"]


def tile_beams(cache, beam_size):
    """Repeats every `(B, ...)` entry of a cache K times: -> `(B*K, ...)`, beams adjacent."""
    return tree.map_structure(lambda x: ops.repeat(x, beam_size, axis=0), cache)


def _row_limits(row_limits, batch_size, max_decode_length):
    if row_limits is None:
        return ops.full((batch_size,), max_decode_length, dtype="int32")
    return ops.minimum(ops.cast(row_limits, "int32"), max_decode_length)


def _token_buffer(shape, max_decode_length):
    """int32 `(*shape, 1 + T)`: BOS, then PAD where the generated tokens go."""
    bos = ops.full((*shape, 1), BOS_ID, dtype="int32")
    pad = ops.full((*shape, max_decode_length), PAD_ID, dtype="int32")
    return ops.concatenate([bos, pad], axis=-1)


def _log_probs(logits):
    """float32 log-softmax; PAD and BOS are never generated."""
    logits = ops.cast(logits, "float32")
    vocab = ops.arange(ops.shape(logits)[-1])
    never = ops.logical_or(ops.equal(vocab, PAD_ID), ops.equal(vocab, BOS_ID))
    return ops.log_softmax(ops.where(never, NEG_INF, logits), axis=-1)


def _gather_beams(tensor, beam_indices):
    """Picks beams per sentence: `(B, K, ...)` by `(B, K')` indices -> `(B, K', ...)`."""
    trailing = [1] * (len(tensor.shape) - 2)
    indices = ops.reshape(beam_indices, (*ops.shape(beam_indices), *trailing))
    return ops.take_along_axis(tensor, indices, axis=1)


def _reorder_rows(cache, rows):
    def reorder(x):
        if None not in (x.shape[0], rows.shape[0]) and x.shape[0] != rows.shape[0]:
            raise ValueError(
                f"beam_search reorders every cache entry by row, but an entry has {x.shape[0]} "
                f"rows for {rows.shape[0]} beams. A cache with per-sentence state needs its "
                "own `reorder_cache` (`Transformer.reorder_cache` for the model's cache)."
            )
        return ops.take(x, rows, axis=0)

    return tree.map_structure(reorder, cache)


def _rank_finished(scores, filled, ended_in_eos, k):
    """The k best finished hypotheses of each row: EOS-ended ones first, then cut ones.

    `scores` float32 `(B, n)`; `filled` and `ended_in_eos` bool `(B, n)`, the
    entries that hold a finished hypothesis and those that ended in EOS.
    Returns `(positions, filled, eos)`, each `(B, k)`: the entry in each
    slot, whether the slot holds a hypothesis, and whether it ended in EOS.
    """
    cut = ops.logical_and(filled, ops.logical_not(ended_in_eos))
    # (B, n) -> (B, k), each group best first
    _, eos_positions = ops.top_k(ops.where(ended_in_eos, scores, NEG_INF), k=k)
    _, cut_positions = ops.top_k(ops.where(cut, scores, NEG_INF), k=k)
    # (B, n) -> (B, 1)
    eos_count = ops.minimum(ops.sum(ops.cast(ended_in_eos, "int32"), axis=1, keepdims=True), k)
    cut_count = ops.sum(ops.cast(cut, "int32"), axis=1, keepdims=True)
    slots = ops.arange(k, dtype="int32")[None, :]
    # Slot j holds the j-th EOS-ended hypothesis, or else the (j - eos_count)-th cut one.
    cut_slots = ops.take_along_axis(cut_positions, ops.maximum(slots - eos_count, 0), axis=1)
    positions = ops.where(slots < eos_count, eos_positions, cut_slots)
    return positions, slots < ops.minimum(eos_count + cut_count, k), slots < eos_count
