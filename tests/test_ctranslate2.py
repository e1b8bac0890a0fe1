"""CTranslate2 export: the same model and the same search, in OpenNMT's inference engine.

The converter is checked per backend against our model's own log-probabilities
(post-LN, pre-LN, untied embeddings, learned positions); the search against ours on a tiny model
trained on the built-in corpus, in one pass, since CTranslate2 does not depend
on the training backend.
"""

import os

import keras
import numpy as np
import pytest
from helpers import runs_once, to_numpy, train_briefly

import keras_transformer as kt

ctranslate2 = pytest.importorskip("ctranslate2", reason="the ctranslate2 extra")

from keras_transformer.ctranslate2 import (  # noqa: E402
    DECODING_FILE,
    CTranslate2Translator,
    export_ctranslate2,
)

VARIANTS = {
    "post-LN": {},
    "pre-LN": {"normalize_first": True},
    "untied": {"share_embeddings": False},
    "learned-positions": {"position_encoding": "learned"},
}


@pytest.fixture(scope="module")
def corpus():
    return kt.data.number_words("train", "de", size=2000, seed=3)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return kt.Tokenizer.train([text for pair in corpus for text in pair], vocab_size=200)


def pieces(tokenizer, ids):
    return [tokenizer.id_to_piece(i) for i in ids]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_export_scores_every_token_as_our_model(variant, tokenizer, corpus, tmp_path):
    config = kt.TransformerConfig.tiny(
        vocab_size=tokenizer.vocab_size, max_length=48, dropout=0.0, **VARIANTS[variant]
    )
    model = kt.build_transformer(config)
    out = export_ctranslate2(kt.Translator(model, tokenizer), str(tmp_path / "ct2"))
    pairs = corpus[:8]
    sources = tokenizer.encode([source for source, _ in pairs])
    targets = tokenizer.encode([target for _, target in pairs])
    # CTranslate2 adds EOS to the source and BOS/EOS around the target itself.
    results = ctranslate2.Translator(out).score_batch(
        [pieces(tokenizer, row[:-1]) for row in sources],
        [pieces(tokenizer, row[:-1]) for row in targets],
    )
    width_s, width_t = max(map(len, sources)), max(map(len, targets))
    encoder = np.array([row + [kt.PAD_ID] * (width_s - len(row)) for row in sources], "int32")
    decoder = np.array(
        [[kt.BOS_ID, *row[:-1]] + [kt.PAD_ID] * (width_t - len(row)) for row in targets], "int32"
    )
    logits = to_numpy(model({"encoder_token_ids": encoder, "decoder_token_ids": decoder}))
    log_probs = to_numpy(keras.ops.log_softmax(logits.astype("float64"), axis=-1))
    assert len(results) == len(pairs)
    for row, (target, result) in enumerate(zip(targets, results, strict=True)):
        ours = [log_probs[row, t, token] for t, token in enumerate(target)]
        assert result.tokens == pieces(tokenizer, target)
        np.testing.assert_allclose(result.log_probs, ours, atol=1e-4)


@pytest.fixture(scope="module")
def trained(corpus, tokenizer):
    keras.utils.set_random_seed(7)
    config = kt.TransformerConfig.tiny(
        vocab_size=tokenizer.vocab_size, max_length=48, hidden_dim=64, intermediate_dim=128,
        dropout=0.0,
    )  # fmt: skip
    model = train_briefly(
        kt.build_transformer(config), corpus, tokenizer, steps=800, learning_rate_scale=0.3,
        warmup_steps=100,
    )  # fmt: skip
    return model


@pytest.fixture(scope="module")
def test_pairs():
    return kt.data.number_words("test", "de", size=100, seed=5)


def best_ids(translator, source_ids):
    """Our search on the padded batch (each row capped by its own length): `[(ids, score)]`."""
    batch = np.full((len(source_ids), max(map(len, source_ids))), kt.PAD_ID, "int32")
    for row, ids in enumerate(source_ids):
        batch[row, : len(ids)] = ids
    sequences, scores = translator.translate_ids(batch)
    results = []
    for row in range(len(source_ids)):
        ids = [int(token) for token in sequences[row, 0] if token != kt.PAD_ID]
        results.append((ids[: ids.index(kt.EOS_ID) + 1] if kt.EOS_ID in ids else ids,
                        float(scores[row, 0])))  # fmt: skip
    return results


@runs_once
@pytest.mark.parametrize("beam_size", [1, 4])
def test_the_export_searches_as_our_translator(beam_size, trained, tokenizer, test_pairs, tmp_path):
    translator = kt.Translator(trained, tokenizer, beam_size=beam_size, max_extra_length=8)
    out = export_ctranslate2(translator, str(tmp_path / "ct2"))
    theirs = CTranslate2Translator(out)
    assert theirs.beam_size == beam_size and theirs.length_penalty == 0.6
    assert isinstance(kt.load_translator(out), CTranslate2Translator)
    # n-best lists: best first, the first the 1-best translation. (Below the best
    # they may differ from ours: CTranslate2 stops at K finished hypotheses.)
    sources = [source for source, _ in test_pairs[:20]]
    n_best = theirs.translate_n_best(sources, beam_size)
    assert [row[0][0] for row in n_best] == theirs.translate(sources)
    assert all(1 <= len(row) <= beam_size for row in n_best)
    assert all([s for _, s in row] == sorted((s for _, s in row), reverse=True) for row in n_best)
    source_ids = translator.encode([source for source, _ in test_pairs])
    ours, exported = best_ids(translator, source_ids), theirs.search(source_ids)
    equal = [a[0] == b[0] for a, b in zip(ours, exported, strict=True)]
    # Greedy: every sentence; beam 4: at least 98% (measured: 100 of 100).
    assert sum(equal) >= (len(equal) if beam_size == 1 else 0.98 * len(equal))
    same = [i for i, equal_ids in enumerate(equal) if equal_ids]
    np.testing.assert_allclose(  # measured: within 4e-6
        [exported[i][1] for i in same], [ours[i][1] for i in same], atol=1e-3
    )
    # Trained: most translations are right, so equality means something.
    translations = theirs.translate([source for source, _ in test_pairs])
    assert sum(t == ref for t, (_, ref) in zip(translations, test_pairs, strict=True)) >= 50
    assert translations == translator.translate([source for source, _ in test_pairs]) or (
        beam_size > 1
    )


@runs_once
@pytest.mark.parametrize("beam_size", [1, 4])
def test_each_sentence_keeps_its_own_cap_in_a_batch_of_many_lengths(
    beam_size, tokenizer, test_pairs, tmp_path
):
    # Untrained, so that hypotheses seldom end and most reach their cap (input
    # length + 2); a batch holds sentences of several lengths, searched under
    # the longest one's cap.
    keras.utils.set_random_seed(3)
    config = kt.TransformerConfig.tiny(vocab_size=tokenizer.vocab_size, max_length=48, dropout=0.0)
    translator = kt.Translator(
        kt.build_transformer(config), tokenizer, beam_size=beam_size, max_extra_length=2
    )
    theirs = CTranslate2Translator(export_ctranslate2(translator, str(tmp_path / "ct2")))
    source_ids = translator.encode([source for source, _ in test_pairs])
    assert len({len(ids) for ids in source_ids}) >= 5
    exported = theirs.search(source_ids)
    # Searched one by one, each under its own cap: the same hypotheses.
    alone = CTranslate2Translator(theirs.path, batch_size=1).search(source_ids)
    assert [ids for ids, _ in exported] == [ids for ids, _ in alone]
    np.testing.assert_allclose([s for _, s in exported], [s for _, s in alone], atol=1e-4)
    # Two workers of one thread, small batches finishing out of order: each result
    # still lands on its own sentence, and progress counts up to every sentence.
    parallel = CTranslate2Translator(theirs.path, batch_size=3, inter_threads=2, intra_threads=1)
    counts = []
    in_parallel = parallel.search(source_ids, progress=lambda done, total: counts.append(done))
    assert [ids for ids, _ in in_parallel] == [ids for ids, _ in alone]
    np.testing.assert_allclose([s for _, s in in_parallel], [s for _, s in alone], atol=1e-4)
    assert counts == sorted(counts) and counts[-1] == len(source_ids) and len(counts) > 10
    caps = [len(ids) + 2 for ids in source_ids]
    assert all(len(ids) <= cap for (ids, _), cap in zip(exported, caps, strict=True))
    assert sum(ids[-1:] != [kt.EOS_ID] for ids, _ in exported) >= 50  # cut at their cap
    if beam_size == 1:  # and as our greedy search
        assert [ids for ids, _ in best_ids(translator, source_ids)] == [ids for ids, _ in exported]


@runs_once
def test_int8_keeps_the_accuracy_within_two_points(trained, tokenizer, test_pairs, tmp_path):
    translator = kt.Translator(trained, tokenizer, beam_size=4, max_extra_length=8)
    sources = [source for source, _ in test_pairs]

    def accuracy(quantization):
        out = export_ctranslate2(translator, str(tmp_path / f"{quantization}"), quantization)
        translations = CTranslate2Translator(out).translate(sources)
        return np.mean([t == ref for t, (_, ref) in zip(translations, test_pairs, strict=True)])

    float32, int8 = accuracy("float32"), accuracy("int8")
    assert float32 > 0.5 and abs(float32 - int8) <= 0.02, (float32, int8)


@runs_once
def test_a_translator_leaves_the_callers_thread_count_alone(tokenizer, tmp_path):
    # PyTorch's intra-op threads are this thread's OpenMP threads, which
    # ctranslate2.Translator sets to its intra_threads where it is made.
    torch = pytest.importorskip("torch", reason="the torch extra")
    before = torch.get_num_threads()
    if before < 2:
        pytest.skip("one CPU thread: nothing to lower")
    model = kt.build_transformer(kt.TransformerConfig.tiny(vocab_size=tokenizer.vocab_size))
    out = export_ctranslate2(kt.Translator(model, tokenizer), str(tmp_path / "ct2"))
    CTranslate2Translator(out, intra_threads=1, inter_threads=2).translate(["one two"])
    assert torch.get_num_threads() == before


def test_bad_requests_are_refused_and_nothing_is_overwritten(tokenizer, tmp_path):
    model = kt.build_transformer(kt.TransformerConfig.tiny(vocab_size=tokenizer.vocab_size))
    translator = kt.Translator(model, tokenizer)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="existing"):
        export_ctranslate2(translator, str(existing))
    assert os.listdir(existing) == ["keep.txt"]
    with pytest.raises(ValueError, match="'int3'.*int8"):
        export_ctranslate2(translator, str(tmp_path / "out"), quantization="int3")
    assert not (tmp_path / "out").exists()
    with pytest.raises(FileNotFoundError):
        export_ctranslate2(str(tmp_path / "no-workdir"), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match=DECODING_FILE):
        CTranslate2Translator(str(existing))
    with pytest.raises(ValueError, match="inter_threads must be a positive integer.*=0"):
        CTranslate2Translator(str(existing), inter_threads=0)
    with pytest.raises(ValueError, match="intra_threads must be a positive integer.*=-1"):
        CTranslate2Translator(str(existing), intra_threads=-1)


@runs_once
@pytest.mark.parametrize("normalization", ["batch", "masked_batch"])
def test_batch_norm_models_are_refused_naming_the_setting(normalization, tokenizer, tmp_path):
    config = kt.TransformerConfig.tiny(vocab_size=tokenizer.vocab_size, normalization=normalization)
    translator = kt.Translator(kt.build_transformer(config), tokenizer)
    message = f"layer norms only. Received: normalization='{normalization}'"
    with pytest.raises(ValueError, match=message):
        export_ctranslate2(translator, str(tmp_path / "ct2"))
    assert not (tmp_path / "ct2").exists()


@runs_once
def test_key_dim_models_are_refused_naming_the_setting(tokenizer, tmp_path):
    """Table 3, row B's d_k != d_v: CTranslate2's heads have one size."""
    config = kt.TransformerConfig.tiny(vocab_size=tokenizer.vocab_size, key_dim=4)
    translator = kt.Translator(kt.build_transformer(config), tokenizer)
    with pytest.raises(ValueError, match="d_k = d_v .* = 8. Received: key_dim=4; export it as"):
        export_ctranslate2(translator, str(tmp_path / "ct2"))
    assert not (tmp_path / "ct2").exists()
    # key_dim equal to D / h is the default model, which exports.
    same = kt.TransformerConfig.tiny(vocab_size=tokenizer.vocab_size, key_dim=8)
    export_ctranslate2(kt.Translator(kt.build_transformer(same), tokenizer), str(tmp_path / "ok"))


@runs_once
def test_the_recurrent_baseline_is_refused_by_name(tokenizer, tmp_path):
    config = kt.RecurrentConfig(tokenizer.vocab_size, hidden_dim=16, num_layers=1)
    translator = kt.Translator(kt.RecurrentBaseline(config), tokenizer)
    with pytest.raises(ValueError, match="takes a Transformer; received a RecurrentBaseline"):
        export_ctranslate2(translator, str(tmp_path / "ct2"))
    assert not (tmp_path / "ct2").exists()
