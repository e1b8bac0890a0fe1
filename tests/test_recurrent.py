"""The LSTM-attention baseline: the Transformer's interface, trained and decoded alike."""

import keras
import numpy as np
import pytest
from helpers import random_ids, runs_once, to_numpy
from test_decoding import check_beam_scores_against_rescoring, prepared, source_batch

import keras_transformer as kt
from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT
from keras_transformer.recurrent import RecurrentBaseline, RecurrentConfig


@pytest.fixture(scope="module")
def model(tokenizer):
    keras.utils.set_random_seed(3)
    config = RecurrentConfig(tokenizer.vocab_size, hidden_dim=32, num_layers=2, dropout=0.0)
    return RecurrentBaseline(config)


def test_cached_steps_equal_the_full_decoder(model):
    rng = np.random.default_rng(0)
    source = random_ids(rng, 3, 7, model.config.vocab_size, pad_tail=2)
    target = random_ids(rng, 3, 6, model.config.vocab_size)
    full = to_numpy(model({ENCODER_INPUT: source, DECODER_INPUT: target}))
    cache = prepared(model, source, 6)
    for index in range(6):
        logits, cache = model.decode_step(target[:, index], cache, index)
        np.testing.assert_allclose(to_numpy(logits), full[:, index], atol=1e-4)


def test_beam_scores_equal_teacher_forced_rescoring(model, tokenizer, corpus):
    """Beams that took another beam's LSTM state wrongly would break this."""
    check_beam_scores_against_rescoring(model, source_batch(tokenizer, corpus, 3))


def test_trains_with_fit_translates_and_round_trips(tokenizer, corpus, tmp_path):
    config = RecurrentConfig(tokenizer.vocab_size, hidden_dim=32, num_layers=1, max_length=32)
    model = RecurrentBaseline(config)
    kt.compile_model(model, kt.TrainingConfig(warmup_steps=10))
    dataset = kt.data.make_dataset(corpus, tokenizer, max_tokens=512, max_length=32, buckets=(32,))
    history = model.fit(dataset.take(12), epochs=2, verbose=0, shuffle=False)  # tf.data shuffles
    losses = history.history["loss"]
    assert losses[1] < losses[0], losses
    texts = [source for source, _ in corpus[:4]]
    translator = kt.Translator(model, tokenizer, beam_size=2, max_extra_length=6)
    translations, scores = translator.translate(texts, return_scores=True)
    assert len(translations) == 4 and all(np.isfinite(scores))
    path = str(tmp_path / "baseline.keras")
    model.save(path)
    restored = keras.saving.load_model(path, compile=False)
    assert isinstance(restored, RecurrentBaseline) and restored.config == config
    again = kt.Translator(restored, tokenizer, beam_size=2, max_extra_length=6)
    assert again.translate(texts) == translations


@runs_once
def test_small_has_about_the_transformer_smalls_parameters():
    baseline = RecurrentBaseline(RecurrentConfig.small(8000)).count_params()
    transformer = kt.build_transformer(kt.TransformerConfig.small(8000)).count_params()
    assert 0.97 < baseline / transformer < 1.05, (baseline, transformer)


@runs_once
def test_bad_configs_name_the_value():
    with pytest.raises(
        ValueError, match="hidden_dim must be a positive integer. Received: hidden_dim=0"
    ):
        RecurrentConfig(100, hidden_dim=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\). Received: .*1.5"):
        RecurrentConfig(100, dropout=1.5)
