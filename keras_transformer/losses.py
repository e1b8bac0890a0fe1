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
    if keras.backend.backend() == "torch":
        # Eager PyTorch: its fused log-softmax kernel is one pass over the
        # logits forward and one backward, and a gather reads the labels.
        log_probs = ops.log_softmax(logits, axis=-1)
        label_log_probs = ops.take_along_axis(log_probs, y_true[..., None], axis=-1)
        losses = -ops.squeeze(label_log_probs, axis=-1)
        if label_smoothing:
            losses = (1.0 - label_smoothing) * losses - label_smoothing * ops.mean(
                log_probs, axis=-1
            )
    else:
        losses = _smoothed_cross_entropy(logits, y_true, label_smoothing)
    mask = ops.cast(ops.not_equal(y_true, ignore_id), "float32")
    return losses, mask


def _smoothed_cross_entropy(logits, labels, label_smoothing):
    """`(B, T, V)` float32 logits, `(B, T)` labels -> `(B, T)` smoothed cross-entropy.

    Per token, with q = (1 - eps) one_hot(y) + eps / V,

        loss = logsumexp(z) - (1 - eps) z_y - eps mean_v(z_v)
        d loss / dz = softmax(z) - q

    The gradient is written out rather than left to autodiff, which on
    TensorFlow without XLA runs a dozen separate passes over the `(B, T, V)`
    logits (a broadcast, a one-hot product, their gradients) and under XLA
    (TensorFlow, JAX) fuses less well. At `base` (V 37,000, 4,096 tokens) the
    loss's forward and backward passes take 0.6x to 0.7x the time, and a
    TensorFlow bfloat16 training step without XLA 0.91x. The label's logit
    is gathered forward; backward, a one-hot product, since a gather's own
    gradient would be a scatter, slow on CPUs.
    """
    vocab_size = ops.shape(logits)[-1]

    @ops.custom_gradient
    def cross_entropy(logits):
        # z - max(z): the max cancels out of the loss, and exp cannot overflow.
        shifted = shift_logits(logits)
        exp = ops.exp(shifted)
        total = ops.sum(exp, axis=-1)
        losses = ops.log(total) - (1.0 - label_smoothing) * label_values(shifted, labels)
        if label_smoothing:
            losses = losses - label_smoothing * ops.mean(shifted, axis=-1)

        def gradient(upstream):  # as TensorFlow and JAX call it (this path is not PyTorch's)
            grad = exp * (upstream / total)[..., None]
            upstream = upstream[..., None]
            if label_smoothing:
                grad = grad - upstream * (label_smoothing / vocab_size)
            one_hot = ops.one_hot(labels, vocab_size, dtype=grad.dtype)
            return grad - one_hot * ((1.0 - label_smoothing) * upstream)

        return losses, gradient

    return cross_entropy(logits)


def shift_logits(logits):
    """`logits - max(logits)` over the vocabulary: the loss's first step.

    `MaskedAccuracy` and `Perplexity` take it with the same ops, so that
    TensorFlow's graph optimizer and XLA compute it once for all three.
    """
    return logits - ops.max(logits, axis=-1, keepdims=True)


def label_values(values, labels):
    """`(B, T, V)` values, `(B, T)` labels -> `(B, T)`: each label's value."""
    return ops.squeeze(ops.take_along_axis(values, labels[..., None], axis=-1), axis=-1)
