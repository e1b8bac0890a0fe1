"""Search over the model's step function, and the `Translator` (§6.1)."""

import logging
import types

import keras
import numpy as np
import pytest
from decoding_helpers import VOCAB, A, B, C, D, log_softmax, penalized, strip
from helpers import to_numpy
from keras import ops

import keras_transformer as kt
from keras_transformer.decoding import beam_search, greedy_search, tile_beams
from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT

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
    with pytest.raises(ValueError, match="inter_threads must be a positive integer.*=0"):
        kt.Translator(model, None, inter_threads=0)


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


# `corpus` and `tokenizer`: conftest.py's.


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
    check_beam_scores_against_rescoring(model, source_batch(tokenizer, corpus, 3))


def check_beam_scores_against_rescoring(model, source):
    """Beam 4's hypotheses, each scored by the full decoder: the search's scores."""
    batch = len(source)
    sequences, scores = beam_search(
        model.decode_step,
        prepared(model, source, 10, 4),
        batch,
        10,
        beam_size=4,
        length_penalty=0.6,
        reorder_cache=model.reorder_cache,
    )
    sequences, scores = to_numpy(sequences), to_numpy(scores)
    for row in range(batch):
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


def test_batches_searched_at_once_keep_every_result_in_its_place(model, tokenizer, corpus):
    texts = [source for source, _ in corpus[:12]]
    assert len({len(ids) for ids in tokenizer.encode(texts)}) >= 3

    def run(inter_threads):
        translator = kt.Translator(
            model, tokenizer, beam_size=2, max_extra_length=6, batch_size=2,
            inter_threads=inter_threads,
        )  # fmt: skip
        counts = []
        n_best = translator.translate_n_best(texts, 2, lambda done, total: counts.append(done))
        return n_best, counts

    (one, one_counts), (three, three_counts) = run(1), run(3)
    texts_of = lambda n_best: [[text for text, _ in row] for row in n_best]  # noqa: E731
    assert texts_of(three) == texts_of(one)
    np.testing.assert_allclose(
        [score for row in three for _, score in row], [score for row in one for _, score in row]
    )
    assert three_counts == one_counts == [2, 4, 6, 8, 10, 12]


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
