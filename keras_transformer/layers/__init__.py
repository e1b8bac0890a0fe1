"""The Transformer's building blocks as Keras layers."""

from keras_transformer.layers.attention import MultiHeadAttention
from keras_transformer.layers.decoder import TransformerDecoderLayer
from keras_transformer.layers.embedding import TokenEmbedding
from keras_transformer.layers.encoder import TransformerEncoderLayer
from keras_transformer.layers.feedforward import PositionwiseFeedForward
from keras_transformer.layers.masks import (
    beam_history_mask,
    causal_mask,
    decoder_self_attention_mask,
    key_padding_mask,
    padding_mask,
)
from keras_transformer.layers.position_encoding import SinusoidalPositionEncoding

__all__ = [
    "MultiHeadAttention",
    "PositionwiseFeedForward",
    "SinusoidalPositionEncoding",
    "TokenEmbedding",
    "TransformerDecoderLayer",
    "TransformerEncoderLayer",
    "beam_history_mask",
    "causal_mask",
    "decoder_self_attention_mask",
    "key_padding_mask",
    "padding_mask",
]
