"""On a GPU: XLA compilation, training and decoding throughput, and a quality check.

Made for an accelerator machine that has JAX and PyTorch but no TensorFlow:
batches are built with NumPy and text goes through SentencePiece's Python
package, so nothing here loads TensorFlow. Each backend, or each copy of the
library, runs in its own subprocess (Keras fixes its backend at import) and
prints one JSON line; this process prints the tables and the ratios.

    # JAX (XLA) against PyTorch (eager) on the base model, side by side:
    python benchmarks/gpu_check.py throughput --backends jax,torch

    # float32 and bfloat16 (float32 variables) in one run, per backend:
    python benchmarks/gpu_check.py throughput --precision float32,mixed_bfloat16

    # The paper's batch, ~25,000 tokens a side (768 x 32), in 3 micro-batches:
    python benchmarks/gpu_check.py throughput --batch-size 768 --accumulation-steps 3

    # The Multi30k en->de recipe at equal steps, once per copy of the library
    # (e.g. before and after a change), on JAX:
    python benchmarks/gpu_check.py quality --data ../shared/data/multi30k \\
        --steps 3000 --tree before=/path/to/old/checkout --tree after=.

`throughput` trains on random token ids (a batch of `--batch-size` pairs of
`--length` tokens per side; `--accumulation-steps K` splits it into K
micro-batches an update) and decodes `--decode-batch` random sentences
with the untrained model, so every hypothesis runs to its length limit
(input + 50): the worst case for the search. `--precision` takes a comma
list of Keras dtype policies; each backend runs once per policy, and the
ratios compare each policy with the backend's first. `quality` trains the `small`
preset with the recipe of the README's Multi30k row (dropout 0.3, warmup
800, rate x0.5, 2,048-token batches), then translates test2016 with beam 4
(last weights, no averaging) and scores it with sacreBLEU.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from flops import peak_tflops, training_flops  # noqa: E402
from harness import run_worker  # noqa: E402

SCRIPT = os.path.abspath(__file__)
TRAIN_RECIPE = dict(warmup_steps=800, learning_rate_scale=0.5, max_tokens=2048)
BUCKETS = (16, 32, 64)


def _device_name():
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return "?"


def _peak_device_memory_gib():
    """Peak memory the backend allocated on its first device, or None where unknown."""
    import keras

    try:
        if keras.backend.backend() == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            peak = stats.get("peak_bytes_in_use")
        else:
            import torch

            peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    except Exception:  # a device without memory statistics
        peak = None
    return None if peak is None else peak / 2**30


def _random_ids(rng, rows, length, vocab_size):
    import keras_transformer as kt

    return rng.integers(kt.EOS_ID + 1, vocab_size, size=(rows, length)).astype("int32")


def measure_throughput(args):
    """Training tokens/s and decoding sentences/s of one backend, as a dict."""
    import keras
    import numpy as np

    import keras_transformer as kt
    from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    config = kt.TransformerConfig.preset(args.preset, args.vocab_size)
    model = kt.build_transformer(config, dtype=args.precision)
    # --accumulation-steps K: each update takes K micro-batches of batch/K pairs,
    # so one device reaches the paper's ~25,000 tokens a side.
    accumulation = args.accumulation_steps
    if args.batch_size % accumulation:
        raise ValueError(
            f"--batch-size {args.batch_size} is not a multiple of --accumulation-steps "
            f"{accumulation}"
        )
    micro_batch = args.batch_size // accumulation
    training = kt.TrainingConfig(accumulation_steps=accumulation)
    kt.compile_model(model, training, jit_compile=backend != "torch")
    rows = args.batch_size * args.steps

    def batch(count):
        ids = _random_ids(rng, count, args.length, args.vocab_size)
        return {ENCODER_INPUT: ids, DECODER_INPUT: np.roll(ids, 1, axis=1)}, ids

    x, y = batch(args.batch_size)
    began = time.perf_counter()
    model.fit(x, y, batch_size=micro_batch, epochs=1, verbose=0)  # traces and compiles
    first_step = time.perf_counter() - began
    x, y = batch(rows)
    began = time.perf_counter()
    model.fit(x, y, batch_size=micro_batch, epochs=1, verbose=0, shuffle=False)
    train_seconds = time.perf_counter() - began
    flops = training_flops(config, args.batch_size, args.length, args.length) * args.steps
    peak = peak_tflops(_device_name(), model.dtype_policy.name)

    result = {
        "backend": backend,
        "precision": model.dtype_policy.name,
        "device": _device_name(),
        "parameters": model.count_params(),
        "first_train_step_s": first_step,
        "train_tokens_per_s": 2 * rows * args.length / train_seconds,
        "train_steps_per_s": args.steps / train_seconds,
        "tokens_per_update": args.batch_size * args.length,
        "accumulation_steps": accumulation,
        "model_tflops_per_s": flops / train_seconds / 1e12,
        # Model FLOP utilization against the device's dense peak for this
        # precision (benchmarks/flops.py); None on a device not listed there.
        "mfu": flops / train_seconds / 1e12 / peak if peak else None,
    }
    source = _random_ids(rng, args.decode_batch, args.decode_length, args.vocab_size)
    for beam_size in (1, 4):
        translator = kt.Translator(model, tokenizer=None, beam_size=beam_size)
        began = time.perf_counter()
        translator.translate_ids(source)  # compiles
        compile_seconds = time.perf_counter() - began
        times = []
        for _ in range(3):
            began = time.perf_counter()
            sequences, _ = translator.translate_ids(source)
            times.append(time.perf_counter() - began)
        name = "greedy" if beam_size == 1 else f"beam{beam_size}"
        result[f"{name}_first_call_s"] = compile_seconds
        result[f"{name}_sentences_per_s"] = args.decode_batch / sorted(times)[1]
        result[f"{name}_output_length"] = int(sequences.shape[-1])
    result["peak_device_memory_gib"] = _peak_device_memory_gib()
    return result


def _token_budget_batches(pairs, max_tokens, seed):
    """Pairs of id lists -> list of `(x, labels)`: padded to a bucket, `max_tokens` per side."""
    import numpy as np

    import keras_transformer as kt
    from keras_transformer.model import DECODER_INPUT, ENCODER_INPUT

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    by_bucket = {}
    for i in order:
        source, target = pairs[i]
        longest = max(len(source), len(target) + 1)
        bucket = next((b for b in BUCKETS if b >= longest), None)
        if bucket is not None:
            by_bucket.setdefault(bucket, []).append(i)
    batches = []
    for bucket, members in by_bucket.items():
        size = max_tokens // bucket
        for start in range(0, len(members) - size + 1, size):  # full batches only
            chunk = members[start : start + size]
            sources = np.full((size, bucket), kt.PAD_ID, "int32")
            inputs = np.full((size, bucket), kt.PAD_ID, "int32")
            labels = np.full((size, bucket), kt.PAD_ID, "int32")
            for row, i in enumerate(chunk):
                source, target = pairs[i]
                sources[row, : len(source)] = source
                inputs[row, : len(target) + 1] = [kt.BOS_ID, *target]
                labels[row, : len(target) + 1] = [*target, kt.EOS_ID]
            batches.append(({ENCODER_INPUT: sources, DECODER_INPUT: inputs}, labels))
    return [batches[i] for i in rng.permutation(len(batches))]


def train_and_score(args):
    """Trains the Multi30k en->de recipe for `--steps` and scores test2016, as a dict."""
    import keras
    import numpy as np

    import keras_transformer as kt
    from keras_transformer.evaluation import score

    def read(split):
        return kt.data.read_parallel(
            os.path.join(args.data, f"{split}.en"), os.path.join(args.data, f"{split}.de")
        )

    train, valid, test = read("train"), read("valid"), read("test2016")[: args.test_size]
    tokenizer = kt.Tokenizer.train([text for pair in train for text in pair], vocab_size=8000)
    keras.utils.set_random_seed(args.seed)
    config = kt.TransformerConfig.small(tokenizer.vocab_size, dropout=0.3)
    model = kt.build_transformer(config)
    training = kt.TrainingConfig(seed=args.seed, **TRAIN_RECIPE)
    kt.compile_model(model, training, jit_compile=True)

    def encode(pairs):
        sources = tokenizer.encode([s for s, _ in pairs])
        targets = tokenizer.encode([t for _, t in pairs])
        return [(s, t[:-1]) for s, t in zip(sources, targets, strict=True)]  # t without EOS

    train_ids = encode(train)
    valid_batches = _token_budget_batches(encode(valid), training.max_tokens, 0)

    def batches():
        epoch = 0
        while True:
            yield from _token_budget_batches(train_ids, training.max_tokens, args.seed + epoch)
            epoch += 1

    stream = batches()
    curve = []
    began = time.perf_counter()
    for done in range(args.every, args.steps + 1, args.every):
        model.fit(stream, steps_per_epoch=args.every, epochs=1, verbose=0, shuffle=False)
        losses = [
            model.evaluate(x, y, verbose=0, return_dict=True)["loss"] for x, y in valid_batches
        ]
        curve.append({"step": done, "valid_loss": float(np.mean(losses))})
        print(f"step {done}: valid loss {curve[-1]['valid_loss']:.3f}", file=sys.stderr)
    train_seconds = time.perf_counter() - began

    references = [t for _, t in test]
    result = {"device": _device_name(), "train_seconds": train_seconds, "curve": curve}
    for beam_size in (1, 4):
        translator = kt.Translator(model, tokenizer, beam_size=beam_size)
        scores = score(translator.translate([s for s, _ in test]), references)
        name = "greedy" if beam_size == 1 else f"beam{beam_size}"
        result[f"{name}_bleu"] = scores.bleu
        result[f"{name}_chrf"] = scores.chrf
    result["bleu_signature"] = scores.bleu_signature
    return result


def _plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, result in results.items():
        if "curve" in result:
            steps = [point["step"] for point in result["curve"]]
            axes.plot(steps, [point["valid_loss"] for point in result["curve"]], label=name)
    axes.set_xlabel("optimizer steps")
    axes.set_ylabel("validation loss (label-smoothed)")
    axes.set_title("Multi30k en->de, small preset")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    throughput = commands.add_parser("throughput", help="training and decoding speed")
    throughput.add_argument("--backends", default="jax,torch")
    throughput.add_argument(
        "--precision", default="float32", help="comma list of Keras dtype policies"
    )
    throughput.add_argument("--preset", default="base")
    throughput.add_argument("--vocab-size", type=int, default=32000)
    throughput.add_argument("--batch-size", type=int, default=128)
    throughput.add_argument("--length", type=int, default=32, help="tokens per side")
    throughput.add_argument("--steps", type=int, default=50, help="timed training updates")
    throughput.add_argument(
        "--accumulation-steps", type=int, default=1,
        help="micro-batches per update (--batch-size is the update's batch)",
    )  # fmt: skip
    throughput.add_argument("--decode-batch", type=int, default=64)
    throughput.add_argument("--decode-length", type=int, default=24)
    quality = commands.add_parser("quality", help="Multi30k en->de at equal steps")
    quality.add_argument("--data", required=True, help="the multi30k folder")
    quality.add_argument("--tree", action="append", default=[], help="NAME=PATH of a checkout")
    quality.add_argument("--steps", type=int, default=3000)
    quality.add_argument("--every", type=int, default=500, help="steps between validations")
    quality.add_argument("--seed", type=int, default=1234)
    quality.add_argument("--test-size", type=int, default=None, help="test sentences scored")
    for command in (throughput, quality):
        command.add_argument("--out", default="runs/gpu_check", help="folder for JSON and PNG")
    args = parser.parse_args()

    if args.worker:
        work = measure_throughput if args.command == "throughput" else train_and_score
        print(json.dumps(work(args)))
        return
    os.makedirs(args.out, exist_ok=True)
    forwarded = sys.argv[1:]
    results = {}
    if args.command == "throughput":
        precisions = args.precision.split(",")
        for backend in args.backends.split(","):
            for precision in precisions:
                name = backend if len(precisions) == 1 else f"{backend}/{precision}"
                # The last --precision wins: the one this child measures.
                child = run_worker(
                    os.path.abspath(__file__), [*forwarded, f"--precision={precision}"], backend
                )
                results[name] = child
                print(f"{name}: {json.dumps(child)}", file=sys.stderr, flush=True)
    else:
        for tree in args.tree or ["current=."]:
            name, _, path = tree.partition("=")
            results[name] = run_worker(
                os.path.abspath(__file__), forwarded, "jax", pythonpath=os.path.abspath(path)
            )
        _plot(results, os.path.join(args.out, "quality_curves.png"))
    with open(os.path.join(args.out, f"{args.command}.json"), "w") as file:
        json.dump(results, file, indent=1)
    keys = sorted({key for result in results.values() for key in result if key != "curve"})
    for key in keys:
        print(f"{key:28s} " + "  ".join(f"{name}={results[name].get(key)}" for name in results))
    for first, second in _compared(list(results)):
        for key in keys:
            a, b = results[first].get(key), results[second].get(key)
            if isinstance(a, float) and isinstance(b, float) and a:
                print(f"ratio {second}/{first} {key:28s} {b / a:.3f}")


def _compared(names):
    """Pairs to print ratios for: each precision against its backend's first
    ("jax/float32" against "jax/mixed_bfloat16"); with one run per backend,
    the second backend against the first."""
    if all("/" not in name for name in names):
        return [tuple(names)] if len(names) == 2 else []
    firsts = {}
    for name in names:
        firsts.setdefault(name.split("/")[0], name)
    return [(firsts[name.split("/")[0]], name) for name in names if name not in firsts.values()]


if __name__ == "__main__":
    main()
