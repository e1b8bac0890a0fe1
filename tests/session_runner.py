"""A SavedModel run the way TF Serving runs it: one session over the `serve` MetaGraph.

    python tests/session_runner.py VERSION_DIR < batches.json

reads a JSON list of batches (lists of strings), runs `serving_default` on
each and prints one JSON line: `[[translations, scores], ...]`.

Like the model server it has TensorFlow and TensorFlow Text only: importing
this module forbids Keras and the project. TensorFlow's session-based loader
(`tf.compat.v1.saved_model.loader`, `TF_LoadSessionFromSavedModel` in the C
API) restores the variables with the MetaGraph's restore op and runs the
signature's tensors by name, as TF Serving does; it reads nothing that only
`tf.saved_model.load`'s Python objects carry. `serving_standin.py` serves
through `SessionModel`.
"""

import json
import sys

import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the SentencePiece ops, as the server links them)


class Forbid:
    """No Keras and no project code past this point: the server has neither."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("keras", "keras_hub", "keras_transformer"):
            raise ImportError(f"the serving process imported {name}")


sys.meta_path.insert(0, Forbid())


class SessionModel:
    """A version directory loaded into a `tf.compat.v1.Session` with the `serve` tag."""

    def __init__(self, path):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], path)
        # The signatures as the MetaGraphDef names them: tensor names, dtypes, shapes.
        self.signatures = {
            name: signature
            for name, signature in meta_graph.signature_def.items()
            if not name.startswith("__")  # "__saved_model_init_op" is no endpoint
        }

    def signature(self, signature_name):
        name = signature_name or "serving_default"
        if name not in self.signatures:
            raise ValueError(f"no signature {name!r}; the model has {sorted(self.signatures)}")
        return self.signatures[name]

    def input_names(self, signature_name):
        return sorted(self.signature(signature_name).inputs)

    def run(self, signature_name, inputs):
        """`inputs`: name -> array-like. Returns name -> numpy array."""
        signature = self.signature(signature_name)
        if set(inputs) != set(signature.inputs):
            raise ValueError(
                f"inputs {sorted(inputs)} do not match the signature's {sorted(signature.inputs)}"
            )
        feeds = {
            info.name: as_feed(name, inputs[name], info) for name, info in signature.inputs.items()
        }
        fetches = {name: info.name for name, info in signature.outputs.items()}
        return self.session.run(fetches, feeds)


def as_feed(name, value, info):
    """`value` as an array of the input's dtype.

    A value of another kind is refused, as the model server refuses it, not converted.
    """
    dtype = tf.dtypes.as_dtype(info.dtype)
    if dtype == tf.string:
        array = np.asarray(value, dtype=object)  # bytes stay bytes, trailing NULs included
        if not all(isinstance(item, (str, bytes)) for item in array.flat):
            raise ValueError(f"input {name!r} expects strings")
        return array
    array = np.asarray(value)
    if array.size and array.dtype.kind not in "biuf":
        raise ValueError(f"input {name!r} expects {dtype.name}, not {array.dtype}")
    return array.astype(dtype.as_numpy_dtype)


def main():
    model = SessionModel(sys.argv[1])
    results = []
    for batch in json.loads(sys.stdin.read()):
        outputs = model.run("serving_default", {"text": [text.encode("utf-8") for text in batch]})
        translations = [text.decode("utf-8") for text in outputs["translation"]]
        results.append([translations, outputs["score"].tolist()])
    print(json.dumps(results))


if __name__ == "__main__":
    main()
