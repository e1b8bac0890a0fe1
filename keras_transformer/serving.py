"""Reading a TF Serving export back, the way TF Serving reads it.

`load_translator` and `check_export` load `saved_models/NAME/<version>/` in
TensorFlow's session-based loader, as TF Serving's model server does: a
`tf.compat.v1.Session` over the MetaGraph tagged `serve` (its restore op fills
the variables), the signatures' input and output tensors looked up by name in
the MetaGraphDef and run. An export that works here needs nothing that only
`tf.saved_model.load`'s Python objects carry. `export.py` writes the export.
"""

import os
import subprocess
import sys

from keras_transformer.ctranslate2.convert import DECODING_FILE as CTRANSLATE2_DECODING_FILE
from keras_transformer.decoding.translator import TextTranslator
from keras_transformer.export import TOKENIZER_ASSET, versions
from keras_transformer.tokenization import Tokenizer

# A script that imports TensorFlow and TensorFlow Text only: what the model server has.
SESSION_CHECK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "session_check.py")


class SavedModelTranslator(TextTranslator):
    """A SavedModel's signatures with the `Translator` interface.

    Returned by `load_translator`: `translate`, `translate_file`,
    `translate_ids` and `logits` run the exported graph in a session. One
    instance may be called from several threads, as one TF Serving session is.
    """

    def __init__(self, path):
        from keras_transformer import session_check

        self.path = path
        self.tokenizer = Tokenizer.load(os.path.join(path, "assets", TOKENIZER_ASSET))
        self._session, self.signatures = session_check.load(path)
        self._run = session_check.run

    def run(self, signature_name, **inputs):
        """Runs one signature by its MetaGraphDef tensor names: input name -> array."""
        return self._run(self._session, self.signatures[signature_name], inputs)

    def translate(self, texts, return_scores=False, progress=None, batch_size=64):
        texts = list(texts)
        translations, scores = [], []
        for start in range(0, len(texts), batch_size):
            batch = [text.encode("utf-8") for text in texts[start : start + batch_size]]
            outputs = self.run("serving_default", text=batch)
            translations += [text.decode("utf-8") for text in outputs["translation"]]
            scores += [float(score) for score in outputs["score"]]
            if progress:
                progress(len(translations), len(texts))
        return (translations, scores) if return_scores else translations

    def translate_ids(self, token_ids):
        """`(B, S)` int32 ids -> `((B, T) ids of the best hypothesis, (B,) scores)`."""
        import numpy as np

        outputs = self.run("translate_ids", token_ids=np.asarray(token_ids, "int32"))
        return outputs["token_ids"], outputs["score"]

    def logits(self, encoder_token_ids, decoder_token_ids):
        import numpy as np

        outputs = self.run(
            "logits",
            encoder_token_ids=np.asarray(encoder_token_ids, "int32"),
            decoder_token_ids=np.asarray(decoder_token_ids, "int32"),
        )
        return outputs["logits"]


def load_translator(path):
    """Loads an export for Python use, with the `Translator` interface.

    `path`: a SavedModel version directory (`saved_models/NAME/<version>`), a
    base directory (`saved_models/NAME`, its latest version), or a CTranslate2
    directory written by `export_ctranslate2`.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"No export directory at {path}")
    if os.path.isfile(os.path.join(path, CTRANSLATE2_DECODING_FILE)):
        from keras_transformer.ctranslate2 import CTranslate2Translator

        return CTranslate2Translator(path)
    numbered = versions(path)
    if not os.path.exists(os.path.join(path, "saved_model.pb")) and numbered:
        path = os.path.join(path, str(max(numbered)))
    if not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise FileNotFoundError(f"{path} holds no saved_model.pb and no numeric version directory")
    return SavedModelTranslator(path)


def check_export(directory, texts):
    """Runs `serving_default` on `texts` in a fresh process as TF Serving would; returns its lines.

    The process imports only `tensorflow` and `tensorflow_text` and runs the
    export in a session with the `serve` tag. Raises `RuntimeError` with the
    process's error when it fails.
    """
    result = subprocess.run(
        [sys.executable, "-I", SESSION_CHECK, os.path.abspath(directory), *texts],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=os.path.dirname(os.path.abspath(directory)),
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"The export did not run in TF Serving's session loader:\n{result.stderr[-3000:]}"
        )
    return result.stdout.rstrip("\n").splitlines()
