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
