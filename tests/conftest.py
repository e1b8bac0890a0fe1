"""Shared fixtures. The suite runs once per backend: KERAS_BACKEND=... pytest tests/."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

import keras_transformer as kt  # noqa: E402


def pytest_report_header(config):
    return f"keras backend: {keras.backend.backend()} (keras {keras.__version__})"


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def tiny_config():
    return kt.TransformerConfig.tiny(vocab_size=40, dropout=0.0)


@pytest.fixture(scope="module")
def corpus():
    """Number words, English -> German; a test module may define its own."""
    return kt.data.number_words("train", "de", size=400, seed=5)


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return kt.Tokenizer.train([text for pair in corpus for text in pair], vocab_size=120)
