"""Serving latency: the exported SavedModel's `serving_default` against the in-process Translator.

One model (the `small` preset, random weights, so every sentence decodes to
its full length limit and the work is the same for every peer), one tokenizer
(trained on the built-in number-words corpus), beam 4, alpha 0.6:

- in-process: `Translator.translate` under the TensorFlow backend (XLA);
- SavedModel: `export_saved_model(...)` loaded in a bare process that imports
  only tensorflow and tensorflow_text, as TF Serving runs it; once with the
  default portable graph and once with `jit_compile=True` (XLA in the graph,
  TF Serving flag `--xla_cpu_compilation_enabled=true`).

Each peer runs in its own subprocess. Latency per request of 1, 8 and 64
sentences (text in, text out, tokenization included), the median of
`--repeats` calls after one warm-up call per batch size (compilation apart).

    python benchmarks/serving_latency.py [--repeats 5]
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import add_model_arguments, print_table, report, run_worker  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--batches", default="1,8,64", help="sentences per request")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-extra-length", type=int, default=50)
    parser.add_argument("--worker", nargs=2, metavar=("ROLE", "DIR"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sentences(count):
    import keras_transformer as kt

    return [source for source, _ in kt.data.number_words("test", "de", size=count, seed=0)]


def latencies(translate, args):
    """{batch size: (first call s, median s)} for `translate(list[str])`."""
    results = {}
    for size in map(int, args.batches.split(",")):
        texts = sentences(size)
        began = time.perf_counter()
        translate(texts)
        first = time.perf_counter() - began
        times = []
        for _ in range(args.repeats):
            began = time.perf_counter()
            translate(texts)
            times.append(time.perf_counter() - began)
        results[size] = (first, statistics.median(times))
    return results


def prepare_and_time_in_process(args, directory):
    """Builds the model, exports both SavedModels, times the in-process Translator."""
    import keras

    import keras_transformer as kt

    keras.utils.set_random_seed(0)
    pairs = kt.data.number_words("train", "de", size=5000, seed=0)
    tokenizer = kt.Tokenizer.train([t for pair in pairs for t in pair], vocab_size=args.vocab_size)
    config = kt.TransformerConfig.small(
        vocab_size=tokenizer.vocab_size,
        hidden_dim=args.hidden_dim,
        intermediate_dim=args.intermediate_dim,
        num_heads=args.num_heads,
        num_layers=args.num_layers,
        max_length=128,
    )
    model = kt.build_transformer(config)
    translator = kt.Translator(
        model, tokenizer, max_extra_length=args.max_extra_length, batch_size=args.batch_size
    )
    for jit_compile in (False, True):
        began = time.perf_counter()
        name = "xla" if jit_compile else "portable"
        kt.export_saved_model(translator, os.path.join(directory, name), jit_compile=jit_compile)
        print(f"exported {name} in {time.perf_counter() - began:.1f}s", file=sys.stderr)
    return latencies(translator.translate, args)


def time_saved_model(args, version_dir):
    """A bare process: tensorflow and tensorflow_text only."""
    import tensorflow as tf
    import tensorflow_text  # noqa: F401

    serve = tf.saved_model.load(version_dir).signatures["serving_default"]

    def translate(texts):
        outputs = serve(text=tf.constant(texts, dtype=tf.string))
        return [text.decode("utf-8") for text in outputs["translation"].numpy()]

    return latencies(translate, args)


def worker(args):
    role, directory = args.worker
    if role == "in-process":
        results = prepare_and_time_in_process(args, directory)
    else:
        results = time_saved_model(args, directory)
    report({str(size): value for size, value in results.items()})


def main():
    args = parse_args()
    if args.worker:
        return worker(args)
    script = os.path.abspath(__file__)
    forwarded = sys.argv[1:]
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        peers = {"in-process Translator (XLA)": ("in-process", directory, "tensorflow")}
        for name, label in (("portable", "SavedModel, portable graph"), ("xla", "SavedModel, XLA")):
            peers[label] = ("saved-model", os.path.join(directory, name, "1"), None)
        results = {}
        for label, (role, path, backend) in peers.items():
            print(f"running {label} ...", file=sys.stderr, flush=True)
            results[label] = run_worker(script, [role, path, *forwarded], backend=backend)
    reference = results["in-process Translator (XLA)"]
    for label, result in results.items():
        if "error" in result:
            rows.append({"peer": label, "first": result["error"]})
            continue
        for size, (first, median) in result.items():
            baseline = reference.get(size, [None, None])[1] if "error" not in reference else None
            rows.append(
                {
                    "peer": label,
                    "batch": int(size),
                    "first": first,
                    "ms": median * 1000,
                    "per_sentence": median * 1000 / int(size),
                    "ratio": median / baseline if baseline else None,
                }
            )
    print_table(
        rows,
        [
            ("peer", "peer"),
            ("batch", "sentences"),
            ("first", "first call s"),
            ("ms", "median ms"),
            ("per_sentence", "ms/sentence"),
            ("ratio", "x in-process"),
        ],
    )
    print(json.dumps({label: result for label, result in results.items()}))


if __name__ == "__main__":
    main()
