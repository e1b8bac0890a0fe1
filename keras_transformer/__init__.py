"""keras-transformer: the Transformer of "Attention Is All You Need" on Keras 3.

Shapes, in every docstring and comment of the package:

    B  batch: sentences            K  beams per sentence (B*K rows in a search)
    S  source length               T  target length (T_max: a decoding buffer's)
    D  hidden_dim (d_model)        F  intermediate_dim (d_ff)
    h  num_heads                   d  head_dim = D / h (d_k = d_v)
    V  vocabulary size             L  layers per stack (N in the paper)

Attention's two sides are Tq (queries) and Tk (keys): T or S. Queries and
keys are d_k deep: d, unless `key_dim` sets it (Table 3, row B).

The input pipeline (`data`), export and serving need TensorFlow; they are
imported on first use, so that the layers and the model load without it on
JAX and PyTorch. The rest (`keras_transformer.api`) loads with the package,
which registers every class a `.keras` file names: after `import
keras_transformer`, `keras.saving.load_model` reads this package's models.
The command line alone defers it (see `keras_transformer_cli`).
"""

import importlib
import os

__version__ = "0.2.0"

# Set only while the `keras-transformer` launcher imports the package: its
# arguments are parsed before Keras loads, then it imports the API itself.
_API = ()
if "KERAS_TRANSFORMER_DEFER_API" not in os.environ:
    from keras_transformer import api
    from keras_transformer.api import *  # noqa: F403

    _API = api.__all__

# Name -> the module that defines it, imported when the name is first read.
_LAZY = {
    "data": "keras_transformer.data",
    "export": "keras_transformer.export",
    "serving": "keras_transformer.serving",
    "export_saved_model": "keras_transformer.export",
    "load_translator": "keras_transformer.serving",
    "export_ctranslate2": "keras_transformer.ctranslate2",
    "export_onnx": "keras_transformer.onnx",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_LAZY[name])
    return module if module.__name__.endswith(f".{name}") else getattr(module, name)


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = [*_API, *_LAZY]
