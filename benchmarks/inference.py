"""Fast CPU inference: our decoders, the TF Serving SavedModel and CTranslate2, side by side.

One trained work directory (its `model.keras`, tokenizer and decoding
settings; random weights would not do: lengths and early stopping matter),
one test set (Multi30k `test2016`, 1,000 sentences, by default), beam 4 with
the work directory's length penalty, each peer in its own process so that its
peak resident memory is its own:

- `translator-tensorflow`, `translator-jax`: `Translator` (XLA-compiled search);
- `savedmodel-portable`, `savedmodel-xla`: the TF Serving export, run in
  TensorFlow's session loader (`kt.load_translator`);
- `ct2-float32`, `ct2-int8`: `export_ctranslate2` with that quantization, run
  by `CTranslate2Translator`, one batch at a time with `--threads` threads;
- `ct2-float32-parallel`, `ct2-int8-parallel`: the same exports, `--threads`
  batches at a time with one thread each (`inter_threads`, `intra_threads=1`).

The ONNX export holds the forward pass, not the search, so ONNX Runtime is
measured where it applies, in a second table: the teacher-forced forward
pass over the test pairs (source and reference, batches of 64 sorted by
length), sentences/s and the largest difference of a sentence's
log-probability from the Keras model's:

- `forward-keras-jax` (XLA), `forward-keras-torch` (eager): `predict_on_batch`;
- `forward-onnxruntime`: `export_onnx`, run by ONNX Runtime with `--threads`.

Each peer translates the whole test set once to warm up (compilation, caches)
and once timed; sentences/s is the timed pass. BLEU and chrF are sacreBLEU's
on the timed pass's output.

    python benchmarks/inference.py --workdir runs/quality/multi30k-en-de/ours/workdir
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from forward_pass import FORWARD_PEERS, forward_worker, print_forward  # noqa: E402
from harness import cpu_model, peak_rss_mib, print_table, report, run_worker  # noqa: E402

PEERS = {
    "translator-tensorflow": "tensorflow",
    "translator-jax": "jax",
    "savedmodel-portable": "tensorflow",
    "savedmodel-xla": "tensorflow",
    "ct2-float32": "jax",
    "ct2-int8": "jax",
    "ct2-float32-parallel": "jax",
    "ct2-int8-parallel": "jax",
}
IN_PROCESS = ("translator-tensorflow", "translator-jax")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a trained work directory")
    parser.add_argument("--data", default=os.path.join("..", "shared", "data"))
    parser.add_argument("--source", default="multi30k/test2016.en")
    parser.add_argument("--reference", default="multi30k/test2016.de")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--beam-size", type=int, default=4)
    parser.add_argument(
        "--threads", type=int, default=2, help="CTranslate2's and ONNX Runtime's CPU threads"
    )
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated")
    parser.add_argument(
        "--forward-peers", default=",".join(FORWARD_PEERS), help="comma-separated; '' for none"
    )
    parser.add_argument("--worker", nargs=2, metavar=("PEER", "DIR"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def make_translator(peer, args, scratch):
    import keras_transformer as kt

    if peer.startswith("ct2-"):
        from keras_transformer.ctranslate2 import CTranslate2Translator, export_ctranslate2

        quantization = peer.split("-")[1]
        out = os.path.join(scratch, f"ct2-{quantization}")
        if not os.path.isdir(out):  # the parallel peer reuses the export
            export_ctranslate2(args.workdir, out, quantization=quantization)
        if peer.endswith("-parallel"):
            threads = {"inter_threads": args.threads, "intra_threads": 1}
        else:
            threads = {"intra_threads": args.threads}
        return CTranslate2Translator(out, beam_size=args.beam_size, **threads)
    if peer.startswith("savedmodel-"):
        version = kt.export_saved_model(
            args.workdir, os.path.join(scratch, peer), jit_compile=peer.endswith("xla")
        )
        return kt.load_translator(version)
    return kt.Translator.from_workdir(args.workdir, beam_size=args.beam_size)


def read_pairs(args):
    from keras_transformer.data import read_parallel

    return read_parallel(
        os.path.join(args.data, args.source), os.path.join(args.data, args.reference)
    )[: args.sentences]


def worker(args):
    from keras_transformer import evaluation

    peer, scratch = args.worker
    if peer in FORWARD_PEERS:
        return forward_worker(args, peer, scratch, read_pairs(args))
    pairs = read_pairs(args)
    sources, references = [s for s, _ in pairs], [r for _, r in pairs]
    began = time.perf_counter()
    translator = make_translator(peer, args, scratch)
    prepare = time.perf_counter() - began
    began = time.perf_counter()
    translator.translate(sources)  # warm: compilation, caches
    warm = time.perf_counter() - began
    began = time.perf_counter()
    translations = translator.translate(sources)
    seconds = time.perf_counter() - began
    scores = evaluation.score(translations, references)
    report({
        "sentences_per_s": len(sources) / seconds, "seconds": seconds, "first_pass_s": warm,
        "prepare_s": prepare, "bleu": scores.bleu, "chrf": scores.chrf,
        "peak_rss_mib": peak_rss_mib(), "sentences": len(sources),
    })  # fmt: skip


def run_peers(names, backends, forwarded):
    """Runs each of the comma-separated `names` in its own worker process (on its backend in
    `backends`), sharing one scratch directory; returns `{name: result}`."""
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for peer in [name for name in names.split(",") if name]:
            print(f"running {peer} ...", file=sys.stderr, flush=True)
            results[peer] = run_worker(
                os.path.abspath(__file__), [peer, scratch, *forwarded], backend=backends[peer]
            )
    return results


def main():
    args = parse_args()
    if args.worker:
        return worker(args)
    args.workdir = os.path.abspath(args.workdir)
    forwarded = [a for a in sys.argv[1:]]
    forwarded[forwarded.index("--workdir") + 1] = args.workdir
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores", flush=True)
    results = run_peers(args.peers, PEERS, forwarded)
    fastest = max(
        (
            results[p]["sentences_per_s"]
            for p in IN_PROCESS
            if "sentences_per_s" in results.get(p, {})
        ),
        default=None,
    )
    reference_bleu = results.get("translator-tensorflow", {}).get("bleu")
    rows = []
    for peer, result in results.items():
        if "error" in result:
            rows.append({"peer": peer, "speed": result["error"]})
            continue
        rows.append({
            "peer": peer, "speed": result["sentences_per_s"], "bleu": result["bleu"],
            "chrf": result["chrf"], "rss": result["peak_rss_mib"],
            "ratio": result["sentences_per_s"] / fastest if fastest else None,
            "delta": result["bleu"] - reference_bleu if reference_bleu is not None else None,
        })  # fmt: skip
    print_table(
        rows,
        [
            ("peer", "peer"),
            ("speed", "sentences/s"),
            ("ratio", "x fastest in-process"),
            ("bleu", "BLEU"),
            ("delta", "BLEU - TF Translator"),
            ("chrf", "chrF"),
            ("rss", "peak RSS MiB"),
        ],
    )
    forward = run_peers(args.forward_peers, FORWARD_PEERS, forwarded)
    if forward:
        print_forward(forward)
    for result in forward.values():
        result.pop("scores", None)  # 1,000 numbers; the table has their largest difference
    print(json.dumps({"cpu": cpu_model(), "args": vars(args), "results": results,
                      "forward": forward}))  # fmt: skip


if __name__ == "__main__":
    main()
