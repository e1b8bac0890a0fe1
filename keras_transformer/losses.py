"""Label-smoothed, padding-masked cross-entropy (paper §5.4)."""

import keras
from keras import ops

from keras_transformer.checks import check_fraction
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
        check_fraction(label_smoothing=label_smoothing)
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.ignore_id = ignore_id

    def call(self, y_true, y_pred):
        token_losses, mask = token_cross_entropy(
            y_true, y_pred, self.label_smoothing, self.ignore_id
        )
        return ops.sum(token_losses * mask) / ops.maximum(_batch_tokens(mask), 1.0)

    def get_config(self):
        return {
            **super().get_config(),
            "label_smoothing": self.label_smoothing,
            "ignore_id": self.ignore_id,
        }


def _batch_tokens(mask):
    """The real target tokens of the whole batch, on every device that holds part of it.

    TensorFlow's `tf.distribute` runs the loss once per replica, on its share
    of the batch, and sums the replicas' gradients (Keras does not divide a
    loss that is already a scalar by the replica count): dividing each
    replica's sum by the count over all replicas makes the replicas' losses
    add up to the batch's mean, as on one device, however the tokens fall.
    JAX's `DataParallel` runs one program over the whole batch: nothing to do.
    """
    count = ops.sum(mask)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        context = tf.distribute.get_replica_context()  # None between replicas' steps
        if context is not None and context.num_replicas_in_sync > 1:
            count = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return count


def token_cross_entropy(y_true, y_pred, label_smoothing=0.0, ignore_id=PAD_ID):
    """Per-token smoothed cross-entropy and the float mask of real tokens.

    Returns:
        `(losses, mask)`, both float32 `(B, T)`.
    """
    y_true = ops.cast(y_true, "int32")
    logits = ops.cast(y_pred, "float32")
    # -log p(v) = logsumexp(z) - z_v. Under XLA (TensorFlow, JAX) logsumexp
    # fuses and no (B, T, V) log-probabilities are kept (a log-softmax makes
    # the JAX step 7% slower). Eager PyTorch runs logsumexp as several passes
    # over the logits, forward and backward, where its fused log-softmax
    # kernel is one (the step 8% faster); then z is log p and logsumexp(z) = 0.
    if keras.backend.backend() == "torch":
        logits = ops.log_softmax(logits, axis=-1)
        log_normalizer = 0.0
    else:
        log_normalizer = ops.logsumexp(logits, axis=-1)
    label_logits = _label_logits(logits, y_true)
    losses = log_normalizer - label_logits
    if label_smoothing:
        # (1 - eps) * -log p(y) + eps * mean_v(-log p(v))
        losses = log_normalizer - (
            (1.0 - label_smoothing) * label_logits + label_smoothing * ops.mean(logits, axis=-1)
        )
    mask = ops.cast(ops.not_equal(y_true, ignore_id), "float32")
    return losses, mask


def _label_logits(logits, labels):
    """`(B, T, V)`, `(B, T)` -> `(B, T)`: each label's logit.

    Under XLA (TensorFlow, JAX) a one-hot product fuses into one pass and has
    a dense gradient, where a gather's gradient is a scatter, slow on CPUs
    (20% of a training step on JAX). Eager PyTorch would materialise the
    one-hot tensor instead, so there the gather is faster.
    """
    if keras.backend.backend() == "torch":
        return ops.squeeze(ops.take_along_axis(logits, labels[..., None], axis=-1), axis=-1)
    one_hot = ops.one_hot(labels, ops.shape(logits)[-1], dtype=logits.dtype)
    return ops.sum(logits * one_hot, axis=-1)
