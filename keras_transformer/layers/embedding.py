"""Token embeddings shared with the pre-softmax projection (paper §3.4)."""

import keras
from keras import ops

from keras_transformer.checks import check_positive


@keras.saving.register_keras_serializable(package="keras_transformer")
class TokenEmbedding(keras.layers.Layer):
    """Looks up token ids, scaled by sqrt(d_model); its transpose gives logits.

    Paper §3.4: "we share the same weight matrix between the two embedding
    layers and the pre-softmax linear transformation ... In the embedding
    layers, we multiply those weights by sqrt(d_model)." One `TokenEmbedding`
    serves all three uses; `reverse=True` computes the logits `x E^T`.

    The matrix starts as N(0, d_model^-0.5), so the scaled embeddings have
    unit variance, the same scale as the sinusoids they are added to.

    **Masking**: none; padding ids are embedded like any other id and masked
    in attention.

    Args:
        vocab_size: int. V.
        hidden_dim: int. D (d_model), the embedding width.
        scale: bool. Multiply looked-up embeddings by sqrt(d_model). Default
            True, as in the paper.
        embeddings_initializer: initializer. Default N(0, d_model^-0.5).

    Call arguments:
        inputs: `(B, T)` integer token ids, or with `reverse=True` the
            `(B, T, D)` decoder output.
        reverse: bool. Project hidden states to vocabulary logits.

    Returns:
        `(B, T, D)` embeddings, or with `reverse=True` `(B, T, V)` float32 logits.

    Example:
        >>> embedding = TokenEmbedding(vocab_size=100, hidden_dim=16)
        >>> tuple(embedding(keras.ops.ones((2, 5), "int32")).shape)
        (2, 5, 16)

    References:
        Vaswani et al., "Attention Is All You Need", 2017, §3.4.
    """

    def __init__(self, vocab_size, hidden_dim, scale=True, embeddings_initializer=None, **kwargs):
        super().__init__(**kwargs)
        check_positive(vocab_size=vocab_size, hidden_dim=hidden_dim)
        self.vocab_size = vocab_size
        self.hidden_dim = hidden_dim
        self.scale = scale
        if embeddings_initializer is None:
            embeddings_initializer = keras.initializers.RandomNormal(stddev=hidden_dim**-0.5)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocab_size, self.hidden_dim),
            initializer=self.embeddings_initializer,
        )
        self.built = True

    def call(self, inputs, reverse=False):
        if reverse:
            # (B, T, D) x (V, D)^T -> (B, T, V); logits in float32 for the softmax.
            logits = ops.matmul(inputs, ops.transpose(ops.cast(self.embeddings, inputs.dtype)))
            return ops.cast(logits, "float32")
        if "int" not in keras.backend.standardize_dtype(inputs.dtype):
            raise TypeError(
                f"{self.name} expects integer token ids. "
                f"Received: dtype={keras.backend.standardize_dtype(inputs.dtype)}"
            )
        # (B, T) -> (B, T, D)
        outputs = ops.take(self.embeddings, inputs, axis=0)
        if self.scale:
            outputs = outputs * ops.cast(ops.sqrt(float(self.hidden_dim)), outputs.dtype)
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape, reverse=False):
        if reverse:
            return (*input_shape[:-1], self.vocab_size)
        return (*input_shape, self.hidden_dim)

    def compute_output_spec(self, inputs, reverse=False):
        shape = self.compute_output_shape(inputs.shape, reverse=reverse)
        dtype = "float32" if reverse else self.compute_dtype
        return keras.KerasTensor(shape, dtype=dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "hidden_dim": self.hidden_dim,
            "scale": self.scale,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }
