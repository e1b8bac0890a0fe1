import dataclasses

import pytest
from helpers import run_python, runs_once

import keras_transformer as kt


def test_presets_follow_table_3():
    base = kt.TransformerConfig.base(vocab_size=37000)
    assert (base.num_layers, base.hidden_dim, base.intermediate_dim, base.num_heads) == (
        6,
        512,
        2048,
        8,
    )
    assert base.dropout == 0.1 and base.head_dim == 64
    big = kt.TransformerConfig.big(vocab_size=37000)
    assert (big.num_layers, big.hidden_dim, big.intermediate_dim, big.num_heads) == (
        6,
        1024,
        4096,
        16,
    )
    assert big.dropout == 0.3
    assert kt.TransformerConfig.preset("small", 8000, num_layers=2).num_layers == 2


@pytest.mark.parametrize("cls", [kt.TransformerConfig, kt.TrainingConfig, kt.DecodingConfig])
def test_json_round_trip(cls):
    record = cls(vocab_size=123, num_layers=1) if cls is kt.TransformerConfig else cls()
    assert cls.from_json(record.to_json()) == record


def test_frozen():
    config = kt.TransformerConfig.tiny(vocab_size=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.hidden_dim = 3


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(hidden_dim=250, num_heads=8), "hidden_dim=250, num_heads=8"),
        (dict(vocab_size=0), "vocab_size=0"),
        (dict(dropout=1.5), "dropout=1.5"),
        (dict(num_layers="6"), "num_layers='6'"),
        (dict(share_embeddings="yes"), "share_embeddings='yes'"),
    ],
)
def test_invalid_config_names_field_and_value(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        kt.TransformerConfig(**{"vocab_size": 100, **changes})


def test_unknown_field_is_refused():
    with pytest.raises(ValueError, match="hiden_dim"):
        kt.TransformerConfig.from_dict({"vocab_size": 10, "hiden_dim": 3})


def test_override_converts_types_and_refuses_unknown_keys():
    config = kt.TransformerConfig.tiny(vocab_size=10)
    changed = config.override(["num_layers=3", "dropout=0.2", "normalize_first=true"])
    assert (changed.num_layers, changed.dropout, changed.normalize_first) == (3, 0.2, True)
    with pytest.raises(ValueError, match="Unknown TransformerConfig key 'layers'"):
        config.override(["layers=3"])
    with pytest.raises(ValueError, match="num_layers expects a value of type int.*'three'"):
        config.override(["num_layers=three"])
    with pytest.raises(ValueError, match="Expected key=value"):
        config.override(["num_layers"])


@runs_once
def test_the_model_side_imports_without_tensorflow():
    """On JAX and PyTorch only the input pipeline and export load TensorFlow."""
    code = (
        "import sys, keras_transformer as kt\n"
        "kt.build_transformer(kt.TransformerConfig.tiny(vocab_size=20))\n"
        "assert 'tensorflow' not in sys.modules, 'the model side imported TensorFlow'\n"
        "kt.data.make_dataset\n"
        "assert 'tensorflow' in sys.modules\n"
    )
    run_python(code, "jax")
