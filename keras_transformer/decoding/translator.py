"""Text in, text out: tokenize, batch by length, search, detokenize (paper §6.1)."""

import collections
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
from keras import ops

from keras_transformer.checks import check_positive_integer
from keras_transformer.config import DecodingConfig
from keras_transformer.decoding.compile import compile_search
from keras_transformer.decoding.search import NEG_INF, beam_search, greedy_search
from keras_transformer.tokenization import EOS_ID, PAD_ID, Tokenizer

logger = logging.getLogger("keras_transformer")

SOURCE_BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def _round_up(value, choices):
    return next((c for c in choices if c >= value), value)


def in_order(submit, items, ahead):
    """Yields `(item, submit(item))` in the order of `items`, `submit` running up to
    `ahead` items ahead of the one yielded: so `submit` may start asynchronous
    work (a batch search) that runs while the caller handles earlier results."""
    pending = collections.deque()
    for item in items:
        pending.append((item, submit(item)))
        if len(pending) > ahead:
            yield pending.popleft()
    while pending:
        yield pending.popleft()


def encode_truncated(tokenizer, texts, limit):
    """Token ids per text, EOS last; one longer than `limit` keeps `limit - 1` pieces, then
    EOS (with a warning). The rule every translator and the exported graph share."""
    ids = tokenizer.encode(list(texts))
    truncated = sum(len(row) > limit for row in ids)
    if truncated:
        logger.warning(
            "Truncated %d input(s) longer than the model's max_length=%d tokens", truncated, limit
        )
        ids = [row if len(row) <= limit else [*row[: limit - 1], EOS_ID] for row in ids]
    return ids


class TextTranslator:
    """What every translator offers on top of `translate`: translating a file."""

    def translate(self, texts, return_scores=False, progress=None):
        raise NotImplementedError

    def translate_n_best(self, texts, n, progress=None):
        """The `n` best hypotheses per text; this translator keeps only the best one."""
        if n != 1:
            raise ValueError(
                f"{type(self).__name__} returns the best hypothesis only; n-best lists "
                "need the in-process Translator or a CTranslate2 export"
            )
        translations, scores = self.translate(texts, return_scores=True, progress=progress)
        return [[pair] for pair in zip(translations, scores, strict=True)]

    def translate_file(self, source_path, output_path, overwrite=False):
        """Translates a file line by line into `output_path`, with a progress line.

        The output is written to a temporary file and renamed at the end; an
        existing `output_path` is kept unless `overwrite=True`.
        """
        from keras_transformer.data.readers import read_lines
        from keras_transformer.progress import Progress
        from keras_transformer.workdir import atomic_write

        if os.path.exists(output_path) and not overwrite:
            raise FileExistsError(f"{output_path} exists; pass overwrite=True to replace it")
        translations = self.translate(read_lines(source_path), progress=Progress())
        with atomic_write(output_path) as temporary:
            with open(temporary, "w", encoding="utf-8") as file:
                file.writelines(f"{line}\n" for line in translations)
        return translations


class Translator(TextTranslator):
    """Translates sentences with a trained `Transformer` and its `Tokenizer`.

    Sentences are sorted by length, padded to a few bucket lengths and
    batched, so a compiled search sees a handful of shapes; results come back
    in input order. `beam_size=1` is greedy search.

    Each sentence may produce at most its input length + `max_extra_length`
    tokens, capped at the model's `max_length`; there its unfinished
    hypotheses are cut, and a cut one is returned only when no hypothesis
    ended in EOS. Rows added to round a batch up hold padding only and end
    at the first step.

    Inputs longer than the model's `max_length` tokens are truncated to it,
    with a warning that counts them. An input with no subword pieces (empty
    or all spaces) gives an empty translation, score 0, without running the
    model; the exported SavedModel does the same.

    Args:
        model: a `Transformer`.
        tokenizer: its `Tokenizer`.
        decoding_config: a `DecodingConfig`: beam size, length penalty and
            `max_extra_length`. Default: the paper's, `DecodingConfig()`.
        batch_size: int. Sentences per search, at most.
        jit_compile: bool. XLA on TensorFlow (JAX always compiles; PyTorch
            runs eagerly). False builds faster, which suits a few sentences.
        inter_threads: int. Batches searched at once, each in a thread of its
            own. Two keep a 2-core CPU busier than one (the Python work of one
            batch runs beside the search of the other): 1.1x to 1.2x the
            sentences/s on TensorFlow and JAX (docs/inference.md). Results do
            not depend on it.
        **overrides: `DecodingConfig` fields that replace those of
            `decoding_config`, validated by it.

    Example:

        translator = Translator(model, tokenizer, beam_size=4, length_penalty=0.6)
        translator.translate(["Ein Hund rennt."])
    """

    def __init__(
        self,
        model,
        tokenizer,
        decoding_config=None,
        *,
        batch_size=64,
        jit_compile=True,
        inter_threads=2,
        **overrides,
    ):
        decoding_config = DecodingConfig() if decoding_config is None else decoding_config
        if not isinstance(decoding_config, DecodingConfig):
            raise TypeError(
                "decoding_config must be a DecodingConfig; pass beam_size and the other "
                f"fields by keyword. Received: decoding_config={decoding_config!r}"
            )
        check_positive_integer(batch_size=batch_size, inter_threads=inter_threads)
        self.model = model
        self.tokenizer = tokenizer
        self.decoding_config = decoding_config.replace(**overrides)
        self.batch_size = batch_size
        self.inter_threads = inter_threads
        self._search = compile_search(self.search_batch, model, jit_compile)

    @classmethod
    def from_workdir(cls, directory, **kwargs):
        """A work directory's `model.keras`, tokenizer and decoding settings (`kwargs`:
        `batch_size`, `jit_compile` and field overrides, as for the constructor)."""
        from keras_transformer import workdir

        model_path, tokenizer_path, decoding = workdir.model_files(os.fspath(directory))
        model = keras.saving.load_model(model_path, compile=False)
        return cls(model, Tokenizer.load(tokenizer_path), decoding, **kwargs)

    def search_batch(self, encoder_token_ids, row_limits, max_decode_length):
        """`(B, S)` ids -> `(B, K, T)` sequences and `(B, K)` scores (K = 1 for greedy).

        Uncompiled `keras.ops`; `translate_ids` runs it compiled, and the
        SavedModel export traces it into its graph. A row of padding only
        (a batch rounded up to a power of two) gets a limit of one token
        whatever `row_limits` says, so that it ends at the first step and
        never keeps the search running for the real sentences.
        """
        model, beam_size = self.model, self.decoding_config.beam_size
        length_penalty = self.decoding_config.length_penalty
        batch_size = ops.shape(encoder_token_ids)[0]
        # (B, S) -> (B,)
        empty = ops.logical_not(ops.any(ops.not_equal(encoder_token_ids, PAD_ID), axis=1))
        row_limits = ops.where(empty, 1, row_limits)
        encoder_output, encoder_padding_mask = model.encode(encoder_token_ids, training=False)
        cache = model.initialize_cache(
            encoder_output, encoder_padding_mask, max_decode_length, beam_size
        )
        if beam_size == 1:
            tokens, scores = greedy_search(
                model.decode_step, cache, batch_size, max_decode_length, length_penalty, row_limits
            )
            return tokens[:, None, :], scores[:, None]
        return beam_search(
            model.decode_step,
            cache,
            batch_size,
            max_decode_length,
            beam_size,
            length_penalty,
            row_limits,
            reorder_cache=model.reorder_cache,
        )

    def encode(self, texts):
        """Token ids per text, truncated to the model's `max_length` (with a warning)."""
        return encode_truncated(self.tokenizer, texts, self.model.config.max_length)

    def translate_ids(self, source_ids):
        """Searches one padded `(B, S)` batch: returns `(B, K, T)` ids and `(B, K)` scores."""
        source_ids = np.asarray(source_ids, dtype="int32")
        limit, extra = self.model.config.max_length, self.decoding_config.max_extra_length
        # Each sentence: its input length + max_extra_length (§6.1). The buffer
        # follows the padded length, so one compiled search serves a bucket.
        row_limits = np.minimum((source_ids != PAD_ID).sum(axis=1) + extra, limit)
        max_decode_length = min(source_ids.shape[1] + extra, limit)
        sequences, scores = self._search(source_ids, row_limits.astype("int32"), max_decode_length)
        return keras.ops.convert_to_numpy(sequences), keras.ops.convert_to_numpy(scores)

    def translate(self, texts, return_scores=False, progress=None):
        """Translates `texts` (list of str): list of str, or `(translations, scores)`."""
        best = [hypotheses[0] for hypotheses in self.translate_n_best(texts, 1, progress)]
        translations, scores = [text for text, _ in best], [score for _, score in best]
        return (translations, scores) if return_scores else translations

    def translate_n_best(self, texts, n, progress=None):
        """The `n` best hypotheses per text, best first: `[[(translation, score), ...], ...]`.

        `n` is at most the beam size (the search keeps that many); a sentence
        may get fewer when the search found fewer. A text with no pieces gets
        `[("", 0.0)]`.
        """
        beam_size = self.decoding_config.beam_size
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= beam_size:
            raise ValueError(f"n must be between 1 and beam_size={beam_size}. Received: n={n!r}")
        texts = list(texts)
        results = [[("", 0.0)] for _ in texts]
        ids = dict(enumerate(self.encode(texts)))
        todo = [i for i in ids if len(ids[i]) > 1]  # more than EOS
        order = sorted(todo, key=lambda i: len(ids[i]))
        chunks = [order[start : start + self.batch_size]
                  for start in range(0, len(order), self.batch_size)]  # fmt: skip
        done = 0
        with ThreadPoolExecutor(self.inter_threads) as pool:
            submit = functools.partial(pool.submit, self._search_chunk, ids=ids)
            for chunk, searched in in_order(submit, chunks, 2 * self.inter_threads):
                sequences, scores = searched.result()
                for row, i in enumerate(chunk):
                    # Slots the search left empty (fewer than K hypotheses) score NEG_INF.
                    kept = [k for k in range(n) if k == 0 or scores[row, k] > NEG_INF / 2]
                    results[i] = [
                        (self.tokenizer.decode(sequences[row, k]), float(scores[row, k]))
                        for k in kept
                    ]
                done += len(chunk)
                if progress:
                    progress(done, len(todo))
        return results

    def _search_chunk(self, chunk, ids):
        """Searches the sentences `chunk` indexes in `ids`: `(rows, K, T)` ids, `(rows, K)`
        scores, rows in `chunk`'s order (and padding rows after them)."""
        # Pad to bucket lengths and a power-of-two batch: few compiled shapes.
        length = _round_up(max(len(ids[i]) for i in chunk), SOURCE_BUCKETS)
        length = min(length, self.model.config.max_length)
        rows = _round_up(len(chunk), [2**p for p in range(16)])
        batch = np.full((rows, length), PAD_ID, dtype="int32")
        for row, i in enumerate(chunk):
            batch[row, : len(ids[i])] = ids[i]
        return self.translate_ids(batch)
