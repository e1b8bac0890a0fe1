"""The Transformer's building blocks as Keras layers.

Shapes in docstrings and comments use the package's legend (see
`keras_transformer`'s docstring): B, K, S, T, D, F, h, d, V.
"""

from keras_transformer.layers.attention import MultiHeadAttention
from keras_transformer.layers.cache import beam_history_mask
from keras_transformer.layers.decoder import TransformerDecoderLayer
from keras_transformer.layers.embedding import TokenEmbedding
from keras_transformer.layers.encoder import TransformerEncoderLayer
from keras_transformer.layers.feedforward import PositionwiseFeedForward
from keras_transformer.layers.masks import (
    causal_mask,
    decoder_self_attention_mask,
    key_padding_mask,
    padding_mask,
)
from keras_transformer.layers.normalization import MaskedBatchNormalization
from keras_transformer.layers.position_encoding import (
    LearnedPositionEmbedding,
    SinusoidalPositionEncoding,
)
from keras_transformer.layers.transformer_layer import TransformerLayer

__all__ = [
    "LearnedPositionEmbedding",
    "MaskedBatchNormalization",
    "MultiHeadAttention",
    "PositionwiseFeedForward",
    "SinusoidalPositionEncoding",
    "TokenEmbedding",
    "TransformerDecoderLayer",
    "TransformerEncoderLayer",
    "TransformerLayer",
    "beam_history_mask",
    "causal_mask",
    "decoder_self_attention_mask",
    "key_padding_mask",
    "padding_mask",
]
