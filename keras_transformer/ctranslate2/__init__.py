"""CTranslate2: the trained Transformer as OpenNMT's fast inference engine runs it.

`export_ctranslate2` (in `convert.py`) writes a CTranslate2 model directory;
`CTranslate2Translator` (in `translator.py`) translates with it through the
`Translator` interface. `ctranslate2` is an optional dependency:
`pip install ".[ctranslate2]"`.
"""

from keras_transformer.ctranslate2.convert import (
    DECODING_FILE,
    QUANTIZATIONS,
    TOKENIZER_FILE,
    export_ctranslate2,
    import_ctranslate2,
)
from keras_transformer.ctranslate2.translator import CTranslate2Translator

__all__ = [
    "DECODING_FILE",
    "QUANTIZATIONS",
    "TOKENIZER_FILE",
    "CTranslate2Translator",
    "export_ctranslate2",
    "import_ctranslate2",
]
