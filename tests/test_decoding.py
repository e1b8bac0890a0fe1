import itertools
import logging
import math
import types

import keras
import numpy as np
import pytest
from helpers import to_numpy
from keras import ops

import keras_transformer as kt
from keras_transformer.decoding import beam_search, greedy_search, length_normalizer, tile_beams
from keras_transformer.decoding.search import NEG_INF
from keras_transformer.decoding.top_k import chunked_top_k
from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT

# --- a fake model whose best sequence is known -------------------------------

A, B, C, D = 4, 5, 6, 7
VOCAB = 8
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


def strip(sequence):
    """A hypothesis without its padding: up to EOS, or up to PAD where it was cut."""
    sequence = list(to_numpy(sequence))
    if kt.EOS_ID in sequence:
        return sequence[: sequence.index(kt.EOS_ID) + 1]
    return sequence[: sequence.index(kt.PAD_ID)] if kt.PAD_ID in sequence else sequence


def log_softmax(logits):
    """NumPy log-softmax over the last axis; PAD and BOS are never generated, as in the search."""
    logits = np.array(logits, "float32")
    logits[..., [kt.PAD_ID, kt.BOS_ID]] = -1e9
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def penalized(log_prob, length, length_penalty):
    return log_prob / ((5 + length) / 6) ** length_penalty


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


# --- a fake model that copies its source -------------------------------------


class CopyModel:
    """What a `Translator` needs of a `Transformer`, for a model that has learnt to copy.

    It says its source's token at each position, EOS included; past the
    source, and on a source of padding only, it says UNK, never EOS.
    """

    config = types.SimpleNamespace(max_length=32)
    variables = ()

    def encode(self, token_ids, training=False):
        return token_ids, ops.not_equal(token_ids, kt.PAD_ID)

    def initialize_cache(self, source, padding_mask, max_length, beam_size=1):
        # (B, S) -> (B*K, S + T): the token to say at each position
        source = ops.pad(ops.convert_to_tensor(source, "int32"), ((0, 0), (0, max_length)))
        return {"source": ops.repeat(source, beam_size, axis=0)}

    def reorder_cache(self, cache, rows):
        return {"source": ops.take(cache["source"], rows, axis=0)}

    def decode_step(self, token_ids, cache, index):
        # (B*K, S + T) -> (B*K,)
        token = ops.take(cache["source"], index, axis=1)
        token = ops.where(ops.equal(token, kt.PAD_ID), kt.UNK_ID, token)
        return 10.0 * ops.one_hot(token, VOCAB), cache


def test_translator_takes_a_decoding_config_and_its_validation():
    """Keyword overrides go through `DecodingConfig`, which alone checks them."""
    model, config = CopyModel(), kt.DecodingConfig(beam_size=2, max_extra_length=8)
    translator = kt.Translator(model, None, config, length_penalty=1.0)
    assert translator.decoding_config == kt.DecodingConfig(2, 1.0, 8)
    assert kt.Translator(model, None).decoding_config == kt.DecodingConfig()
    with pytest.raises(ValueError, match="beam_size must be a positive integer.*beam_size=0"):
        kt.Translator(model, None, beam_size=0)
    with pytest.raises(ValueError, match="length_penalty must be >= 0.*length_penalty=-1.0"):
        kt.Translator(model, None, config, length_penalty=-1.0)
    with pytest.raises(ValueError, match=r"Unknown DecodingConfig field\(s\): \['beam'\]"):
        kt.Translator(model, None, beam=2)
    with pytest.raises(TypeError, match="decoding_config must be a DecodingConfig.*=4"):
        kt.Translator(model, None, 4)
    with pytest.raises(ValueError, match="batch_size must be a positive integer.*0"):
        kt.Translator(model, None, batch_size=0)


@pytest.mark.parametrize("beam_size", [1, 2])
def test_rows_of_padding_only_end_at_the_first_step(beam_size):
    """Rows that round a batch up never keep the search running, nor change the real rows."""
    translator = kt.Translator(CopyModel(), tokenizer=None, beam_size=beam_size, max_extra_length=8)
    real = np.array([[A, B, C, kt.EOS_ID], [D, kt.EOS_ID, kt.PAD_ID, kt.PAD_ID]], "int32")
    sequences, scores = translator.translate_ids(real)
    assert [strip(s) for s in sequences[:, 0]] == [[A, B, C, kt.EOS_ID], [D, kt.EOS_ID]]
    padded_sequences, padded_scores = translator.translate_ids(
        np.concatenate([real, np.full((2, 4), kt.PAD_ID, "int32")])
    )
    np.testing.assert_array_equal(padded_sequences[:2], sequences)
    np.testing.assert_allclose(padded_scores[:2], scores, rtol=1e-6)
    # (B, K): tokens per hypothesis. Rows of padding end at once, though they
    # never say EOS and their length limit would allow 8 tokens ...
    lengths = (padded_sequences != kt.PAD_ID).sum(axis=-1)
    assert (lengths[2:] == 1).all()
    if beam_size == 1:
        # ... and greedy search stops with its last sentence: the loop ran
        # as many steps as the longest output, the same with and without them.
        assert lengths.max() == (sequences != kt.PAD_ID).sum(axis=-1).max() == 4


# --- the real model ----------------------------------------------------------


@pytest.fixture(scope="module")
def corpus():
    return kt.data.number_words("train", "de", size=400, seed=5)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return kt.Tokenizer.train([text for pair in corpus for text in pair], vocab_size=120)


@pytest.fixture(scope="module")
def model(tokenizer):
    keras.utils.set_random_seed(11)
    config = kt.TransformerConfig.tiny(vocab_size=tokenizer.vocab_size, max_length=48)
    return kt.build_transformer(config)


def source_batch(tokenizer, corpus, count):
    ids = tokenizer.encode([source for source, _ in corpus[:count]])
    batch = np.zeros((count, max(map(len, ids))), "int32")
    for row, sequence in enumerate(ids):
        batch[row, : len(sequence)] = sequence
    return batch


def prepared(model, source, max_decode_length, beam_size=1):
    encoder_output, mask = model.encode(source)
    return model.initialize_cache(encoder_output, mask, max_decode_length, beam_size)


def test_beam_size_one_equals_greedy(model, tokenizer, corpus):
    source = source_batch(tokenizer, corpus, 4)
    greedy, _ = greedy_search(
        model.decode_step, prepared(model, source, 12), 4, 12, length_penalty=0.0
    )
    beam, _ = beam_search(
        model.decode_step, prepared(model, source, 12), 4, 12, beam_size=1, length_penalty=0.0
    )
    np.testing.assert_array_equal(to_numpy(beam)[:, 0], to_numpy(greedy))


def teacher_forced_log_probs(model, source, hypotheses):
    """log p(Y | X) of each hypothesis by the full, uncached model."""
    decoder_inputs = np.concatenate(
        [np.full((len(hypotheses), 1), kt.BOS_ID, "int32"), hypotheses[:, :-1]], axis=1
    )
    log_probs = log_softmax(to_numpy(model({ENCODER_INPUT: source, DECODER_INPUT: decoder_inputs})))
    picked = np.take_along_axis(log_probs, hypotheses[..., None], axis=-1)[..., 0]
    real = np.cumsum(hypotheses == kt.EOS_ID, axis=1) - (hypotheses == kt.EOS_ID) == 0
    return (picked * real).sum(axis=1), real.sum(axis=1)


def test_cached_greedy_equals_the_full_decoder_on_each_prefix(model, tokenizer, corpus):
    source = source_batch(tokenizer, corpus, 3)
    tokens, _ = greedy_search(
        model.decode_step, prepared(model, source, 10), 3, 10, length_penalty=0.0
    )
    tokens = to_numpy(tokens)
    decoder_inputs = np.concatenate([np.full((3, 1), kt.BOS_ID, "int32"), tokens[:, :-1]], 1)
    logits = to_numpy(model({ENCODER_INPUT: source, DECODER_INPUT: decoder_inputs}))
    logits[..., [kt.PAD_ID, kt.BOS_ID]] = -1e9
    for row in range(3):
        length = len(strip(tokens[row]))
        np.testing.assert_array_equal(logits[row, :length].argmax(-1), tokens[row, :length])


def test_beam_scores_equal_teacher_forced_rescoring(model, tokenizer, corpus):
    """Wrong cache reordering between beams would break this."""
    source = source_batch(tokenizer, corpus, 3)
    sequences, scores = beam_search(
        model.decode_step,
        prepared(model, source, 10, 4),
        3,
        10,
        beam_size=4,
        length_penalty=0.6,
        reorder_cache=model.reorder_cache,
    )
    sequences, scores = to_numpy(sequences), to_numpy(scores)
    for row in range(3):
        log_probs, lengths = teacher_forced_log_probs(
            model, np.repeat(source[row : row + 1], 4, axis=0), sequences[row]
        )
        np.testing.assert_allclose(scores[row], penalized(log_probs, lengths, 0.6), atol=1e-4)


def test_beams_sharing_their_sentence_buffers_equal_beams_with_copies(model, tokenizer, corpus):
    """The K beams of a sentence share its encoder keys/values and self-attention buffers."""
    source = source_batch(tokenizer, corpus, 3)
    shared_cache = prepared(model, source, 10, 4)
    assert tuple(shared_cache["self_attention"][0][0].shape)[:3] == (3, 4, 40)  # (B, h, T*K)
    # Reordering beams moves their slot table, never the buffers.
    reordered = model.reorder_cache(shared_cache, ops.convert_to_tensor([3, 3, 1, 0] * 3))
    assert reordered["self_attention"] is shared_cache["self_attention"]
    shared = beam_search(
        model.decode_step, shared_cache, 3, 10, beam_size=4, reorder_cache=model.reorder_cache
    )
    cache = prepared(model, source, 10)
    assert tuple(cache["cross_attention"][0][0].shape)[0] == 3
    copied = beam_search(model.decode_step, tile_beams(cache, 4), 3, 10, beam_size=4)
    np.testing.assert_array_equal(to_numpy(shared[0]), to_numpy(copied[0]))
    np.testing.assert_allclose(to_numpy(shared[1]), to_numpy(copied[1]), atol=1e-5)
    # Without `reorder_cache`, beam search would index the B-row entries by B*K rows.
    with pytest.raises(ValueError, match="reorder_cache"):
        beam_search(model.decode_step, prepared(model, source, 10, 4), 3, 10, beam_size=4)


def test_translator_batched_equals_one_at_a_time(model, tokenizer, corpus):
    translator = kt.Translator(model, tokenizer, beam_size=2, max_extra_length=6)
    texts = [source for source, _ in corpus[:5]]
    together, scores = translator.translate(texts, return_scores=True)
    alone = [translator.translate([text])[0] for text in texts]
    assert together == alone
    assert len(scores) == 5 and all(np.isfinite(scores))


def test_translator_edge_inputs(model, tokenizer, corpus, caplog, tmp_path):
    translator = kt.Translator(model, tokenizer, beam_size=1, max_extra_length=6)
    long_text = " ".join(source for source, _ in corpus[:40])
    with caplog.at_level(logging.WARNING, logger="keras_transformer"):
        result = translator.translate(["", "   ", corpus[0][0], long_text])
    assert result[:2] == ["", ""] and isinstance(result[3], str)
    assert "Truncated 1 input(s) longer than the model's max_length=48 tokens" in caplog.text

    source = tmp_path / "in.txt"
    source.write_text("".join(f"{s}\n" for s, _ in corpus[:3]), encoding="utf-8")
    output = tmp_path / "out.txt"
    lines = translator.translate_file(str(source), str(output))
    assert output.read_text(encoding="utf-8").splitlines() == lines
    assert lines == translator.translate([s for s, _ in corpus[:3]])
    with pytest.raises(FileExistsError, match="out.txt exists"):
        translator.translate_file(str(source), str(output))
