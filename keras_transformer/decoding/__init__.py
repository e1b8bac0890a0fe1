"""Decoding: greedy and beam search over a step function, and the `Translator` (§6.1)."""

from keras_transformer.decoding.search import (
    beam_search,
    greedy_search,
    length_normalizer,
    tile_beams,
)
from keras_transformer.decoding.translator import Translator

__all__ = ["Translator", "beam_search", "greedy_search", "length_normalizer", "tile_beams"]
