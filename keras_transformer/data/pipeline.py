"""The `tf.data` input pipeline: token-budget batches of similar lengths (paper §5.1).

"Sentence pairs were batched together by approximate sequence length. Each
training batch contained a set of sentence pairs containing approximately
25000 source tokens and 25000 target tokens." Here a batch holds at most
`max_tokens` padded tokens per side, and padded lengths come from a small
fixed set of buckets, so XLA compiles a handful of programs, not one per
length. For data-parallel training over `replicas` devices the budget is each
replica's: a batch holds `replicas` times as many sentences, so every batch
divides evenly across the devices.

TensorFlow by nature: `model.fit` accepts a `tf.data.Dataset` on every
backend. Text is tokenized once, in Python, by the SentencePiece model.
"""

import logging

import numpy as np
import tensorflow as tf

from keras_transformer.checks import check_positive_integer
from keras_transformer.model_inputs import DECODER_INPUT, ENCODER_INPUT
from keras_transformer.tokenization import BOS_ID, PAD_ID

logger = logging.getLogger("keras_transformer")

DEFAULT_BUCKETS = (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 128, 160, 192, 256)


def bucket_boundaries(max_length, buckets=DEFAULT_BUCKETS):
    """Padded lengths up to `max_length`, which is always the last."""
    return tuple(sorted({b for b in buckets if b < max_length} | {max_length}))


def tokenize_pairs(pairs, tokenizer, max_length):
    """Encodes pairs and drops those longer than `max_length` tokens on a side.

    Returns:
        `(sources, targets, dropped)`: lists of id lists (each ending in EOS)
        and the number of pairs dropped.
    """
    if not pairs:
        raise ValueError("make_dataset received no sentence pairs")
    sources = tokenizer.encode([source for source, _ in pairs])
    targets = tokenizer.encode([target for _, target in pairs])
    kept = [
        (s, t)
        for s, t in zip(sources, targets, strict=True)
        if len(s) <= max_length and len(t) <= max_length
    ]
    return [s for s, _ in kept], [t for _, t in kept], len(pairs) - len(kept)


def _ragged(sequences):
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    values = np.fromiter(
        (i for s in sequences for i in s), dtype=np.int32, count=int(lengths.sum())
    )
    return tf.RaggedTensor.from_row_lengths(values, lengths)


def _teacher_forcing(source, target):
    """Decoder input is the target shifted right behind BOS; labels are the target."""
    decoder_input = tf.concat([[BOS_ID], target[:-1]], axis=0)
    return {ENCODER_INPUT: source, DECODER_INPUT: decoder_input}, target


def make_dataset(
    pairs,
    tokenizer,
    max_tokens=4096,
    max_length=256,
    buckets=DEFAULT_BUCKETS,
    shuffle=True,
    seed=0,
    drop_remainder=True,
    epochs=None,
    replicas=1,
):
    """A `tf.data.Dataset` of `({"encoder_token_ids", "decoder_token_ids"}, labels)`.

    Each side ends in EOS; the decoder input starts with BOS. Pairs longer
    than `max_length` tokens on either side are dropped and counted in one
    log line.

    Args:
        pairs: list of `(source, target)` strings.
        tokenizer: a `Tokenizer`.
        max_tokens: int. Padded tokens per side in a batch, at most.
        max_length: int. The longest sequence kept, in tokens.
        buckets: padded lengths; those below `max_length`, and `max_length`.
        shuffle: bool. Shuffle pairs (and batches) each epoch.
        seed: int. The same seed gives the same batches.
        drop_remainder: bool. Drop each bucket's last, partial batch, so that
            every batch of a bucket has the same shape (one XLA program per
            bucket). Set False for evaluation, to see every pair.
        epochs: optional `(first, end)`: the epochs `first .. end - 1` one
            after another, epoch e shuffled by `(seed, e)` alone, so that its
            batches come in the same order in every run that reaches it (a
            resumed run starts at its epoch). Default: one epoch, shuffled
            anew each time it is iterated.
        replicas: int. Devices a batch is split over: each bucket's batch
            holds `replicas` times the sentences `max_tokens` allows (the
            budget is per replica), and a last, partial batch
            (`drop_remainder=False`) is padded with rows of padding, which
            the loss and metrics mask out, to a multiple of `replicas`.

    Returns:
        The dataset; its `cardinality()` is the number of batches per epoch
        (with `epochs`, of all of them).
    """
    corpus = BatchedCorpus(pairs, tokenizer, max_tokens, max_length, buckets, shuffle=shuffle,
                           seed=seed, drop_remainder=drop_remainder,
                           replicas=replicas)  # fmt: skip
    return corpus.dataset(epochs)


class BatchedCorpus:
    """Pairs tokenized once, made into `make_dataset`'s datasets on demand.

    For a caller that needs several datasets of one corpus, such as a resumed
    run that finishes one epoch and then goes on: the text is encoded once.
    The arguments are `make_dataset`'s.

    Attributes:
        batches_per_epoch: int.
        target_tokens: int. Target tokens (EOS included, no padding) in an epoch's pairs.
    """

    def __init__(self, pairs, tokenizer, max_tokens, max_length, buckets=DEFAULT_BUCKETS, *,
                 shuffle=True, seed=0, drop_remainder=True, replicas=1):  # fmt: skip
        self.boundaries = bucket_boundaries(max_length, buckets)
        if max_tokens < self.boundaries[-1]:
            raise ValueError(
                f"max_tokens must hold one sequence of max_length tokens. "
                f"Received: max_tokens={max_tokens}, max_length={max_length}"
            )
        sources, targets, dropped = tokenize_pairs(pairs, tokenizer, max_length)
        # A warning when pairs were dropped, so that the summary shows by default.
        logger.log(
            logging.WARNING if dropped else logging.INFO,
            "make_dataset: %d pairs kept, %d dropped as longer than %d tokens",
            len(sources),
            dropped,
            max_length,
        )
        if not sources:
            raise ValueError(f"Every pair is longer than max_length={max_length} tokens")
        check_positive_integer(replicas=replicas)
        self.max_tokens, self.shuffle, self.seed = max_tokens, shuffle, seed
        self.drop_remainder, self.replicas = drop_remainder, replicas
        # Bucketing hides the batch count from tf.data; it is known, so say it
        # (Keras then shows a full progress bar and knows where an epoch ends).
        self.batches_per_epoch = count_batches(
            sources, targets, self.boundaries, max_tokens, drop_remainder, replicas
        )
        self.target_tokens = sum(map(len, targets))
        self.count, self.sources, self.targets = len(sources), _ragged(sources), _ragged(targets)

    def dataset(self, epochs=None):
        """`make_dataset`'s dataset: one epoch, or epochs `(first, end)`."""
        if epochs is None:
            dataset = self._epoch(self.seed, reshuffle=True)
        else:
            first, end = epochs
            # Seeds from (seed, epoch) only: a reshuffle would depend on how many
            # iterators the dataset had made before, which a resumed run does not repeat.
            dataset = tf.data.Dataset.range(first, end).flat_map(
                lambda epoch: self._epoch(self.seed * 1_000_003 + epoch, reshuffle=False)
            )
            dataset = dataset.apply(
                tf.data.experimental.assert_cardinality(self.batches_per_epoch * (end - first))
            )
        return dataset.prefetch(tf.data.AUTOTUNE)

    def _epoch(self, seed, reshuffle):
        dataset = tf.data.Dataset.from_tensor_slices((self.sources, self.targets))
        if self.shuffle:
            dataset = dataset.shuffle(self.count, seed=seed, reshuffle_each_iteration=reshuffle)
        dataset = dataset.map(
            _teacher_forcing, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        dataset = _bucket(
            dataset, self.boundaries, self.max_tokens, self.drop_remainder, self.replicas
        )
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(self.batches_per_epoch))
        if self.shuffle:
            dataset = dataset.shuffle(64, seed=seed, reshuffle_each_iteration=reshuffle)
        return dataset


def batch_sizes(boundaries, max_tokens, replicas=1):
    """`(N, N)` sentences per batch for (source bucket, target bucket): the token budget
    divided by the longer padded side (at least one sentence), times `replicas`."""
    lengths = np.asarray(boundaries, dtype=np.int64)
    return np.maximum(max_tokens // np.maximum.outer(lengths, lengths), 1) * replicas


def count_batches(sources, targets, boundaries, max_tokens, drop_remainder, replicas=1):
    """The number of batches `_bucket` makes of these pairs, whatever the order."""
    # The smallest boundary >= length, as `_bucket` picks it.
    source_buckets = np.searchsorted(boundaries, [len(s) for s in sources])
    target_buckets = np.searchsorted(boundaries, [len(t) for t in targets])
    counts = np.zeros((len(boundaries), len(boundaries)), dtype=np.int64)
    np.add.at(counts, (source_buckets, target_buckets), 1)
    sizes = batch_sizes(boundaries, max_tokens, replicas)
    per_pair = counts // sizes if drop_remainder else -(-counts // sizes)
    return int(per_pair.sum())


def _bucket(dataset, boundaries, max_tokens, drop_remainder, replicas):
    """Groups pairs by (source bucket, target bucket) and pads to those lengths.

    Bucketing each side on its own keeps a short source from being padded to
    a long target's length. Shapes come from `boundaries` on each side.
    """
    lengths = tf.constant(boundaries, dtype=tf.int64)
    count = len(boundaries)
    # (N*N,): key = source bucket * N + target bucket -> sentences per batch
    sizes = tf.constant(batch_sizes(boundaries, max_tokens, replicas).reshape(-1), dtype=tf.int64)

    def bucket_index(length):
        # The smallest boundary >= length.
        return tf.reduce_sum(tf.cast(lengths < tf.cast(length, tf.int64), tf.int64))

    def key(inputs, labels):
        source = bucket_index(tf.shape(inputs[ENCODER_INPUT])[0])
        target = bucket_index(tf.shape(labels)[0])
        return source * count + target

    def batch_size(bucket):
        return sizes[bucket]

    def batch(bucket, window):
        source_length, target_length = lengths[bucket // count], lengths[bucket % count]
        return window.padded_batch(
            sizes[bucket],
            padded_shapes=(
                {ENCODER_INPUT: [source_length], DECODER_INPUT: [target_length]},
                [target_length],
            ),
            padding_values=({ENCODER_INPUT: PAD_ID, DECODER_INPUT: PAD_ID}, PAD_ID),
            drop_remainder=drop_remainder,
        )

    dataset = dataset.group_by_window(key, batch, window_size_func=batch_size)
    if replicas > 1 and not drop_remainder:
        dataset = dataset.map(lambda inputs, labels: _pad_rows((inputs, labels), replicas))
    return dataset


def _pad_rows(batch, replicas):
    """Pads a batch with rows of PAD_ID to a multiple of `replicas` rows.

    A row of padding has no target token, so the loss and the metrics leave
    it out; an all-padding source attends everywhere (see the attention
    layer), so no NaN.
    """
    rows = tf.shape(batch[1])[0]
    extra = (-rows) % replicas

    def pad(tensor):
        return tf.pad(tensor, [[0, extra], [0, 0]], constant_values=PAD_ID)

    return tf.nest.map_structure(pad, batch)


def shard_rows(dataset, index, count):
    """Rows `[index * k, (index + 1) * k)` of each batch of `k * count` rows: the share of
    process (or replica) `index` of `count`.

    Every process makes the same batches (the same pairs, seed and
    `replicas`, a multiple of `count`) and keeps its rows of each, so an
    epoch covers every pair once over the processes, no pair twice, and the
    processes' batches of a step have the same shapes.
    """
    check_positive_integer(count=count)
    if not 0 <= index < count:
        raise ValueError(f"index must be in [0, {count - 1}]. Received: index={index}")
    if count == 1:
        return dataset

    def rows(inputs, labels):
        share = tf.shape(labels)[0] // count
        start = index * share
        return tf.nest.map_structure(lambda t: t[start : start + share], (inputs, labels))

    return dataset.map(rows, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
