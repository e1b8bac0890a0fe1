"""Translating with a CTranslate2 export through the `Translator` interface."""

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor

from keras_transformer.checks import check_positive_integer
from keras_transformer.ctranslate2.convert import DECODING_FILE, TOKENIZER_FILE, import_ctranslate2
from keras_transformer.decoding.translator import TextTranslator, encode_truncated, in_order
from keras_transformer.tokenization import BOS_ID, EOS_ID, PAD_ID, Tokenizer


def _gnmt_penalty(length, alpha):
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha, as our beam search divides by it."""
    return ((5.0 + length) / 6.0) ** alpha


class CTranslate2Translator(TextTranslator):
    """A CTranslate2 model directory written by `export_ctranslate2`, as a translator.

    `translate` and `translate_file` behave as `Translator`'s: the same
    tokenizer and truncation to the model's `max_length`, each sentence's
    output capped at its input length + `max_extra_length` (sentences of one
    length are searched together, so every cap is exact), PAD and BOS never
    generated. CTranslate2 returns its `beam_size` finished hypotheses with
    raw log-probabilities; the best under GNMT's length penalty wins, and its
    score is log p(Y) / lp(Y), as ours.

    Args:
        path: str. The exported directory.
        beam_size, length_penalty, max_extra_length: None keeps the exported
            decoding settings.
        batch_size: int. Sentences per `translate_batch` call at most.
        compute_type: str. CTranslate2's compute type ("default" runs the
            stored quantization).
        intra_threads: int. Threads per translation (0: CTranslate2's default).
        inter_threads: int. Batches translated at once, each by its own
            `intra_threads` threads. For throughput on a CPU, one thread per
            translation and as many translations as cores is fastest
            (`inter_threads=os.cpu_count(), intra_threads=1`; docs/inference.md).
    """

    def __init__(
        self,
        path,
        beam_size=None,
        length_penalty=None,
        max_extra_length=None,
        batch_size=64,
        compute_type="default",
        intra_threads=0,
        inter_threads=1,
    ):
        check_positive_integer(batch_size=batch_size, inter_threads=inter_threads)
        if intra_threads != 0:  # 0: CTranslate2's default
            check_positive_integer(intra_threads=intra_threads)
        ctranslate2 = import_ctranslate2()
        settings_path = os.path.join(path, DECODING_FILE)
        if not os.path.isfile(settings_path):
            raise FileNotFoundError(
                f"{path} is not a CTranslate2 export of keras_transformer (no {DECODING_FILE})"
            )
        with open(settings_path, encoding="utf-8") as file:
            settings = json.load(file)
        self.path = path
        self.tokenizer = Tokenizer.load(os.path.join(path, TOKENIZER_FILE))
        self.max_length = settings["max_length"]
        self.beam_size = settings["beam_size"] if beam_size is None else beam_size
        self.length_penalty = (
            settings["length_penalty"] if length_penalty is None else length_penalty
        )
        self.max_extra_length = (
            settings["max_extra_length"] if max_extra_length is None else max_extra_length
        )
        self.batch_size = batch_size
        self.inter_threads = inter_threads
        self._translator = _in_own_thread(
            ctranslate2.Translator,
            path,
            device="cpu",
            compute_type=compute_type,
            intra_threads=intra_threads,
            inter_threads=inter_threads,
        )
        self._pieces = [self.tokenizer.id_to_piece(i) for i in range(self.tokenizer.vocab_size)]
        self._ids = {piece: i for i, piece in enumerate(self._pieces)}
        self._never = [[self._pieces[PAD_ID]], [self._pieces[BOS_ID]]]

    def encode(self, texts):
        """Token ids per text, EOS last, truncated to `max_length` as `Translator` does."""
        return encode_truncated(self.tokenizer, texts, self.max_length)

    def translate(self, texts, return_scores=False, progress=None):
        best = [hypotheses[0] for hypotheses in self.translate_n_best(texts, 1, progress)]
        translations, scores = [text for text, _ in best], [score for _, score in best]
        return (translations, scores) if return_scores else translations

    def translate_n_best(self, texts, n, progress=None):
        """The `n` (at most `beam_size`) best per text, best first: `[[(text, score), ...]]`."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.beam_size:
            raise ValueError(f"n must be between 1 and beam_size={self.beam_size}. Received: {n!r}")
        ranked = self.search(self.encode(list(texts)), progress=progress, n=n)
        return [[(self.tokenizer.decode(ids), score) for ids, score in row] for row in ranked]

    def search(self, source_ids, progress=None, n=None):
        """Token-id inputs (EOS last) -> `[(best hypothesis ids, EOS last; score)]`.

        With `n`, a list of the `n` best `(ids, score)` per input instead. An
        input of EOS alone gives `([], 0.0)`, as `Translator` gives "" with score 0.
        """
        results = [[([], 0.0)] for _ in source_ids]
        todo = sorted((i for i, row in enumerate(source_ids) if len(row) > 1),
                      key=lambda i: len(source_ids[i]))  # fmt: skip
        # Batches are submitted ahead (a few per worker), so `inter_threads`
        # workers translate at once; results are taken back in order.
        chunks = _same_length_chunks(todo, source_ids, self.batch_size)
        submit = functools.partial(self._submit, source_ids=source_ids)
        done = 0
        for chunk, batch in in_order(submit, chunks, 2 * self.inter_threads):
            for i, result in zip(chunk, batch, strict=True):
                results[i] = self._ranked(result.result())
            done += len(chunk)
            if progress:
                progress(done, len(todo))
        return [row[0] for row in results] if n is None else [row[:n] for row in results]

    def _submit(self, chunk, source_ids):
        """Starts searching `chunk` (inputs of one length); returns its async results."""
        # The cap of every sentence in the chunk: input length + max_extra_length (§6.1).
        cap = min(len(source_ids[chunk[0]]) + self.max_extra_length, self.max_length)
        return self._translator.translate_batch(
            [[self._pieces[t] for t in source_ids[i][:-1]] for i in chunk],
            beam_size=self.beam_size,
            num_hypotheses=self.beam_size,
            length_penalty=0.0,  # raw log-probabilities; GNMT's penalty below
            return_scores=True,
            return_end_token=True,
            suppress_sequences=self._never,
            min_decoding_length=0,  # EOS may come first, as in our search
            max_input_length=0,
            max_decoding_length=cap,
            asynchronous=True,
        )

    def _ranked(self, result):
        """The hypotheses by log p(Y) / lp(Y), best first, with those scores.

        As in our search, one cut at the length cap (no EOS) ranks below every
        hypothesis that ended in EOS.
        """
        eos = [self._pieces[EOS_ID]]
        ranked = []
        for pieces, log_prob in zip(result.hypotheses, result.scores, strict=True):
            score = log_prob / _gnmt_penalty(len(pieces), self.length_penalty)
            ranked.append((pieces[-1:] == eos, score, [self._ids[piece] for piece in pieces]))
        ranked.sort(key=lambda entry: entry[:2], reverse=True)
        return [(ids, float(score)) for _, score, ids in ranked]


def _in_own_thread(function, *args, **kwargs):
    """`function(*args, **kwargs)`, called in a thread of its own (its error re-raised here).

    `ctranslate2.Translator` sets its calling thread's OpenMP thread count to
    `intra_threads`; called here, it leaves the caller's alone (PyTorch's
    threads, for one, would otherwise drop to 1 with `intra_threads=1`).
    """
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(function, *args, **kwargs).result()


def _same_length_chunks(order, ids, batch_size):
    """Consecutive runs of `order` whose inputs have one length, at most `batch_size` long."""
    chunk = []
    for i in order:
        if chunk and (len(chunk) == batch_size or len(ids[i]) != len(ids[chunk[0]])):
            yield chunk
            chunk = []
        chunk.append(i)
    if chunk:
        yield chunk
