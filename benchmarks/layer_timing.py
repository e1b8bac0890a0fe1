"""The paper's Table 1, measured: time per layer against sequence length n.

Table 1 of the paper compares a self-attention layer, a recurrent layer and
a convolutional layer by complexity per layer (O(n^2 d), O(n d^2),
O(k n d^2)), sequential operations (O(1), O(n), O(1)) and maximum path
length (O(1), O(n), O(log_k n)). This script times one layer of each kind at
width d for n from 8 to 1,024 on this machine, forward and forward +
backward (a `train_on_batch` step), and fits the exponent of time against n
on the longest half of the lengths: where self-attention's n^2 term and
recurrence's n sequential steps show.

- self-attention: this package's `MultiHeadAttention` (h = 4), queries, keys
  and values from the same sequence;
- recurrence: `keras.layers.LSTM(d, return_sequences=True)`;
- convolution: `keras.layers.Conv1D(d, kernel_size=3, padding="same")`.

Each is a one-layer Keras model compiled as training compiles (XLA on JAX and
TensorFlow, eager on PyTorch); the median of `--repeats` calls after two.
Writes `table1.md`, `table1.json` and `table1.png` (log-log, with the fitted
slopes) to `--out`; `--smoke` runs a few tiny sizes in seconds.

    python benchmarks/layer_timing.py --backend jax --out runs/experiments
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import cpu_model, print_table  # noqa: E402

LAYERS = ("self-attention", "recurrent", "convolution")
# The paper's Table 1 columns, for the printed table.
PAPER = {
    "self-attention": ("O(n^2 d)", "O(1)", "O(1)"),
    "recurrent": ("O(n d^2)", "O(n)", "O(n)"),
    "convolution": ("O(k n d^2)", "O(1)", "O(log_k n)"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="jax", choices=("jax", "tensorflow", "torch"))
    parser.add_argument("--out", default=os.path.join("runs", "experiments"))
    parser.add_argument("--width", type=int, default=256, help="d")
    parser.add_argument("--batch", type=int, default=8, help="sequences per call")
    parser.add_argument("--lengths", default="8,16,32,64,128,256,512,1024", help="n values")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per size")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.width, args.batch, args.lengths, args.repeats = 16, 2, "4,8,16", 1
    args.lengths = [int(n) for n in args.lengths.split(",")]
    return args


def build(kind, width):
    import keras

    import keras_transformer as kt

    inputs = keras.Input((None, width))
    if kind == "self-attention":
        outputs = kt.layers.MultiHeadAttention(num_heads=4, hidden_dim=width)(inputs, inputs)
    elif kind == "recurrent":
        outputs = keras.layers.LSTM(width, return_sequences=True)(inputs)
    else:
        outputs = keras.layers.Conv1D(width, kernel_size=3, padding="same")(inputs)
    model = keras.Model(inputs, outputs)
    jit = keras.backend.backend() != "torch"
    model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse", jit_compile=jit)
    return model


def seconds_per_call(call, arguments, repeats):
    for _ in range(2):
        call(*arguments)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call(*arguments)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def slope(lengths, seconds):
    """The exponent of time against n, fitted on the longer half of the lengths."""
    half = len(lengths) // 2
    x, y = np.log(lengths[half:]), np.log(seconds[half:])
    return float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else float("nan")


def measure(args):
    rng = np.random.default_rng(0)
    results = {}
    for kind in LAYERS:
        model = build(kind, args.width)
        forward, backward = [], []
        for n in args.lengths:
            x = rng.normal(size=(args.batch, n, args.width)).astype("float32")
            forward.append(seconds_per_call(model.predict_on_batch, (x,), args.repeats))
            backward.append(seconds_per_call(model.train_on_batch, (x, x), args.repeats))
            print(f"{kind:>15} n={n:<5} forward {forward[-1] * 1e3:9.3f} ms   "
                  f"forward+backward {backward[-1] * 1e3:9.3f} ms", flush=True)  # fmt: skip
        results[kind] = {"forward_s": forward, "train_s": backward}
    return results


def write(args, results):
    import keras

    os.makedirs(args.out, exist_ok=True)
    rows = []
    for kind, timing in results.items():
        complexity, sequential, path = PAPER[kind]
        rows.append({
            "layer": kind, "complexity": complexity, "sequential": sequential, "path": path,
            "forward": slope(args.lengths, timing["forward_s"]),
            "train": slope(args.lengths, timing["train_s"]),
            "longest": timing["train_s"][-1] * 1e3,
        })  # fmt: skip
    columns = [("layer", "layer"), ("complexity", "per layer (paper)"),
               ("sequential", "sequential ops"), ("path", "max path"),
               ("forward", "slope, forward"), ("train", "slope, fwd+bwd"),
               ("longest", f"fwd+bwd ms at n={args.lengths[-1]}")]  # fmt: skip
    header = (f"d = {args.width}, batch {args.batch}, n = {args.lengths[0]}..{args.lengths[-1]}, "
              f"{keras.backend.backend()}, {cpu_model()}, {os.cpu_count()} cores")  # fmt: skip
    print(f"\n{header}")
    print_table(rows, columns)
    lines = [header, "", "| " + " | ".join(title for _, title in columns) + " |",
             "|" + "---|" * len(columns)]  # fmt: skip
    for row in rows:
        cells = [
            f"{row[key]:.2f}" if isinstance(row[key], float) else row[key] for key, _ in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, "table1.md"), "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "table1.json"), "w", encoding="utf-8") as file:
        json.dump({"header": header, "lengths": args.lengths, "results": results}, file)
    plot(args, results, rows, os.path.join(args.out, "table1.png"))


def plot(args, results, rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for axis, key, title in ((axes[0], "forward_s", "forward"),
                             (axes[1], "train_s", "forward + backward")):  # fmt: skip
        for row, (kind, timing) in zip(rows, results.items(), strict=True):
            fitted = row["forward" if key == "forward_s" else "train"]
            milliseconds = [s * 1e3 for s in timing[key]]
            axis.loglog(args.lengths, milliseconds, "o-", label=f"{kind} (slope {fitted:.2f})")
        axis.set_title(f"{title}, d = {args.width}")
        axis.set_xlabel("sequence length n")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    axes[0].set_ylabel("ms per call")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    write(args, measure(args))


if __name__ == "__main__":
    main()
