import collections
import gzip
import io
import logging

import numpy as np
import pytest
import sentencepiece
import tensorflow as tf
from helpers import runs_once
from num2words import num2words

import keras_transformer as kt
from keras_transformer.data import CorpusError, number_words, read_parallel, read_tsv
from keras_transformer.data.number_words import sample_numbers, split_of
from keras_transformer.data.pipeline import bucket_boundaries
from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT


@pytest.fixture(scope="module")
def pairs():
    return number_words("train", "de", size=1500, seed=3)


@pytest.fixture(scope="module")
def tokenizer(pairs):
    return kt.Tokenizer.train([text for pair in pairs for text in pair], vocab_size=300)


def write(path, data):
    path.write_bytes(data)
    return str(path)


# --- readers ---------------------------------------------------------------


def test_read_parallel_plain_and_gzip(tmp_path):
    source = write(tmp_path / "a.en", b"one\ntwo\n")
    target = tmp_path / "a.de.gz"
    with gzip.open(target, "wb") as file:
        file.write(b"eins\nzwei\n")
    assert read_parallel(source, str(target)) == [("one", "eins"), ("two", "zwei")]


def test_missing_file_names_its_path(tmp_path):
    source = write(tmp_path / "a.en", b"one\n")
    with pytest.raises(CorpusError, match="No such corpus file: .*missing.de"):
        read_parallel(source, str(tmp_path / "missing.de"))


def test_misaligned_files_name_both_counts(tmp_path):
    source = write(tmp_path / "a.en", b"one\ntwo\nthree\n")
    target = write(tmp_path / "a.de", b"eins\nzwei\n")
    with pytest.raises(CorpusError, match=r"a.en has 3 lines but .*a.de has 2"):
        read_parallel(source, target)


def test_invalid_utf8_names_file_and_line(tmp_path):
    source = write(tmp_path / "a.en", b"one\ntwo\n")
    target = write(tmp_path / "a.de", b"eins\nzw\xffei\n")
    with pytest.raises(CorpusError, match=r"a.de, line 2: not valid UTF-8"):
        read_parallel(source, target)


def test_empty_sides_are_skipped_and_counted(tmp_path, caplog):
    source = write(tmp_path / "a.en", b"one\n\nthree\nfour\n")
    target = write(tmp_path / "a.de", b"eins\nzwei\n  \nvier\n")
    with caplog.at_level(logging.WARNING, logger="keras_transformer"):
        assert read_parallel(source, target) == [("one", "eins"), ("four", "vier")]
    assert "Skipped 2 pair(s) with an empty side; the first at" in caplog.text
    assert "a.en, line 2" in caplog.text


def test_read_tsv_with_attribution_and_bad_line(tmp_path):
    path = write(tmp_path / "spa.txt", b"Go.\tVe.\tCC-BY 2.0 (France)\nHi.\tHola.\n")
    assert read_tsv(path) == [("Go.", "Ve."), ("Hi.", "Hola.")]
    bad = write(tmp_path / "bad.txt", b"Go.\tVe.\nno tab here\n")
    with pytest.raises(CorpusError, match=r"bad.txt, line 2: expected at least 2"):
        read_tsv(bad)


# --- the built-in corpus ---------------------------------------------------


def test_number_words_equal_num2words_and_are_deterministic():
    pairs = number_words("valid", "de", size=50, seed=1)
    assert pairs == number_words("valid", "de", size=50, seed=1)
    assert pairs != number_words("valid", "de", size=50, seed=2)
    numbers = sample_numbers("valid", 50, seed=1)
    assert pairs == [(num2words(n, lang="en"), num2words(n, lang="de")) for n in numbers]
    assert number_words("test", "fr", size=3, seed=1)[0][1] == num2words(
        sample_numbers("test", 3, seed=1)[0], lang="fr"
    )
    assert (
        dict(number_words("train", "de", size=2000))[num2words(321, lang="en")]
        == ("dreihunderteinundzwanzig")
        or split_of(321) != "train"
    )


def test_splits_are_disjoint_and_train_has_50000():
    train = set(sample_numbers("train", 50_000))
    valid, test = set(sample_numbers("valid", 1000)), set(sample_numbers("test", 1000))
    assert len(train) == 50_000 and len(valid) == len(test) == 1000
    assert not train & valid and not train & test and not valid & test
    with pytest.raises(ValueError, match="split must be one of"):
        sample_numbers("dev", 3)
    with pytest.raises(ValueError, match="target_lang must be one of"):
        number_words("test", "it", size=3)


# --- tokenizer -------------------------------------------------------------


def test_special_ids_are_fixed(tokenizer):
    pieces = [tokenizer.id_to_piece(i) for i in (kt.PAD_ID, kt.UNK_ID, kt.BOS_ID, kt.EOS_ID)]
    assert pieces == ["<pad>", "<unk>", "<s>", "</s>"]
    ids = tokenizer.encode("three hundred")
    assert ids[-1] == kt.EOS_ID and kt.PAD_ID not in ids and kt.BOS_ID not in ids


def test_round_trip(tokenizer, pairs):
    texts = [text for pair in pairs[:50] for text in pair]
    assert len(texts) == 100
    for text in texts:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode([*tokenizer.encode("two"), 7, 8]) == "two"  # stops at EOS


def test_python_and_graph_ids_agree(tokenizer, pairs):
    texts = [text for pair in pairs[:20] for text in pair]
    graph = tokenizer.graph_tokenizer()
    in_graph = tf.function(lambda batch: graph(batch))(tf.constant(texts))
    python_ids = tokenizer.encode(texts, add_eos=False)
    assert [row.numpy().tolist() for row in in_graph] == python_ids


def test_save_load_and_no_overwrite(tokenizer, tmp_path, pairs):
    path = str(tmp_path / "tokenizer.model")
    tokenizer.save(path)
    with pytest.raises(FileExistsError, match="tokenizer.model exists"):
        tokenizer.save(path)
    texts = [source for source, _ in pairs[:30]]
    assert kt.Tokenizer.load(path).encode(texts) == tokenizer.encode(texts)
    with pytest.raises(FileNotFoundError, match="No tokenizer model at"):
        kt.Tokenizer.load(str(tmp_path / "nothing.model"))


def test_foreign_special_ids_are_refused():
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["a b c d e f"] * 20),
        model_writer=model,
        vocab_size=12,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    with pytest.raises(ValueError, match="special ids differ"):
        kt.Tokenizer(model.getvalue())


# --- the pipeline ----------------------------------------------------------


def batches(dataset):
    return [(x[ENCODER_INPUT].numpy(), x[DECODER_INPUT].numpy(), y.numpy()) for x, y in dataset]


def test_batches_respect_the_token_budget_and_the_buckets(tokenizer, pairs):
    max_tokens, max_length = 256, 64
    dataset = kt.data.make_dataset(pairs, tokenizer, max_tokens=max_tokens, max_length=max_length)
    result = batches(dataset)
    assert len(result) > 0
    boundaries = bucket_boundaries(max_length)
    for source, _, labels in result:
        assert source.size <= max_tokens and labels.size <= max_tokens
        assert source.shape[1] in boundaries and labels.shape[1] in boundaries

    # Shapes: at most one per (source bucket, target bucket) pair present in the data.
    def bucket(n):
        return min(b for b in boundaries if b >= n)

    lengths = [
        (len(s), len(t))
        for s, t in zip(*(tokenizer.encode(side) for side in zip(*pairs, strict=True)), strict=True)
    ]
    bucket_pairs = {(bucket(s), bucket(t)) for s, t in lengths}
    shapes = {(source.shape, labels.shape) for source, _, labels in result}
    assert len(shapes) <= len(bucket_pairs) < len(set(lengths))


def test_labels_are_decoder_inputs_shifted_by_one(tokenizer, pairs):
    # Every pair, in several batches: the default budget makes one partial
    # batch of 200 short pairs, which drop_remainder would discard.
    subset = pairs[:200]
    result = batches(
        kt.data.make_dataset(subset, tokenizer, max_tokens=256, max_length=64, drop_remainder=False)
    )
    assert len(result) > 1
    for _, decoder_inputs, labels in result:
        assert decoder_inputs.shape == labels.shape
        real = labels != kt.PAD_ID
        # Teacher forcing: BOS, then the labels but the last (EOS), then PAD.
        ends = real.sum(axis=1) - 1
        assert (labels[np.arange(len(labels)), ends] == kt.EOS_ID).all()
        expected = np.where(labels == kt.EOS_ID, kt.PAD_ID, labels)
        expected = np.concatenate([np.full((len(labels), 1), kt.BOS_ID), expected[:, :-1]], axis=1)
        np.testing.assert_array_equal(decoder_inputs, expected)
    targets = [tokenizer.decode(row) for _, _, labels in result for row in labels]
    assert collections.Counter(targets) == collections.Counter(target for _, target in subset)


def test_same_seed_same_batches_and_every_pair_once(tokenizer, pairs):
    def run(seed):
        dataset = kt.data.make_dataset(pairs, tokenizer, seed=seed, drop_remainder=False)
        return batches(dataset)

    first, again, other = run(5), run(5), run(6)
    dataset = kt.data.make_dataset(pairs, tokenizer, seed=5, drop_remainder=False)
    assert int(dataset.cardinality()) == len(first)
    assert int(kt.data.make_dataset(pairs, tokenizer).cardinality()) == len(
        batches(kt.data.make_dataset(pairs, tokenizer))
    )
    assert len(first) == len(again) > 0
    for a, b in zip(first, again, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    assert any(
        a[0].shape != b[0].shape or (a[0] != b[0]).any() for a, b in zip(first, other, strict=False)
    )
    sources = collections.Counter(tokenizer.decode(row) for source, _, _ in first for row in source)
    assert sources == collections.Counter(source for source, _ in pairs)


def test_over_long_pairs_are_dropped_and_counted(tokenizer, pairs, caplog):
    with caplog.at_level(logging.INFO, logger="keras_transformer"):
        dataset = kt.data.make_dataset(
            pairs, tokenizer, max_length=12, max_tokens=64, drop_remainder=False
        )
    kept = sum(len(labels) for _, _, labels in batches(dataset))
    dropped = len(pairs) - kept
    assert kept > 0 and dropped > 0
    assert f"{kept} pairs kept, {dropped} dropped as longer than 12 tokens" in caplog.text
    with pytest.raises(ValueError, match="max_tokens must hold one sequence"):
        kt.data.make_dataset(pairs, tokenizer, max_tokens=10, max_length=12)


@runs_once
def test_batches_for_two_replicas_hold_a_budget_each_and_divide_evenly(tokenizer, pairs):
    max_tokens, max_length = 256, 64
    dataset = kt.data.make_dataset(pairs, tokenizer, max_tokens, max_length, replicas=2)
    result = batches(dataset)
    assert int(dataset.cardinality()) == len(result) > 0
    for source, _, labels in result:
        # Each replica's half is the batch one device gets from the budget.
        assert len(labels) == 2 * max(max_tokens // max(source.shape[1], labels.shape[1]), 1)
    # Evaluation sees every pair; a last, partial batch gets empty rows to an even count.
    subset = pairs[:301]
    dataset = kt.data.make_dataset(subset, tokenizer, max_tokens, max_length, shuffle=False,
                                   drop_remainder=False, replicas=2)  # fmt: skip
    result = batches(dataset)
    assert all(len(labels) % 2 == 0 for _, _, labels in result)
    rows = [(source, labels) for sources, _, batch_labels in result
            for source, labels in zip(sources, batch_labels, strict=True)]  # fmt: skip
    empty = [(source == kt.PAD_ID).all() and (labels == kt.PAD_ID).all() for source, labels in rows]
    assert 0 < sum(empty) < len(result)
    sources = [tokenizer.decode(source) for (source, _), blank in zip(rows, empty, strict=True)
               if not blank]  # fmt: skip
    assert collections.Counter(sources) == collections.Counter(source for source, _ in subset)


def test_dataset_feeds_model_fit(tokenizer, pairs):
    config = kt.TransformerConfig.tiny(vocab_size=tokenizer.vocab_size)
    model = kt.compile_model(kt.build_transformer(config), kt.TrainingConfig(warmup_steps=10))
    dataset = kt.data.make_dataset(pairs[:300], tokenizer, max_tokens=512, max_length=64)
    assert int(dataset.cardinality()) > 0  # drop_remainder: a small corpus can make none
    history = model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])


def test_an_epoch_has_the_same_order_wherever_the_stream_starts(tokenizer, pairs):
    def stream(first, end):
        return batches(kt.data.make_dataset(pairs, tokenizer, seed=5, epochs=(first, end)))

    def same(a, b):
        return all(
            x.shape == y.shape and (x == y).all()
            for one, other in zip(a, b, strict=True)
            for x, y in zip(one, other, strict=True)
        )

    whole = stream(0, 3)
    per_epoch = len(whole) // 3
    assert per_epoch > 0
    assert len(whole) == 3 * per_epoch == int(kt.data.make_dataset(
        pairs, tokenizer, seed=5, epochs=(0, 3)).cardinality())  # fmt: skip
    # A resumed run builds its stream from the epoch it stopped in.
    assert same(whole[per_epoch:], stream(1, 3))
    assert same(whole[2 * per_epoch :], stream(2, 3))
    # Each epoch is shuffled anew.
    assert not same(whole[:per_epoch], whole[per_epoch : 2 * per_epoch])
