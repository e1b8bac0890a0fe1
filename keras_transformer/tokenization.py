"""The joint subword vocabulary (paper §5.1) and its special ids.

"Sentences were encoded using byte-pair encoding, which has a shared source-
target vocabulary": `Tokenizer.train` learns one SentencePiece BPE model on
source and target text together. The same model encodes text in Python
(`encode`, `decode`), inside `tf.data` and inside the exported serving graph
(`graph_tokenizer()`: keras-hub's `SentencePieceTokenizer`, which runs
TensorFlow Text's SentencePiece ops, which TF Serving links). The input
pipeline encodes in Python: once per run, and about 4x faster than the graph
ops on Multi30k's 58,000 sentences.

This module is the only home of the special token ids; every other module
imports them from here.
"""

import io
import os

import sentencepiece

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3


class Tokenizer:
    """A SentencePiece BPE model with fixed special ids.

    `PAD_ID` 0, `UNK_ID` 1, `BOS_ID` 2 and `EOS_ID` 3 hold for every trained
    model. Text is normalized (NFKC) before encoding, so `decode(encode(t))`
    returns the normalized `t`.

    Args:
        proto: bytes. A serialized SentencePiece model.

    Example:
        >>> tokenizer = Tokenizer.train(["ein Hund", "a dog"] * 50, vocab_size=30)
        >>> tokenizer.decode(tokenizer.encode("a dog"))
        'a dog'
    """

    def __init__(self, proto):
        self.proto = bytes(proto)
        self._processor = sentencepiece.SentencePieceProcessor(model_proto=self.proto)
        specials = {
            "PAD_ID": (self._processor.pad_id(), PAD_ID),
            "UNK_ID": (self._processor.unk_id(), UNK_ID),
            "BOS_ID": (self._processor.bos_id(), BOS_ID),
            "EOS_ID": (self._processor.eos_id(), EOS_ID),
        }
        wrong = {name: got for name, (got, want) in specials.items() if got != want}
        if wrong:
            raise ValueError(
                f"The SentencePiece model's special ids differ from ours "
                f"(PAD_ID={PAD_ID}, UNK_ID={UNK_ID}, BOS_ID={BOS_ID}, EOS_ID={EOS_ID}). "
                f"Received: {wrong}"
            )

    @classmethod
    def train(
        cls,
        texts,
        vocab_size=8000,
        character_coverage=1.0,
        max_sentences=2_000_000,
        seed_sentencepiece_size=1_000_000,
    ):
        """Learns a joint BPE vocabulary from `texts` (source and target sentences).

        The size is a ceiling: a small corpus may yield fewer pieces. keras-hub's
        `compute_sentence_piece_proto` cannot fix the special ids, so this calls
        SentencePiece's trainer, which keras-hub wraps, directly.

        Args:
            texts: iterable of str, source and target sentences together.
            vocab_size: int. The largest vocabulary to learn. Default 8000.
            character_coverage: float. Share of characters kept as pieces;
                1.0 keeps every character seen.
            max_sentences: int. Sentences sampled for training at most.
        """
        if vocab_size <= EOS_ID + 1:
            raise ValueError(f"vocab_size must exceed {EOS_ID + 1}. Received: {vocab_size}")
        sentences = [text for text in texts if text.strip()]
        if not sentences:
            raise ValueError("Tokenizer.train needs at least one non-empty sentence")
        model = io.BytesIO()
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=character_coverage,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=True,
            seed_sentencepiece_size=seed_sentencepiece_size,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
        return cls(model.getvalue())

    @property
    def vocab_size(self):
        return self._processor.get_piece_size()

    def encode(self, texts, add_bos=False, add_eos=True):
        """str -> list[int], or list[str] -> list[list[int]]. Appends EOS by default."""
        if not isinstance(texts, str):
            texts = list(texts)
        return self._processor.encode(texts, add_bos=add_bos, add_eos=add_eos)

    def decode(self, ids):
        """One sequence of ids (list or 1-D array) -> text.

        Stops at the first EOS and drops PAD and BOS.
        """
        ids = [int(i) for i in ids]
        if EOS_ID in ids:
            ids = ids[: ids.index(EOS_ID)]
        return self._processor.decode([i for i in ids if i not in (PAD_ID, BOS_ID)])

    def id_to_piece(self, token_id):
        return self._processor.id_to_piece(int(token_id))

    def save(self, path, overwrite=False):
        """Writes the SentencePiece model to `path`; refuses to replace a file unless asked."""
        from keras_transformer.workdir import atomic_write

        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        with atomic_write(path) as temporary, open(temporary, "wb") as file:
            file.write(self.proto)

    @classmethod
    def load(cls, path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No tokenizer model at {path}")
        with open(path, "rb") as file:
            return cls(file.read())

    def graph_tokenizer(self):
        """keras-hub's `SentencePieceTokenizer` on this model: the exported graph's tokenizer.

        It runs TensorFlow Text's SentencePiece ops and returns the pieces'
        ids without BOS/EOS; `export.py` puts it in the serving graph.
        """
        import keras_hub

        return keras_hub.tokenizers.SentencePieceTokenizer(proto=self.proto, dtype="int32")
