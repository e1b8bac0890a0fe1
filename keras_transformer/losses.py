"""Label-smoothed, padding-masked cross-entropy (paper §5.4)."""

import keras
from keras import ops

from keras_transformer.tokenization import PAD_ID


@keras.saving.register_keras_serializable(package="keras_transformer")
class LabelSmoothedCrossEntropy(keras.losses.Loss):
    """Cross-entropy against smoothed targets, averaged over real tokens.

    Paper §5.4 smooths with eps_ls = 0.1. The target distribution is
    `(1 - eps) * one_hot(y) + eps / V`, the whole vocabulary, as Keras'
    `CategoricalCrossentropy(label_smoothing=eps)` spreads it, so per token

        loss = (1 - eps) * -log p(y) + eps * mean_v(-log p(v))

    computed from sparse ids without materialising `(B, T, V)` targets.
    Positions whose label is `ignore_id` (padding) are excluded, and the
    result is the mean over the remaining tokens of the batch.

    Args:
        label_smoothing: float. eps_ls. Default 0.1.
        ignore_id: int. Label excluded from the loss. Default `PAD_ID`.

    Call arguments:
        y_true: int `(B, T)` labels.
        y_pred: float `(B, T, V)` logits.

    References:
        Vaswani et al., "Attention Is All You Need", 2017, §5.4;
        Szegedy et al., "Rethinking the Inception Architecture", 2016, §7.
    """

    def __init__(
        self, label_smoothing=0.1, ignore_id=PAD_ID, name="label_smoothed_cross_entropy", **kwargs
    ):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing must be in [0, 1). Received: label_smoothing={label_smoothing}"
            )
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.ignore_id = ignore_id

    def call(self, y_true, y_pred):
        token_losses, mask = token_cross_entropy(
            y_true, y_pred, self.label_smoothing, self.ignore_id
        )
        return ops.sum(token_losses * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "ignore_id": self.ignore_id,
        }


def token_cross_entropy(y_true, y_pred, label_smoothing=0.0, ignore_id=PAD_ID):
    """Per-token smoothed cross-entropy and the float mask of real tokens.

    Returns:
        `(losses, mask)`, both float32 `(B, T)`.
    """
    y_true = ops.cast(y_true, "int32")
    # (B, T, V) log-probabilities in float32 whatever the compute dtype.
    log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
    # (B, T, V) -> (B, T): -log p(y)
    nll = -ops.squeeze(ops.take_along_axis(log_probs, y_true[..., None], axis=-1), axis=-1)
    losses = nll
    if label_smoothing:
        losses = (1.0 - label_smoothing) * nll - label_smoothing * ops.mean(log_probs, axis=-1)
    mask = ops.cast(ops.not_equal(y_true, ignore_id), "float32")
    return losses, mask
