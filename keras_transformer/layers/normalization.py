"""The normalization in each residual block: the paper's layer norm, or a batch norm.

Paper §3.1 normalizes every token over its own D features,
`LayerNorm(x + Sublayer(x))`. Batch normalization (Ioffe and Szegedy, 2015)
normalizes every feature over the batch instead and keeps moving averages of
its statistics for inference. `TransformerConfig(normalization=...)` picks:

- "layer": `keras.layers.LayerNormalization`, the paper's.
- "batch": `keras.layers.BatchNormalization` where the layer norm sits, as a
  naive implementation would place it: statistics over every position of
  the `(B, T)` batch, padding included.
- "masked_batch": `MaskedBatchNormalization`, statistics over the real
  tokens only. Beside "batch" it separates "padding pollutes the statistics"
  from "the statistics depend on the batch" (docs/experiments.md).

At inference both batch norms use their moving averages: one fixed affine map
per feature, the same at every position, so a sentence's output depends on
no other sentence and cached decoding equals the full decoder.
"""

import keras
from keras import ops

from keras_transformer.checks import check_choice, check_fraction, check_positive
from keras_transformer.config import NORMALIZATIONS

# Keras' BatchNormalization default, for both batch norms.
BATCH_NORM_MOMENTUM = 0.99


def check_normalization(normalization):
    """Raises a ValueError naming `normalization` and the allowed values unless it is one."""
    check_choice(NORMALIZATIONS, normalization=normalization)


def norm_name(block, normalization):
    """The name (and attribute) of residual block `block`'s norm: `{block}_layer_norm`,
    or `{block}_batch_norm` for both batch norms."""
    return f"{block}_{'layer' if normalization == 'layer' else 'batch'}_norm"


def make_normalization(normalization, epsilon, dtype, name):
    """A new, unbuilt norm layer of kind `normalization` (one of `NORMALIZATIONS`)."""
    check_normalization(normalization)
    if normalization == "layer":
        return keras.layers.LayerNormalization(epsilon=epsilon, dtype=dtype, name=name)
    layer_class = (
        keras.layers.BatchNormalization if normalization == "batch" else MaskedBatchNormalization
    )
    return layer_class(momentum=BATCH_NORM_MOMENTUM, epsilon=epsilon, dtype=dtype, name=name)


def normalize(norm, inputs, padding_mask, training):
    """Runs a layer from `make_normalization` on `(B, T, D)` `inputs`.

    Only the masked batch norm reads the bool `(B, T)` `padding_mask`. The
    plain batch norm is the naive one and must not see it (Keras'
    `BatchNormalization` would mask its statistics, and attach the mask to its
    output for every later layer to receive).
    """
    if isinstance(norm, MaskedBatchNormalization):
        return norm(inputs, padding_mask=padding_mask, training=training)
    return norm(inputs, training=training)


@keras.saving.register_keras_serializable(package="keras_transformer")
class MaskedBatchNormalization(keras.layers.Layer):
    """Batch normalization whose statistics skip padding.

    Each of the D features is normalized with a mean and a variance taken
    over the real tokens of the batch, then scaled and shifted:

        y = gamma * (x - mean) / sqrt(variance + epsilon) + beta

    In training the mean and variance are the batch's (the biased variance,
    as Keras' `BatchNormalization` takes it), and the moving averages follow
    them as Keras updates its own: `moving = moving * momentum + batch * (1 -
    momentum)`. At inference, or with `trainable=False`, the moving averages
    serve, so a token's output depends on no other token.

    **Masking**: `padding_mask` `(B, T)`, True at real tokens, keeps padding
    out of the batch statistics; None counts every position. Padded positions
    are normalized like the others and masked later, in attention and the loss.

    **Precision**: statistics, moving averages (float32 variables whatever
    the policy) and the normalization are computed in float32; the output is
    cast to the compute dtype.

    Args:
        momentum: float. Of the moving averages, in [0, 1). Default 0.99
            (Keras').
        epsilon: float. Added to the variance. Default 1e-3 (Keras').

    Call arguments:
        inputs: `(B, T, D)`.
        padding_mask: optional bool `(B, T)`.
        training: bool. Batch statistics (and a moving-average update) or
            the moving averages.

    Returns:
        `(B, T, D)` in the compute dtype.

    Example:
        >>> norm = MaskedBatchNormalization()
        >>> x = keras.ops.convert_to_tensor([[[1.0], [3.0], [100.0]]])
        >>> mask = keras.ops.convert_to_tensor([[True, True, False]])
        >>> [float(v[0]) for v in norm.batch_statistics(x, mask)]
        [2.0, 1.0]

    References:
        Ioffe and Szegedy, "Batch Normalization", 2015, in place of the layer
        norm of Vaswani et al., "Attention Is All You Need", 2017, §3.1.
    """

    def __init__(self, momentum=BATCH_NORM_MOMENTUM, epsilon=1e-3, **kwargs):
        super().__init__(**kwargs)
        check_fraction(momentum=momentum)
        check_positive(epsilon=epsilon)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        # Read the float32 variables as they are under a mixed policy.
        self.autocast = False

    def build(self, input_shape):
        def weight(name, initializer, trainable, dtype=None):
            return self.add_weight(
                name=name,
                shape=(input_shape[-1],),
                initializer=initializer,
                trainable=trainable,
                dtype=dtype,
                autocast=False,
            )

        self.gamma = weight("gamma", "ones", True)
        self.beta = weight("beta", "zeros", True)
        self.moving_mean = weight("moving_mean", "zeros", False, "float32")
        self.moving_variance = weight("moving_variance", "ones", False, "float32")
        self.built = True

    def batch_statistics(self, inputs, padding_mask=None):
        """Mean and variance of each feature over the real tokens: two float32 `(D,)`."""
        x = ops.cast(inputs, "float32")
        if padding_mask is None:
            weights = ops.ones_like(x[..., :1])
        else:
            # (B, T) -> (B, T, 1)
            weights = ops.cast(padding_mask, "float32")[..., None]
        axes = tuple(range(len(x.shape) - 1))
        count = ops.maximum(ops.sum(weights), 1.0)
        mean = ops.sum(x * weights, axis=axes) / count
        variance = ops.sum(ops.square(x - mean) * weights, axis=axes) / count
        return mean, variance

    def call(self, inputs, padding_mask=None, training=None):
        x = ops.cast(inputs, "float32")
        if training and self.trainable:
            mean, variance = self.batch_statistics(x, padding_mask)
            for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
                moving.assign(moving * self.momentum + batch * (1.0 - self.momentum))
        else:
            mean, variance = self.moving_mean, self.moving_variance
        gamma, beta = (ops.cast(w, "float32") for w in (self.gamma, self.beta))
        outputs = (x - mean) * ops.rsqrt(variance + self.epsilon) * gamma + beta
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}
