import dataclasses
import inspect
import types

import keras
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


def test_defaults_are_the_papers():
    """Every number and choice the paper gives, where a user meets it by default."""
    base = kt.TransformerConfig.base(vocab_size=37000)
    assert base == kt.TransformerConfig(vocab_size=37000)
    sizes = (base.num_layers, base.hidden_dim, base.intermediate_dim, base.num_heads)
    assert sizes == (6, 512, 2048, 8)  # Table 3, "base"
    assert (base.dropout, base.attention_dropout) == (0.1, 0.0)  # §5.4; no attention dropout
    assert base.share_embeddings and not base.normalize_first  # §3.4; post-LN, §3.1
    assert (base.normalization, base.position_encoding) == ("layer", "sinusoidal")  # §3.1, §3.5
    # §5.3, §5.4.
    training = kt.TrainingConfig()
    assert (training.label_smoothing, training.warmup_steps) == (0.1, 4000)
    assert training.learning_rate_scale == 1.0
    assert (training.beta_1, training.beta_2, training.epsilon) == (0.9, 0.98, 1e-9)
    optimizer = kt.create_optimizer(512)
    assert (optimizer.beta_1, optimizer.beta_2, optimizer.epsilon) == (0.9, 0.98, 1e-9)
    # The schedule's first step: d_model^-0.5 * 1 * warmup_steps^-1.5.
    assert float(optimizer.learning_rate) == pytest.approx(512**-0.5 * 4000**-1.5, rel=1e-5)
    schedule = kt.TransformerSchedule(512)
    assert (schedule.warmup_steps, schedule.scale) == (4000, 1.0)
    # The peak, at the paper's step 4000 (Keras' iteration 3999).
    assert float(schedule(3999)) == pytest.approx((512 * 4000) ** -0.5, rel=1e-5)
    assert kt.LabelSmoothedCrossEntropy().label_smoothing == 0.1
    # §6.1: beam 4, alpha 0.6, output length at most input length + 50.
    assert kt.DecodingConfig() == kt.DecodingConfig(
        beam_size=4, length_penalty=0.6, max_extra_length=50
    )
    model_stand_in = types.SimpleNamespace(variables=[])
    assert kt.Translator(model_stand_in, None).decoding_config == kt.DecodingConfig()
    search = inspect.signature(kt.decoding.search.beam_search).parameters
    assert (search["beam_size"].default, search["length_penalty"].default) == (4, 0.6)
    # The built model: one shared embedding matrix, scaled by sqrt(d_model) (§3.4), and
    # fixed sinusoids of base 10000 (§3.5).
    model = kt.build_transformer(kt.TransformerConfig.tiny(vocab_size=20))
    compiled = kt.compile_model(model)
    assert compiled.loss.label_smoothing == 0.1
    assert compiled.optimizer.get_config()["learning_rate"]["config"]["warmup_steps"] == 4000
    assert model.token_embedding.scale and not hasattr(model, "output_projection")
    assert isinstance(model.position_encoding, kt.layers.SinusoidalPositionEncoding)
    assert model.position_encoding.max_wavelength == 10000.0
    assert not model.position_encoding.weights
    assert not any(layer.normalize_first for layer in model.encoder_layers + model.decoder_layers)
    encoder_layer = kt.layers.TransformerEncoderLayer()
    assert (encoder_layer.dropout, encoder_layer.normalize_first) == (0.1, False)
    assert encoder_layer.activation is keras.activations.relu  # §3.3


@pytest.mark.parametrize("cls", [kt.TransformerConfig, kt.TrainingConfig, kt.DecodingConfig])
def test_json_round_trip(cls):
    record = cls(vocab_size=123, num_layers=1) if cls is kt.TransformerConfig else cls()
    assert cls.from_json(record.to_json()) == record


def test_a_decoding_config_written_before_still_loads():
    # The "decoding" section of a work directory's config.json, as 0.2.0 wrote it.
    stored = '{"beam_size": 2, "length_penalty": 1.0, "max_extra_length": 20}'
    assert kt.DecodingConfig.from_json(stored) == kt.DecodingConfig(2, 1.0, 20)


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
        (dict(key_dim=0), "key_dim=0"),
        (dict(key_dim=16.0), "key_dim=16.0"),
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


def test_key_dim_is_set_from_the_command_line():
    """`--set model.key_dim=16` (Table 3, row B): an `int | None` field."""
    from keras_transformer.workdir import apply_overrides

    configs = {"model": kt.TransformerConfig.tiny(vocab_size=10), "training": kt.TrainingConfig()}
    assert configs["model"].key_dim is None
    changed = apply_overrides(configs, ["model.key_dim=16"])["model"]
    assert changed.key_dim == 16 and isinstance(changed.key_dim, int)
    assert changed.override(["key_dim=none"]).key_dim is None
    assert changed.override(["key_dim=null"]).key_dim is None
    with pytest.raises(ValueError, match="key_dim expects a value of type int or None.*'sixteen'"):
        changed.override(["key_dim=sixteen"])
    with pytest.raises(ValueError, match="key_dim=0"):
        apply_overrides(configs, ["model.key_dim=0"])
    assert kt.TransformerConfig.from_json(changed.to_json()) == changed


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


@runs_once
def test_the_shared_checks_take_numpy_numbers_and_refuse_bools_naming_the_value():
    import numpy as np

    from keras_transformer.checks import check_fraction, check_positive_integer

    check_positive_integer(num_layers=np.int64(3))
    check_fraction(dropout=np.float32(0.1))
    with pytest.raises(
        ValueError, match="num_layers must be a positive integer. Received: num_layers=True"
    ):
        check_positive_integer(num_layers=True)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\). Received: dropout='high'"):
        check_fraction(dropout="high")
