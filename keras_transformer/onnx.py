"""The model's forward pass as ONNX: token ids in, logits out.

`export_onnx` writes `OUT/model.onnx` (inputs `encoder_token_ids` int32
`(B, S)` and `decoder_token_ids` int32 `(B, T)`, output `logits` float32
`(B, T, V)`, B, S and T dynamic up to `max_length`) and our SentencePiece
model beside it. The search is not in the graph: ONNX Runtime computes one
forward pass, and a caller decodes as it likes (or uses the SavedModel or
the CTranslate2 export, which search).

The exporter is PyTorch's (`torch.onnx.export(..., dynamo=True)`), so this
runs on the PyTorch backend: a model trained on another backend exports
through its `.keras` file, and `keras-transformer export --format onnx`
chooses the PyTorch backend itself. (Keras's own `model.export(format="onnx")`
does not export this model: its PyTorch path traces the fused attention into a
graph ONNX refuses, and its TensorFlow path, through tf2onnx, writes a graph
that ONNX Runtime cannot reshape.)
"""

import os
import tempfile

import numpy as np

from keras_transformer.model_inputs import DECODER_INPUT, ENCODER_INPUT
from keras_transformer.tokenization import EOS_ID

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.model"
OUTPUT = "logits"


def export_onnx(model_or_workdir, out_dir, tokenizer=None):
    """Writes `out_dir/model.onnx` and `out_dir/tokenizer.model`; returns `out_dir`.

    Args:
        model_or_workdir: a `Transformer`, a `Translator` (its model and
            tokenizer), or a training work directory (its `model.keras`).
        out_dir: str. A directory that must not exist yet; it is written
            beside itself first and renamed at the end.
        tokenizer: the `Tokenizer` to write beside a bare model; optional.
    """
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(
            "ONNX export runs on the PyTorch backend (KERAS_BACKEND=torch); "
            f"this process runs {keras.backend.backend()}. A model trained on another "
            "backend exports through its .keras file; `keras-transformer export "
            "--format onnx` chooses the backend itself."
        )
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir):
        raise FileExistsError(f"{out_dir} exists; an export never replaces a directory")
    model, tokenizer = _model_and_tokenizer(model_or_workdir, tokenizer)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tmp-onnx-", dir=parent) as scratch:
        staging = os.path.join(scratch, "model")
        os.makedirs(staging)
        _write_graph(model, os.path.join(staging, MODEL_FILE))
        if tokenizer is not None:
            tokenizer.save(os.path.join(staging, TOKENIZER_FILE))
        if os.path.exists(out_dir):
            raise FileExistsError(f"{out_dir} appeared during the export; it was left as it was")
        os.rename(staging, out_dir)
    return out_dir


def _write_graph(model, path):
    # The PyTorch backend's exporter, on a module taking the two inputs by position.
    import torch

    class Forward(torch.nn.Module):
        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

        def forward(self, encoder_token_ids, decoder_token_ids):
            inputs = {ENCODER_INPUT: encoder_token_ids, DECODER_INPUT: decoder_token_ids}
            return self.transformer(inputs, training=False)

    limit = model.config.max_length
    # An example of each input, of different lengths (equal ones would tie S to
    # T); the traced graph keeps B, S and T symbolic.
    examples = tuple(
        torch.from_numpy(np.full((2, length), EOS_ID + 1, dtype="int32")) for length in (3, 4)
    )
    batch = torch.export.Dim("batch")
    source, target = (torch.export.Dim(name, min=1, max=limit) for name in ("source", "target"))
    torch.onnx.export(
        Forward(model).eval(),
        examples,
        path,
        input_names=[ENCODER_INPUT, DECODER_INPUT],
        output_names=[OUTPUT],
        dynamic_shapes={
            "encoder_token_ids": {0: batch, 1: source},
            "decoder_token_ids": {0: batch, 1: target},
        },
        dynamo=True,
        verbose=False,
    )


def _model_and_tokenizer(model_or_workdir, tokenizer):
    if isinstance(model_or_workdir, (str, os.PathLike)):
        from keras_transformer.decoding import Translator

        model_or_workdir = Translator.from_workdir(model_or_workdir)
    if hasattr(model_or_workdir, "tokenizer"):  # a Translator
        return model_or_workdir.model, model_or_workdir.tokenizer
    return model_or_workdir, tokenizer
