"""What the search and translator tests share: token names and hypothesis scoring."""

import numpy as np
from helpers import to_numpy

import keras_transformer as kt

# Token ids of the fake models, above the special ones, and their vocabulary size.
A, B, C, D = 4, 5, 6, 7
VOCAB = 8


def strip(sequence):
    """A hypothesis without its padding: up to EOS, or up to PAD where it was cut."""
    sequence = list(to_numpy(sequence))
    if kt.EOS_ID in sequence:
        return sequence[: sequence.index(kt.EOS_ID) + 1]
    return sequence[: sequence.index(kt.PAD_ID)] if kt.PAD_ID in sequence else sequence


def log_softmax(logits):
    """NumPy log-softmax over the last axis; PAD and BOS are never generated, as in the search."""
    logits = np.array(logits, "float32")
    logits[..., [kt.PAD_ID, kt.BOS_ID]] = -1e9
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def penalized(log_prob, length, length_penalty):
    return log_prob / ((5 + length) / 6) ** length_penalty
