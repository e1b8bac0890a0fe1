"""The package's public names that need Keras, re-exported by `keras_transformer`.

Importing this module imports Keras and registers every layer, model, loss,
metric and schedule class, so that `keras.saving.load_model` can read a
`.keras` file written by this package.
"""

from keras_transformer import decoding, layers, workdir
from keras_transformer.allocator import reuse_freed_memory
from keras_transformer.config import DecodingConfig, TrainingConfig, TransformerConfig
from keras_transformer.decoding import Translator
from keras_transformer.losses import LabelSmoothedCrossEntropy
from keras_transformer.metrics import MaskedAccuracy, Perplexity
from keras_transformer.model import Transformer, build_transformer
from keras_transformer.recurrent import RecurrentBaseline, RecurrentConfig, build_recurrent_baseline
from keras_transformer.schedules import TransformerSchedule
from keras_transformer.tokenization import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from keras_transformer.training import compile_model, create_optimizer

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "UNK_ID",
    "DecodingConfig",
    "LabelSmoothedCrossEntropy",
    "MaskedAccuracy",
    "Perplexity",
    "RecurrentBaseline",
    "RecurrentConfig",
    "TrainingConfig",
    "Transformer",
    "TransformerConfig",
    "TransformerSchedule",
    "Tokenizer",
    "Translator",
    "build_recurrent_baseline",
    "build_transformer",
    "compile_model",
    "create_optimizer",
    "decoding",
    "layers",
    "reuse_freed_memory",
    "workdir",
]
