"""keras-transformer: the Transformer of "Attention Is All You Need" on Keras 3."""

from keras_transformer import data, decoding, layers, workdir
from keras_transformer.config import DecodingConfig, TrainingConfig, TransformerConfig
from keras_transformer.decoding import Translator
from keras_transformer.export import export_saved_model
from keras_transformer.losses import LabelSmoothedCrossEntropy
from keras_transformer.metrics import MaskedAccuracy, Perplexity
from keras_transformer.model import Transformer, build_transformer
from keras_transformer.schedules import TransformerSchedule
from keras_transformer.serving import load_translator
from keras_transformer.tokenization import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer
from keras_transformer.training import compile_model, create_optimizer

__version__ = "0.2.0"

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
