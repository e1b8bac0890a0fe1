"""Greedy and beam search over a step function (paper §6.1).

Both talk to the model through one function,

    step_fn(token_ids, cache, index) -> (logits, cache)

taking the `(N,)` tokens at position `index` and returning `(N, V)` logits
for position `index + 1`. They know nothing else of the model. Loops are
`keras.ops.while_loop` over fixed-shape buffers, so a backend can compile the
whole search into one program.

Beam search is the paper's: beam size 4, length penalty alpha = 0.6 in the
GNMT form lp(Y) = ((5 + |Y|) / 6) ** alpha, live and finished hypotheses,
2K candidates per step so that beams which finish do not starve the live
ones, and an early stop once no live beam can beat the worst finished one.
Hypotheses still live at a sentence's length limit are cut there, and rank
below every hypothesis that ended in EOS, as in tensor2tensor.
"""

from keras import ops, tree

from keras_transformer.tokenization import BOS_ID, EOS_ID, PAD_ID

NEG_INF = -1.0e9


def length_penalty(length, alpha):
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al., 2016, eq. 14)."""
    return ((5.0 + ops.cast(length, "float32")) / 6.0) ** alpha


def _log_probs(logits):
    """float32 log-softmax; PAD and BOS are never generated."""
    logits = ops.cast(logits, "float32")
    vocab_size = ops.shape(logits)[-1]
    never = ops.logical_or(
        ops.equal(ops.arange(vocab_size), PAD_ID), ops.equal(ops.arange(vocab_size), BOS_ID)
    )
    return ops.log_softmax(ops.where(never, NEG_INF, logits), axis=-1)


def greedy_search(step_fn, cache, batch_size, max_length, alpha=0.6, row_limits=None):
    """The most probable token at each step, until EOS or `max_length` tokens.

    Args:
        step_fn: `(token_ids (B,), cache, index) -> (logits (B, V), cache)`.
        cache: the step function's state for B sentences.
        batch_size: int, B.
        max_length: int. Tokens to generate at most (EOS included).
        alpha: float. Length penalty exponent of the scores (not of the search).
        row_limits: optional int `(B,)`, tokens to generate at most per
            sentence (each <= `max_length`), so that a sentence's output does
            not depend on the others in its batch. The loop ends when every
            sentence has ended, by EOS or at its limit.

    Returns:
        `(tokens, scores)`: int32 `(B, max_length)` ending in EOS then PAD
        (or cut at the sentence's limit), and float32 `(B,)` scores
        log p(Y) / lp(Y), as beam search scores its hypotheses.
    """
    row_limits = _row_limits(row_limits, batch_size, max_length)
    state = {
        "index": ops.convert_to_tensor(0, dtype="int32"),
        # (B, 1 + T): BOS, then the generated tokens.
        "tokens": ops.concatenate(
            [
                ops.full((batch_size, 1), BOS_ID, dtype="int32"),
                ops.full((batch_size, max_length), PAD_ID, dtype="int32"),
            ],
            axis=1,
        ),
        "log_probs_sum": ops.zeros((batch_size,), dtype="float32"),
        "lengths": ops.zeros((batch_size,), dtype="int32"),
        "finished": ops.zeros((batch_size,), dtype="bool"),
        "cache": cache,
    }

    def cond(state):
        return ops.logical_and(
            state["index"] < max_length, ops.logical_not(ops.all(state["finished"]))
        )

    def body(state):
        index, finished = state["index"], state["finished"]
        # (B, 1 + T) -> (B,)
        current = ops.take(state["tokens"], index, axis=1)
        logits, cache = step_fn(current, state["cache"], index)
        log_probs = _log_probs(logits)
        # (B, V) -> (B,)
        next_tokens = ops.cast(ops.argmax(log_probs, axis=-1), "int32")
        next_log_probs = ops.max(log_probs, axis=-1)
        next_tokens = ops.where(finished, PAD_ID, next_tokens)
        ended = ops.logical_or(ops.equal(next_tokens, EOS_ID), index + 1 >= row_limits)
        return {
            "index": index + 1,
            "tokens": ops.slice_update(state["tokens"], (0, index + 1), next_tokens[:, None]),
            "log_probs_sum": state["log_probs_sum"] + ops.where(finished, 0.0, next_log_probs),
            "lengths": state["lengths"] + ops.cast(ops.logical_not(finished), "int32"),
            "finished": ops.logical_or(finished, ended),
            "cache": cache,
        }

    state = ops.while_loop(cond, body, state)
    scores = state["log_probs_sum"] / length_penalty(state["lengths"], alpha)
    return state["tokens"][:, 1:], scores


def _row_limits(row_limits, batch_size, max_length):
    if row_limits is None:
        return ops.full((batch_size,), max_length, dtype="int32")
    return ops.minimum(ops.cast(row_limits, "int32"), max_length)


def _top_k(x, k, chunk=128):
    """The k largest entries of each row of a `(B, n)` tensor, as `ops.top_k`.

    For a long row, the row is cut into chunks and only the k chunks with
    the largest maxima are searched: an entry of the top k cannot lie in any
    other chunk, since each of the k chunks above it holds a larger entry.
    Exact, and under XLA on a CPU about three times faster than one top k
    over all of `K * V` candidates, which sorts the whole row.
    """
    batch_size, n = ops.shape(x)[0], x.shape[-1]
    if n is None or n < 4 * k * chunk:
        return ops.top_k(x, k=k)
    padding = -n % chunk
    if padding:
        x = ops.pad(x, ((0, 0), (0, padding)), constant_values=float("-inf"))
    # (B, n) -> (B, n / chunk, chunk); the k chunks with the largest maxima
    chunks = ops.reshape(x, (batch_size, -1, chunk))
    _, chunk_ids = ops.top_k(ops.max(chunks, axis=-1), k=k)
    # (B, k, chunk) candidates -> the top k of them
    candidates = ops.take_along_axis(chunks, chunk_ids[:, :, None], axis=1)
    values, positions = ops.top_k(ops.reshape(candidates, (batch_size, -1)), k=k)
    chunk_of = ops.take_along_axis(chunk_ids, positions // chunk, axis=1)
    return values, chunk_of * chunk + positions % chunk


def _gather_beams(tensor, beam_indices):
    """Picks beams per sentence: `(B, K, ...)` by `(B, K')` indices -> `(B, K', ...)`."""
    return ops.take_along_axis(
        tensor,
        ops.reshape(beam_indices, (*ops.shape(beam_indices), *([1] * (len(tensor.shape) - 2)))),
        axis=1,
    )


def _unflatten_beams(tensor, beam_size):
    # (B*K, ...) -> (B, K, ...)
    shape = ops.shape(tensor)
    return ops.reshape(tensor, (shape[0] // beam_size, beam_size, *shape[1:]))


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


def tile_beams(cache, beam_size):
    """Repeats every `(B, ...)` entry of a cache K times: -> `(B*K, ...)`, beams adjacent."""
    return tree.map_structure(lambda x: ops.repeat(x, beam_size, axis=0), cache)


def _rank_finished(scores, finished, ended_in_eos, k):
    """The k best finished hypotheses of each row: EOS-ended ones first, then cut ones.

    A hypothesis cut at the length limit ranks below every hypothesis that
    ended in EOS, whatever their scores, as in tensor2tensor: cut
    ones only fill the slots that no EOS-ended one fills. Each group is
    ranked by score, best first.

    Args:
        scores: float32 `(B, n)`.
        finished: bool `(B, n)`, entries that hold a finished hypothesis.
        ended_in_eos: bool `(B, n)`, finished entries that ended in EOS.
        k: int, at most n.

    Returns:
        `(positions, filled, eos)`, each `(B, k)`: the entry in each slot,
        whether the slot holds a finished hypothesis, and whether it ended in EOS.
    """
    cut = ops.logical_and(finished, ops.logical_not(ended_in_eos))
    # (B, n) -> (B, k), each group best first
    _, eos_positions = ops.top_k(ops.where(ended_in_eos, scores, NEG_INF), k=k)
    _, cut_positions = ops.top_k(ops.where(cut, scores, NEG_INF), k=k)
    # (B, n) -> (B, 1)
    eos_count = ops.minimum(ops.sum(ops.cast(ended_in_eos, "int32"), axis=1, keepdims=True), k)
    filled_count = ops.minimum(
        eos_count + ops.sum(ops.cast(cut, "int32"), axis=1, keepdims=True), k
    )
    slots = ops.arange(k, dtype="int32")[None, :]
    # Slot j holds the j-th EOS-ended hypothesis, or else the (j - eos_count)-th cut one.
    cut_slots = ops.take_along_axis(cut_positions, ops.maximum(slots - eos_count, 0), axis=1)
    positions = ops.where(slots < eos_count, eos_positions, cut_slots)
    return positions, slots < filled_count, slots < eos_count


def beam_search(
    step_fn,
    cache,
    batch_size,
    max_length,
    beam_size=4,
    alpha=0.6,
    row_limits=None,
    reorder_cache=None,
):
    """Beam search with length penalty and early stopping (§6.1, GNMT).

    A sentence's search ends once no live beam can beat its worst finished
    hypothesis, or at its length limit. There every candidate ends: those
    that do not end in EOS are *cut*, and a cut hypothesis ranks below every
    hypothesis that ended in EOS (as in tensor2tensor), so it is
    returned only in a slot that no EOS-ended hypothesis fills.

    Args:
        step_fn: `(token_ids (B*K,), cache, index) -> (logits (B*K, V), cache)`.
        cache: the step function's state, sentence b's beams at rows
            b*K .. b*K + K - 1: every entry `(B*K, ...)` (see `tile_beams`),
            or per-row and per-sentence entries with a `reorder_cache`
            (`Transformer.initialize_cache(..., beam_size=K)`).
        batch_size: int, B.
        max_length: int. Tokens to generate at most (EOS included).
        beam_size: int, K.
        alpha: float. Length penalty exponent; 0 ranks by raw log-probability.
        row_limits: optional int `(B,)`, tokens to generate at most per
            sentence (each <= `max_length`), so that a sentence's search, and
            its results, do not depend on what else its batch holds. A limit
            of 1 ends a sentence at the first step.
        reorder_cache: optional `(cache, rows) -> cache` putting the state of
            row `rows[i]` at row i after each step, for a cache that also
            holds per-sentence state (`Transformer.reorder_cache`). Default:
            every entry is per row, `(B*K, ...)`, and is reordered.

    Returns:
        `(sequences, scores)`: int32 `(B, K, max_length)` hypotheses, each
        ending in EOS then PAD (or cut at its sentence's limit), and float32
        `(B, K)` scores, log p(Y) / lp(Y). Best first: the EOS-ended ones by
        score, then the cut ones by score. A slot left empty (fewer than K
        hypotheses in all) scores `NEG_INF`.
    """
    K = beam_size
    reorder_cache = reorder_cache or _reorder_rows
    row_limits = _row_limits(row_limits, batch_size, max_length)
    # Log-probabilities only fall, and lp(Y) grows with |Y|, so no live beam
    # can end with a score above its log-probability / lp(its sentence's limit).
    limit_penalties = length_penalty(row_limits, alpha)
    # (B, K, 1 + T): BOS, then the generated tokens.
    sequences = ops.concatenate(
        [
            ops.full((batch_size, K, 1), BOS_ID, dtype="int32"),
            ops.full((batch_size, K, max_length), PAD_ID, dtype="int32"),
        ],
        axis=2,
    )
    state = {
        "index": ops.convert_to_tensor(0, dtype="int32"),
        "alive_sequences": sequences,
        # Only the first beam is live at the start, or K copies would fill the beam.
        "alive_log_probs": ops.tile(
            ops.convert_to_tensor([[0.0] + [NEG_INF] * (K - 1)], dtype="float32"),
            (batch_size, 1),
        ),
        "finished_sequences": ops.zeros_like(sequences),
        "finished_scores": ops.full((batch_size, K), NEG_INF, dtype="float32"),
        # (B, K): whether a slot holds a finished hypothesis, and whether it ended in EOS.
        "finished_flags": ops.zeros((batch_size, K), dtype="bool"),
        "finished_eos": ops.zeros((batch_size, K), dtype="bool"),
        "cache": cache,
    }

    def cond(state):
        finished_flags = state["finished_flags"]
        # (B, K) -> (B,)
        best_alive = state["alive_log_probs"][:, 0] / limit_penalties
        worst_finished = ops.min(
            ops.where(finished_flags, state["finished_scores"], NEG_INF), axis=1
        )
        improvable = ops.logical_or(
            ops.logical_not(ops.all(finished_flags, axis=1)), best_alive > worst_finished
        )
        return ops.any(ops.logical_and(state["index"] < row_limits, improvable))

    def body(state):
        index = state["index"]
        # (B, K, 1 + T) -> (B*K,)
        current = ops.reshape(ops.take(state["alive_sequences"], index, axis=2), (-1,))
        logits, cache = step_fn(current, state["cache"], index)
        # (B*K, V) -> (B, K, V)
        log_probs = _unflatten_beams(_log_probs(logits), K)
        vocab_size = ops.shape(log_probs)[-1]
        candidate_log_probs = state["alive_log_probs"][:, :, None] + log_probs
        # (B, K, V) -> (B, K*V) -> top 2K candidates (B, 2K)
        top_log_probs, top_indices = _top_k(
            ops.reshape(candidate_log_probs, (batch_size, -1)), k=2 * K
        )
        top_beams = top_indices // vocab_size
        top_tokens = ops.cast(top_indices % vocab_size, "int32")
        # (B, 2K, 1 + T): the parent sequence with the new token at index + 1
        top_sequences = _gather_beams(state["alive_sequences"], top_beams)
        top_sequences = ops.slice_update(top_sequences, (0, 0, index + 1), top_tokens[:, :, None])
        # A candidate from a dead beam (log-prob near NEG_INF) never counts.
        # At a sentence's length limit all its candidates end; those without EOS are cut.
        possible = top_log_probs > 0.5 * NEG_INF
        top_eos = ops.logical_and(ops.equal(top_tokens, EOS_ID), possible)
        at_limit = (index + 1 >= row_limits)[:, None]
        top_finished = ops.logical_or(top_eos, ops.logical_and(at_limit, possible))

        # Live: the best K candidates that did not end.
        live_log_probs = ops.where(top_finished, NEG_INF, top_log_probs)
        alive_log_probs, live_positions = ops.top_k(live_log_probs, k=K)
        # (B, K) parent beam of each new live beam -> rows of the (B*K) cache
        parents = _gather_beams(top_beams, live_positions)
        rows = ops.reshape(parents + ops.arange(batch_size)[:, None] * K, (-1,))

        # Finished: the best K of the old finished and the new finished candidates.
        new_scores = top_log_probs / length_penalty(index + 1, alpha)
        # (B, K) + (B, 2K) -> (B, 3K)
        all_sequences = ops.concatenate([state["finished_sequences"], top_sequences], axis=1)
        all_scores = ops.concatenate([state["finished_scores"], new_scores], axis=1)
        all_flags = ops.concatenate([state["finished_flags"], top_finished], axis=1)
        all_eos = ops.concatenate([state["finished_eos"], top_eos], axis=1)
        positions, finished_flags, finished_eos = _rank_finished(all_scores, all_flags, all_eos, K)
        return {
            "index": index + 1,
            "alive_sequences": _gather_beams(top_sequences, live_positions),
            "alive_log_probs": alive_log_probs,
            "finished_sequences": _gather_beams(all_sequences, positions),
            "finished_scores": ops.where(
                finished_flags, _gather_beams(all_scores, positions), NEG_INF
            ),
            "finished_flags": finished_flags,
            "finished_eos": finished_eos,
            "cache": reorder_cache(cache, rows),
        }

    # Every sentence that ran a step has a finished hypothesis: at its limit all end.
    state = ops.while_loop(cond, body, state)
    return state["finished_sequences"][:, :, 1:], state["finished_scores"]
