"""ONNX export: the forward pass in ONNX Runtime equals the Keras model's.

The exporter is PyTorch's, so these run in the PyTorch pass; a model trained
on another backend reaches it through its `.keras` file, which the weights
tests of test_model.py move between backends.
"""

import keras
import numpy as np
import pytest
from helpers import random_ids, to_numpy

import keras_transformer as kt
from keras_transformer import cli, workdir

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="the ONNX exporter is PyTorch's: the PyTorch pass"
)
ort = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install '.[onnx]'")


def ours_and_onnx(model, out_dir, inputs):
    session = ort.InferenceSession(f"{out_dir}/model.onnx", providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, inputs)
    return to_numpy(model(inputs, training=False)), logits


@pytest.mark.parametrize(
    "overrides",
    [{}, {"normalize_first": True, "share_embeddings": False}, {"key_dim": 4}],
    ids=["paper", "pre-LN", "key-dim"],  # key_dim: Table 3, row B's d_k (4) != d_v (8)
)
def test_onnx_logits_equal_the_models(overrides, tmp_path):
    config = kt.TransformerConfig.tiny(vocab_size=40, max_length=16, **overrides)
    model = kt.build_transformer(config)
    out = kt.export_onnx(model, str(tmp_path / "onnx"))
    rng = np.random.default_rng(0)
    # Shapes the export never saw: B, S and T are dynamic, padding masked, T = 1 too.
    for batch, source, target in ((3, 9, 5), (1, 16, 1), (5, 2, 16)):
        inputs = {
            "encoder_token_ids": random_ids(rng, batch, source, 40, pad_tail=source // 3),
            "decoder_token_ids": random_ids(rng, batch, target, 40),
        }
        ours, theirs = ours_and_onnx(model, out, inputs)
        assert theirs.shape == (batch, target, 40)
        np.testing.assert_allclose(theirs, ours, atol=1e-4)


def test_the_command_exports_a_work_directory_and_never_overwrites(tmp_path, capsys):
    work = str(tmp_path / "run")
    config = kt.TransformerConfig.tiny(vocab_size=60, max_length=16)
    pairs = kt.data.number_words("train", "de", size=200, seed=0)
    tokenizer = kt.Tokenizer.train([text for pair in pairs for text in pair], vocab_size=60)
    workdir.write_config(
        work, {"model": config, "training": kt.TrainingConfig(), "decoding": kt.DecodingConfig()}
    )
    model = kt.build_transformer(config)
    model.save(workdir.path(work, workdir.MODEL))
    tokenizer.save(workdir.path(work, workdir.TOKENIZER))

    out = tmp_path / "onnx"
    assert cli.main(["export", "--workdir", work, "--out", str(out), "--format", "onnx"]) == 0
    assert kt.Tokenizer.load(str(out / "tokenizer.model")).encode(["sieben"]) == (
        tokenizer.encode(["sieben"])
    )
    ids = np.asarray(tokenizer.encode(["seven hundred"]), "int32")
    inputs = {"encoder_token_ids": ids, "decoder_token_ids": ids[:, :3]}
    ours, theirs = ours_and_onnx(model, out, inputs)
    np.testing.assert_allclose(theirs, ours, atol=1e-4)

    before = (out / "model.onnx").read_bytes()
    capsys.readouterr()
    assert cli.main(["export", "--workdir", work, "--out", str(out), "--format", "onnx"]) == 2
    assert "exists" in capsys.readouterr().err
    assert (out / "model.onnx").read_bytes() == before
    for flags, says in (
        (["--backend", "jax"], "exports on the PyTorch backend, not --backend jax"),
        (["--quantization", "int8"], "--quantization: only for --format ctranslate2"),
        (["--jit-compile"], "--jit-compile: only for --format savedmodel"),
    ):
        other = ["--out", str(tmp_path / "other")]
        assert cli.main(["export", "--workdir", work, *other, "--format", "onnx", *flags]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
