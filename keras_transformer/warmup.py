"""TF Serving's warmup file: requests the model server replays when it loads a version.

TF Serving reads `assets.extra/tf_serving_warmup_requests`, a TFRecord file of
`tensorflow.serving.PredictionLog` records, and runs each request before the
version takes traffic, so the first real request does not pay for the graph's
first run or, with `jit_compile`, XLA's compilation. TensorFlow by nature (a
TFRecord writer); the records are written in the protocol-buffer wire format,
so exporting needs no `tensorflow-serving-api`.
"""

import os

WARMUP_FILE = "tf_serving_warmup_requests"  # in assets.extra/, where TF Serving looks
WARMUP_BATCH_SIZES = (1, 8, 64)


def write_warmup(tokenizer, buckets, jit_compile, out):
    """`assets.extra/tf_serving_warmup_requests`: requests TF Serving replays at load time.

    One sentence per source length bucket. XLA compiles a program per padded
    shape, so with `jit_compile` each goes at batch sizes 1, 8 and 64 (the
    graph pads batches to powers of two; other sizes still compile on first
    use). The portable graph compiles nothing: batch size 1 per bucket.
    """
    import tensorflow as tf

    directory = os.path.join(out, "assets.extra")
    os.makedirs(directory, exist_ok=True)
    with tf.io.TFRecordWriter(os.path.join(directory, WARMUP_FILE)) as writer:
        for text in _warmup_texts(tokenizer, buckets):
            for rows in WARMUP_BATCH_SIZES if jit_compile else WARMUP_BATCH_SIZES[:1]:
                tensor = tf.make_tensor_proto([text.encode("utf-8")] * rows, dtype=tf.string)
                writer.write(_prediction_log(tensor.SerializeToString()))


def _warmup_texts(tokenizer, buckets):
    """A sentence per source bucket whose pieces and EOS fill it: the longest word, repeated."""
    pieces = map(tokenizer.id_to_piece, range(tokenizer.vocab_size))
    words = [piece[1:] for piece in pieces if piece.startswith("\u2581") and piece[1:].isalpha()]
    word = max(words, key=len, default="a")
    texts = []
    for bucket in buckets:
        count = bucket - 1  # one piece each, most likely; then EOS
        while count > 1 and len(tokenizer.encode(" ".join([word] * count))) > bucket:
            count -= 1
        texts.append(" ".join([word] * count))
    return texts


def _prediction_log(text_tensor):
    """A `tensorflow.serving.PredictionLog` holding a Predict request on `serving_default`.

    Written in the protocol-buffer wire format so that exporting needs no
    `tensorflow-serving-api`; the field numbers are those of TF Serving's
    `prediction_log.proto`, `predict.proto` and `model.proto` (the tests parse
    the records with those protos).
    """
    model_spec = _field(3, b"serving_default")  # ModelSpec.signature_name
    inputs_entry = _field(1, b"text") + _field(2, text_tensor)  # map<string, TensorProto>
    request = _field(1, model_spec) + _field(2, inputs_entry)  # PredictRequest
    return _field(6, _field(1, request))  # PredictionLog.predict_log -> PredictLog.request


def _field(number, payload):
    """A length-delimited protocol-buffer field: key, length, bytes."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value):
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)
