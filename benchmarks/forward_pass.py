"""The forward pass of `benchmarks/inference.py`: ONNX Runtime beside Keras.

The ONNX export holds the forward pass, not the search, so ONNX Runtime is
measured on that: the teacher-forced log-probabilities of the test pairs'
references, in batches of 64 sorted by length, timed over the forward passes
alone.
"""

import os
import time

from harness import peak_rss_mib, print_table, report

FORWARD_PEERS = {
    "forward-keras-torch": "torch",
    "forward-keras-jax": "jax",
    "forward-onnxruntime": "torch",
}
FORWARD_BATCH = 64


def make_forward(peer, args, scratch):
    """`(forward, tokenizer, max_length)`: `forward` maps `(encoder_ids, decoder_ids)` to
    float32 logits."""
    import keras
    import numpy as np

    import keras_transformer as kt
    from keras_transformer import workdir
    from keras_transformer.model_inputs import DECODER_INPUT, ENCODER_INPUT

    model_path, tokenizer_path, _ = workdir.model_files(args.workdir)
    tokenizer = kt.Tokenizer.load(tokenizer_path)
    model = keras.saving.load_model(model_path, compile=False)
    if peer == "forward-onnxruntime":
        import onnxruntime

        out = kt.export_onnx(model, os.path.join(scratch, peer), tokenizer)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(
            os.path.join(out, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )

        def forward(encoder_ids, decoder_ids):
            feed = {ENCODER_INPUT: encoder_ids, DECODER_INPUT: decoder_ids}
            return session.run(None, feed)[0]

    else:

        def forward(encoder_ids, decoder_ids):
            inputs = {ENCODER_INPUT: encoder_ids, DECODER_INPUT: decoder_ids}
            return np.asarray(model.predict_on_batch(inputs), dtype="float32")

    return forward, tokenizer, model.config.max_length


def forward_worker(args, peer, scratch, pairs):
    """Teacher-forced log-probabilities of the references, timed over the forward passes."""
    import numpy as np

    from keras_transformer.data.pipeline import tokenize_pairs
    from keras_transformer.tokenization import BOS_ID, PAD_ID

    began = time.perf_counter()
    forward, tokenizer, limit = make_forward(peer, args, scratch)
    prepare = time.perf_counter() - began
    sources, targets, _ = tokenize_pairs(pairs, tokenizer, limit)
    order = sorted(range(len(sources)), key=lambda i: (len(sources[i]), len(targets[i])))
    batches = []
    for start in range(0, len(order), FORWARD_BATCH):
        rows = order[start : start + FORWARD_BATCH]
        encoder_ids = np.full((len(rows), _width(sources, rows, limit)), PAD_ID, "int32")
        labels = np.full((len(rows), _width(targets, rows, limit)), PAD_ID, "int32")
        for n, i in enumerate(rows):
            encoder_ids[n, : len(sources[i])] = sources[i]
            labels[n, : len(targets[i])] = targets[i]
        decoder_ids = np.concatenate([np.full((len(rows), 1), BOS_ID, "int32"), labels[:, :-1]], 1)
        decoder_ids[labels == PAD_ID] = PAD_ID
        batches.append((rows, encoder_ids, decoder_ids, labels))
    for _, encoder_ids, decoder_ids, _ in batches:  # warm: compilation
        forward(encoder_ids, decoder_ids)
    outputs, seconds = [], 0.0
    for _, encoder_ids, decoder_ids, _ in batches:
        began = time.perf_counter()
        outputs.append(forward(encoder_ids, decoder_ids))
        seconds += time.perf_counter() - began
    scores = [0.0] * len(sources)
    for (rows, _, _, labels), logits in zip(batches, outputs, strict=True):
        logits = logits - logits.max(-1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        picked = np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
        for n, i in enumerate(rows):
            scores[i] = float((picked[n] * (labels[n] != PAD_ID)).sum())
    report({
        "sentences_per_s": len(sources) / seconds, "seconds": seconds, "prepare_s": prepare,
        "scores": scores, "peak_rss_mib": peak_rss_mib(), "sentences": len(sources),
    })  # fmt: skip


def _width(sequences, rows, limit):
    # Lengths rounded up to a multiple of 8: a few shapes for XLA to compile.
    return min(-(-max(len(sequences[i]) for i in rows) // 8) * 8, limit)


def print_forward(forward):
    """The forward-pass table: sentences/s, and agreement with the first Keras peer."""
    measured = {peer: result for peer, result in forward.items() if "scores" in result}
    reference = next((r for p, r in measured.items() if p.startswith("forward-keras")), None)
    base = max((r["sentences_per_s"] for p, r in measured.items() if p.startswith("forward-keras")),
               default=None)  # fmt: skip
    rows = []
    for peer, result in forward.items():
        if "error" in result:
            rows.append({"peer": peer, "speed": result["error"]})
            continue
        gap = None
        if reference is not None:
            paired = zip(result["scores"], reference["scores"], strict=True)
            gap = max(abs(a - b) for a, b in paired)
        rows.append({
            "peer": peer, "speed": result["sentences_per_s"],
            "gap": None if gap is None else f"{gap:.1e}",
            "ratio": result["sentences_per_s"] / base if base else None,
            "rss": result["peak_rss_mib"],
        })  # fmt: skip
    print("\nForward pass, teacher-forced over the test pairs (batches of 64):\n")
    print_table(rows, [("peer", "peer"), ("speed", "sentences/s"),
                       ("ratio", "x fastest Keras"), ("gap", "max |log p - Keras's|"),
                       ("rss", "peak RSS MiB")])  # fmt: skip
