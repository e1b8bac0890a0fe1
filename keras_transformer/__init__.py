"""keras-transformer: the Transformer of "Attention Is All You Need" on Keras 3.

Shapes, in every docstring and comment of the package:

    B  batch: sentences            K  beams per sentence (B*K rows in a search)
    S  source length               T  target length (T_max: a decoding buffer's)
    D  hidden_dim (d_model)        F  intermediate_dim (d_ff)
    h  num_heads                   d  head_dim = D / h (d_k = d_v)
    V  vocabulary size             L  layers per stack (N in the paper)

Attention's two sides are Tq (queries) and Tk (keys): T or S.

The input pipeline (`data`), export and serving need TensorFlow; they are
imported on first use, so that the layers and the model load without it on
JAX and PyTorch.
"""

import importlib

from keras_transformer import decoding, layers, workdir
from keras_transformer.config import DecodingConfig, TrainingConfig, TransformerConfig
from keras_transformer.decoding import Translator
from keras_transformer.losses import LabelSmoothedCrossEntropy
from keras_transformer.metrics import MaskedAccuracy, Perplexity
from keras_transformer.model import Transformer, build_transformer
from keras_transformer.schedules import TransformerSchedule
from keras_transformer.tokenization import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from keras_transformer.training import compile_model, create_optimizer

__version__ = "0.2.0"

# Name -> the module that defines it, imported when the name is first read.
_LAZY = {
    "data": "keras_transformer.data",
    "export": "keras_transformer.export",
    "serving": "keras_transformer.serving",
    "export_saved_model": "keras_transformer.export",
    "load_translator": "keras_transformer.serving",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if module.__name__.endswith(f".{name}") else getattr(module, name)


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "UNK_ID",
    "DecodingConfig",
    "LabelSmoothedCrossEntropy",
    "MaskedAccuracy",
    "Perplexity",
    "TrainingConfig",
    "Transformer",
    "TransformerConfig",
    "TransformerSchedule",
    "Tokenizer",
    "Translator",
    "build_transformer",
    "compile_model",
    "create_optimizer",
    "data",
    "export_saved_model",
    "load_translator",
    "decoding",
    "layers",
    "workdir",
]
