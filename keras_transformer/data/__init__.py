"""Input side: corpus readers, the built-in corpus, the `tf.data` pipeline (paper §5.1).

The pipeline needs TensorFlow; it is imported on first use of
`make_dataset`, so that reading corpora (and the model on JAX or PyTorch)
does not load TensorFlow.
"""

from keras_transformer.data.number_words import number_words
from keras_transformer.data.readers import CorpusError, read_lines, read_parallel, read_tsv

__all__ = ["CorpusError", "make_dataset", "number_words", "read_lines", "read_parallel", "read_tsv"]


def __getattr__(name):
    if name == "make_dataset":
        from keras_transformer.data.pipeline import make_dataset

        return make_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
