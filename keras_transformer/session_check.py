"""An export run as TF Serving's model server runs it, with what the server has.

    python -I keras_transformer/session_check.py VERSION_DIR TEXT [TEXT ...]

loads `VERSION_DIR` in TensorFlow's session-based loader (a
`tf.compat.v1.Session` over the MetaGraph tagged `serve`, the variables
restored by its restore op), runs `serving_default` on the texts by the
tensor names its signature gives, and prints one line per text. This module
imports TensorFlow and TensorFlow Text only, never Keras or the rest of the
package, so that run as a script (`-I` keeps the package off `sys.path`) it
proves the export needs nothing the server lacks. `serving.py` uses `load`
and `run` in-process and runs this file for `keras-transformer export --check`.
"""

import sys

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the SentencePiece ops, as the server links them)

SERVE_TAG = "serve"


def load(path):
    """`path` in a new session: `(session, {signature name: SignatureDef})`."""
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [SERVE_TAG], path)
    return session, dict(meta_graph.signature_def)


def run(session, signature, inputs):
    """Runs a `SignatureDef` by its tensor names: `{input: array}` -> `{output: array}`."""
    feeds = {signature.inputs[name].name: value for name, value in inputs.items()}
    fetches = {name: info.name for name, info in signature.outputs.items()}
    return session.run(fetches, feeds)


def main(argv):
    if len(argv) < 2:
        sys.exit("usage: session_check.py VERSION_DIR TEXT [TEXT ...]")
    session, signatures = load(argv[0])
    texts = argv[1:]
    outputs = run(session, signatures["serving_default"], {"text": [t.encode() for t in texts]})
    translations, scores = outputs["translation"], outputs["score"]
    for text, translation, score in zip(texts, translations, scores, strict=True):
        print(f"  {text!r} -> {translation.decode('utf-8')!r} (score {score:.4f})")


if __name__ == "__main__":
    main(sys.argv[1:])
