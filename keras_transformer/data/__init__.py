"""Input side: corpus readers, the built-in corpus, the `tf.data` pipeline (paper §5.1)."""

from keras_transformer.data.number_words import number_words
from keras_transformer.data.pipeline import make_dataset
from keras_transformer.data.readers import CorpusError, read_lines, read_parallel, read_tsv

__all__ = ["CorpusError", "make_dataset", "number_words", "read_lines", "read_parallel", "read_tsv"]
