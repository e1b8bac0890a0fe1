"""Greedy and beam search against fake step functions whose best paths are known (§6.1)."""

import itertools
import math

import numpy as np
import pytest
from decoding_helpers import VOCAB, A, B, C, D, log_softmax, penalized, strip
from helpers import to_numpy
from keras import ops

import keras_transformer as kt
from keras_transformer.decoding import beam_search, greedy_search, length_normalizer, tile_beams
from keras_transformer.decoding.search import NEG_INF
from keras_transformer.decoding.top_k import chunked_top_k

# --- a fake model whose best sequence is known -------------------------------

# Next-token probabilities given the current token (a first-order Markov model).
TRANSITIONS = {
    kt.BOS_ID: {A: 0.5, B: 0.4, C: 0.1},
    A: {C: 0.34, D: 0.33, kt.EOS_ID: 0.33},
    B: {kt.EOS_ID: 1.0},
    C: {kt.EOS_ID: 1.0},
    D: {kt.EOS_ID: 1.0},
}


def transition_logits(transitions=TRANSITIONS, floor=-30.0):
    """`(V, V)` next-token logits per current token; `floor` for the transitions not listed."""
    table = np.full((VOCAB, VOCAB), floor, "float32")
    for current, nexts in transitions.items():
        for token, p in nexts.items():
            table[current, token] = math.log(p)
    table[kt.EOS_ID, kt.EOS_ID] = 0.0
    return table


def markov(transitions=TRANSITIONS, floor=-30.0):
    """A step function reading only the current token; `floor=NEG_INF` forbids the rest."""
    table = transition_logits(transitions, floor)

    def step(token_ids, cache, index):
        logits = ops.take(ops.convert_to_tensor(table), token_ids, axis=0)
        # The cache counts steps per row, so that beam reordering is exercised.
        return logits, {"steps": cache["steps"] + 1}

    return step


markov_step = markov()


def fake_cache(rows):
    return {"steps": ops.zeros((rows, 1), "float32")}


def complete_hypotheses(max_decode_length=4, transitions=TRANSITIONS):
    """Every sequence the Markov model ends with EOS, with its log-probability."""
    results = []
    for length in range(1, max_decode_length + 1):
        for tokens in itertools.product(range(VOCAB), repeat=length):
            if tokens[-1] != kt.EOS_ID or kt.EOS_ID in tokens[:-1]:
                continue
            previous, log_p = kt.BOS_ID, 0.0
            for token in tokens:
                p = transitions.get(previous, {}).get(token, 0.0)
                if p == 0.0:
                    break
                log_p += math.log(p)
                previous = token
            else:
                results.append((list(tokens), log_p))
    return results


def test_beam_search_finds_what_greedy_misses():
    tokens, _ = greedy_search(markov_step, fake_cache(1), 1, 4, length_penalty=0.0)
    assert strip(tokens[0]) == [A, C, kt.EOS_ID]
    sequences, scores = beam_search(
        markov_step, tile_beams(fake_cache(1), 4), 1, 4, beam_size=4, length_penalty=0.0
    )
    assert strip(sequences[0, 0]) == [B, kt.EOS_ID]
    np.testing.assert_allclose(to_numpy(scores)[0, 0], math.log(0.4), rtol=1e-5)
    # Finished hypotheses are kept while the search goes on: all four are complete.
    found = [strip(s) for s in sequences[0]]
    assert all(s[-1] == kt.EOS_ID for s in found)
    assert [A, C, kt.EOS_ID] in found


def test_finished_candidates_do_not_starve_live_beams():
    # With only K candidates per step, EOS and A would fill the beam at the
    # first step and B, whose [B, EOS] is the second-best sentence, be lost.
    transitions = {
        kt.BOS_ID: {kt.EOS_ID: 0.4, A: 0.35, B: 0.25},
        A: {kt.EOS_ID: 0.3, C: 0.35, D: 0.35},
        B: {kt.EOS_ID: 1.0},
        C: {kt.EOS_ID: 1.0},
        D: {kt.EOS_ID: 1.0},
    }

    sequences, _ = beam_search(
        markov(transitions), tile_beams(fake_cache(1), 2), 1, 4, beam_size=2, length_penalty=0.0
    )
    best_two = sorted(complete_hypotheses(4, transitions), key=lambda h: -h[1])[:2]
    assert [strip(s) for s in sequences[0]] == [h[0] for h in best_two]
    assert best_two[1][0] == [B, kt.EOS_ID]


@pytest.mark.parametrize("length_penalty", [0.0, 0.6, 6.0])
def test_length_penalty_ranks_as_the_formula_says(length_penalty):
    expected = max(
        complete_hypotheses(), key=lambda h: h[1] / ((5 + len(h[0])) / 6) ** length_penalty
    )
    sequences, scores = beam_search(
        markov_step, tile_beams(fake_cache(2), 4), 2, 4, beam_size=4, length_penalty=length_penalty
    )
    for row in range(2):
        assert strip(sequences[row, 0]) == expected[0]
        np.testing.assert_allclose(
            to_numpy(scores)[row, 0],
            expected[1] / float(to_numpy(length_normalizer(len(expected[0]), length_penalty))),
            rtol=1e-5,
        )
        assert (np.diff(to_numpy(scores)[row]) <= 1e-6).all(), "best first"
    # The short hypothesis wins without a penalty, the long one with a strong penalty.
    assert (len(expected[0]) == 2) == (length_penalty < 1)


@pytest.mark.parametrize("length", [5000, 8192])
def test_top_k_by_chunks_equals_a_full_sort(length):
    """Beam search ranks K * V candidates by chunks (padded when V * K is not a multiple)."""
    rows = np.random.RandomState(length).randn(3, length).astype("float32")
    rows[1, 1000:1008] = 10.0 + np.arange(8)  # the whole top 8 in one chunk
    rows[2, ::640] = 5.0 + np.arange(0, length, 640) / length  # each in a chunk of its own
    values, indices = chunked_top_k(ops.convert_to_tensor(rows), 8)
    expected = np.argsort(-rows, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(to_numpy(indices), expected)
    np.testing.assert_array_equal(to_numpy(values), np.take_along_axis(rows, expected, axis=1))


def test_early_stop_bounds_a_live_beam_by_the_penalty_at_the_length_limit():
    """The search stops early only when no live beam can win, the length penalty included.

    After two steps [EOS] and [B, EOS] fill both slots, and the log-probability
    of the live [A, C], ln 0.3, lies below both their scores; yet with
    length_penalty = 2 the longer [A, C, D, EOS] wins, which only log p / lp(limit)
    of the live beam shows.
    """
    transitions = {
        kt.BOS_ID: {kt.EOS_ID: 0.4, B: 0.3, A: 0.3},
        B: {kt.EOS_ID: 1.0},
        A: {C: 1.0},
        C: {D: 1.0},
        D: {kt.EOS_ID: 1.0},
    }
    # Enumerating every hypothesis is the search that never stops early.
    hypotheses = complete_hypotheses(5, transitions)
    expected = max(hypotheses, key=lambda h: penalized(h[1], len(h[0]), 2.0))
    assert expected[0] == [A, C, D, kt.EOS_ID] != max(hypotheses, key=lambda h: h[1])[0]
    # At the search's max_decode_length, and at a sentence's own, shorter limit.
    step, cache = markov(transitions), tile_beams(fake_cache(1), 2)
    for max_decode_length, limits in [(5, None), (7, np.array([5], "int32"))]:
        sequences, scores = beam_search(
            step, cache, 1, max_decode_length, beam_size=2, length_penalty=2.0, row_limits=limits
        )
        assert strip(sequences[0, 0]) == expected[0]
        np.testing.assert_allclose(
            to_numpy(scores)[0, 0], penalized(expected[1], 4, 2.0), rtol=1e-5
        )


def test_hypotheses_cut_at_the_limit_rank_below_those_ending_in_eos():
    # [A, A, A] is cut at the limit with a better score than [EOS], the only
    # hypothesis that ends: the one that ends comes first (as in tensor2tensor).
    transitions = {kt.BOS_ID: {A: 0.9, kt.EOS_ID: 0.1}, A: {A: 1.0}}
    sequences, scores = beam_search(
        markov(transitions, floor=NEG_INF), tile_beams(fake_cache(1), 2), 1, 3, beam_size=2
    )
    assert [strip(s) for s in sequences[0]] == [[kt.EOS_ID], [A, A, A]]
    expected = [penalized(math.log(0.1), 1, 0.6), penalized(math.log(0.9), 3, 0.6)]
    np.testing.assert_allclose(to_numpy(scores)[0], expected, rtol=1e-5)
    assert expected[1] > expected[0]

    # With no hypothesis that ends, the cut ones come back, best first, each
    # cut at its sentence's limit.
    never_ends = {kt.BOS_ID: {A: 0.6, B: 0.4}, A: {A: 1.0}, B: {B: 1.0}}
    step, cache = markov(never_ends, floor=NEG_INF), tile_beams(fake_cache(2), 2)
    limits = np.array([2, 4], "int32")
    sequences, scores = beam_search(step, cache, 2, 4, beam_size=2, row_limits=limits)
    for row, limit in enumerate([2, 4]):
        assert [strip(s) for s in sequences[row]] == [[A] * limit, [B] * limit]
        expected = [penalized(math.log(p), limit, 0.6) for p in (0.6, 0.4)]
        np.testing.assert_allclose(to_numpy(scores)[row], expected, rtol=1e-5)


# --- a fake model whose next token depends on its whole history --------------

HISTORIES = 7
# Next-token logits given the sum of the tokens so far, mod 7: random, with
# EOS made likely enough that beams keep ending, so that the live beams are
# not the first K candidates.
HISTORY_LOGITS = 2.0 * np.random.RandomState(3).randn(HISTORIES, VOCAB).astype("float32")
HISTORY_LOGITS[:, kt.EOS_ID] += 1.0


def history_step(token_ids, cache, index):
    """The cache holds each row's sum of tokens: a beam given another's cache reads another sum."""
    history = cache["history"] + token_ids
    logits = ops.take(ops.convert_to_tensor(HISTORY_LOGITS), history % HISTORIES, axis=0)
    return logits, {"history": history}


def test_beam_scores_equal_teacher_forced_rescoring_with_a_history():
    """Each beam's cache follows its parent: wrong parents give wrong histories and scores."""
    batch_size, length_penalty = 6, 0.6
    # Sentence b's history starts at b, so each sentence searches differently.
    cache = {"history": ops.arange(batch_size, dtype="int32")}
    sequences, scores = beam_search(
        history_step,
        tile_beams(cache, 4),
        batch_size,
        8,
        beam_size=4,
        length_penalty=length_penalty,
    )
    for row in range(batch_size):
        for sequence, score in zip(to_numpy(sequences)[row], to_numpy(scores)[row], strict=True):
            # The step function alone, on this hypothesis only.
            tokens, log_prob = strip(sequence), 0.0
            one_cache = {"history": ops.convert_to_tensor([row], "int32")}
            for index, (current, token) in enumerate(
                zip([kt.BOS_ID, *tokens[:-1]], tokens, strict=True)
            ):
                logits, one_cache = history_step(
                    ops.convert_to_tensor([current], "int32"), one_cache, index
                )
                log_prob += log_softmax(to_numpy(logits))[0, token]
            np.testing.assert_allclose(
                score,
                penalized(log_prob, len(tokens), length_penalty),
                rtol=1e-5,
                err_msg=f"sentence {row}, hypothesis {tokens}",
            )
