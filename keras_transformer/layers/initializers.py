"""One initializer per sublayer."""

import keras


def clone_initializer(initializer):
    """A fresh initializer of the same kind and settings as `initializer`.

    A Keras initializer created without a seed fixes one when it is created,
    so every call of one instance returns the same draw: handing one
    instance to several sublayers would start their kernels as copies (with
    Q = K, every head would begin by attending to itself). Keras's own
    `MultiHeadAttention` clones for the same reason. A clone of an unseeded
    initializer draws a new seed (from `keras.utils.set_random_seed`'s
    stream, so runs stay reproducible); a clone of a seeded one keeps its
    seed, as the user asked.
    """
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())
