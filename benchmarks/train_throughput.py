"""Training throughput: our model against keras-hub's layers and native PyTorch.

Every peer trains on the same synthetic batches in its own subprocess (the Keras
backend is fixed at import): our `Transformer`; a model of the same size built
from keras-hub's `TokenAndPositionEmbedding`, `TransformerEncoder` and
`TransformerDecoder`, trained with our loss and metrics, so that both Keras
models do the same job; and `torch.nn.Transformer` with embeddings and an
output projection, trained by a plain PyTorch loop with a smoothed loss.
The first `--warmup` steps (XLA or tracing) are timed apart as compilation;
the Keras peers run them and the timed steps in one `fit` call.
Prints target tokens per second, peak RSS and the ratios ours/peer.

    python benchmarks/train_throughput.py            # default size: V 8000, D 256, 3+3 layers
    python benchmarks/train_throughput.py --steps 5  # a quick look
    python benchmarks/train_throughput.py --repeats 3  # medians of 3 interleaved rounds

    # ours in float32 and bfloat16, with and without XLA, peers left out:
    python benchmarks/train_throughput.py --peers ours --precision float32,mixed_bfloat16 \
        --xla on,off

`--precision` (a comma list of Keras dtype policies) and `--xla` (TensorFlow
only) apply to our model; the peers train in float32 with XLA. Each (backend, precision, XLA)
is its own run, and the column `vs float32` is its tokens/s over our float32
run of the same backend and XLA setting (paired by round); a line per backend
then compares its fastest run of each precision with its fastest float32 run.
The header names the CPU and its bf16 instructions (AVX512-BF16, AMX-BF16),
which decide whether bfloat16 can pay.

Every peer first keeps freed memory for reuse, as the command line does
(`kt.reuse_freed_memory()`: no fresh pages for PyTorch's tensors and XLA's
buffers each step); `--allocator system` leaves glibc's defaults.

Step times on a shared CPU drift by about 10% from run to run. With
`--repeats R` every peer runs R times, the rounds interleaved (each round in a
rotated order), and the table gives each peer's median and its range; a
ratio is the median of the R ratios of the same round, so slow drift of the
machine cancels.
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (  # noqa: E402
    add_model_arguments,
    add_step_arguments,
    peak_rss_mib,
    print_table,
    report,
    run_worker,
)

BACKENDS = ("tensorflow", "jax", "torch")
PEERS = ("ours", "keras_hub", "torch_native")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    add_step_arguments(parser)
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of every peer, interleaved; medians and paired ratios are reported",
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--peers", default=",".join(PEERS), help="comma list of " + ",".join(PEERS))
    parser.add_argument(
        "--precision", default="float32", help="comma list of Keras dtype policies for ours"
    )
    parser.add_argument(
        "--xla", default="on", help="'on', 'off' or 'on,off': jit_compile of ours on TensorFlow"
    )
    parser.add_argument(
        "--allocator",
        choices=("reuse", "system"),
        default="reuse",
        help="'reuse': every peer keeps freed memory, as the CLI does (reuse_freed_memory); "
        "'system': glibc's defaults",
    )
    parser.add_argument("--worker", nargs=2, metavar=("PEER", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("repeats", "steps", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1. Received: {getattr(args, name)}")
    unknown = set(args.peers.split(",")) - set(PEERS)
    if unknown or set(args.xla.split(",")) - {"on", "off"}:
        parser.error(f"Unknown --peers or --xla. Received: --peers={args.peers} --xla={args.xla}")
    return args


def synthetic_batches(args, num_batches):
    """Random ids (no special tokens), the same for every peer."""
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (num_batches * args.batch_size, args.length)
    source = rng.integers(4, args.vocab_size, size=shape).astype("int32")
    target = rng.integers(4, args.vocab_size, size=(shape[0], args.length + 1)).astype("int32")
    return source, target[:, :-1], target[:, 1:]


def build_ours(args):
    import keras_transformer as kt

    config = kt.TransformerConfig(
        vocab_size=args.vocab_size,
        hidden_dim=args.hidden_dim,
        intermediate_dim=args.intermediate_dim,
        num_heads=args.num_heads,
        num_layers=args.num_layers,
    )
    model = kt.build_transformer(config, dtype=args.precision)
    kt.compile_model(model, jit_compile=args.xla == "on")
    return model


def build_keras_hub(args):
    import keras
    import keras_hub

    import keras_transformer as kt

    def embed(name):
        return keras_hub.layers.TokenAndPositionEmbedding(
            args.vocab_size, args.length, args.hidden_dim, mask_zero=True, name=name
        )

    layer_args = dict(intermediate_dim=args.intermediate_dim, num_heads=args.num_heads, dropout=0.1)
    source = keras.Input((None,), dtype="int32", name="encoder_token_ids")
    target = keras.Input((None,), dtype="int32", name="decoder_token_ids")
    x = embed("source_embedding")(source)
    for _ in range(args.num_layers):
        x = keras_hub.layers.TransformerEncoder(**layer_args)(x)
    y = embed("target_embedding")(target)
    for _ in range(args.num_layers):
        y = keras_hub.layers.TransformerDecoder(**layer_args)(y, x)
    logits = keras.layers.Dense(args.vocab_size)(y)
    model = keras.Model({"encoder_token_ids": source, "decoder_token_ids": target}, logits)
    # Compiled by the same function as ours (optimizer, smoothed loss, metrics,
    # eager on torch), so the ratio compares the layers, not the objectives.
    kt.compile_model(model, jit_compile=True, hidden_dim=args.hidden_dim)
    return model


def keras_worker(peer, args):
    import keras

    model = build_ours(args) if peer == "ours" else build_keras_hub(args)
    source, decoder_inputs, labels = synthetic_batches(args, args.warmup + args.steps)
    ends = []

    class Clock(keras.callbacks.Callback):
        """The end of the last warm-up step and of the last step.

        One `fit` call runs both, so no second call's setup is timed. Warm up
        with at least 2 steps: at `base` the second step is still up to 1.6 s
        slow on TensorFlow without XLA and on PyTorch. A custom
        `on_train_batch_end` makes Keras read each step's logs, so the step
        has finished when it runs.
        """

        def on_train_batch_end(self, batch, logs=None):
            if batch in (args.warmup - 1, args.warmup + args.steps - 1):
                ends.append(time.perf_counter())

    began = time.perf_counter()
    model.fit(
        {"encoder_token_ids": source, "decoder_token_ids": decoder_inputs}, labels,
        batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False, callbacks=[Clock()],
    )  # fmt: skip
    compile_seconds = ends[0] - began
    seconds = ends[1] - ends[0]
    return {
        "backend": keras.backend.backend(),
        "precision": model.dtype_policy.name,
        "parameters": model.count_params(),
        "compile_s": compile_seconds,
        "step_ms": 1000 * seconds / args.steps,
        "tokens_per_s": args.steps * args.batch_size * args.length / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def torch_worker(args):
    import numpy as np
    import torch

    class NativeTransformer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            D = args.hidden_dim
            self.source_embedding = torch.nn.Embedding(args.vocab_size, D, padding_idx=0)
            self.target_embedding = torch.nn.Embedding(args.vocab_size, D, padding_idx=0)
            self.transformer = torch.nn.Transformer(
                d_model=D,
                nhead=args.num_heads,
                num_encoder_layers=args.num_layers,
                num_decoder_layers=args.num_layers,
                dim_feedforward=args.intermediate_dim,
                dropout=0.1,
                batch_first=True,
            )
            self.projection = torch.nn.Linear(D, args.vocab_size)
            positions = np.arange(4 * args.length)[:, None] / 10000 ** (np.arange(0, D, 2) / D)
            table = np.stack([np.sin(positions), np.cos(positions)], -1).reshape(-1, D)
            self.register_buffer("positions", torch.tensor(table, dtype=torch.float32))

        def embed(self, embedding, ids):
            scale = math.sqrt(embedding.embedding_dim)
            return embedding(ids) * scale + self.positions[: ids.shape[1]]

        def forward(self, source, target):
            causal = torch.nn.Transformer.generate_square_subsequent_mask(target.shape[1])
            hidden = self.transformer(
                self.embed(self.source_embedding, source),
                self.embed(self.target_embedding, target),
                tgt_mask=causal,
                src_key_padding_mask=source == 0,
                tgt_key_padding_mask=target == 0,
                memory_key_padding_mask=source == 0,
            )
            return self.projection(hidden)

    torch.manual_seed(0)
    model = NativeTransformer()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=0, label_smoothing=0.1)
    source, decoder_inputs, labels = (
        torch.tensor(a, dtype=torch.long) for a in synthetic_batches(args, args.warmup + args.steps)
    )

    def run(first, count):
        began = time.perf_counter()
        for step in range(first, first + count):
            rows = slice(step * args.batch_size, (step + 1) * args.batch_size)
            optimizer.zero_grad()
            logits = model(source[rows], decoder_inputs[rows])
            loss = loss_fn(logits.reshape(-1, args.vocab_size), labels[rows].reshape(-1))
            loss.backward()
            optimizer.step()
        return time.perf_counter() - began

    compile_seconds = run(0, args.warmup)
    seconds = run(args.warmup, args.steps)
    return {
        "backend": "torch (native)",
        "parameters": sum(p.numel() for p in model.parameters()),
        "compile_s": compile_seconds,
        "step_ms": 1000 * seconds / args.steps,
        "tokens_per_s": args.steps * args.batch_size * args.length / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def cpu_description():
    """The CPU's model name and which bf16 instructions it has, from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError:
        return "CPU unknown (no /proc/cpuinfo)"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    bf16 = [flag for flag in ("avx512_bf16", "amx_bf16", "amx_tile") if flag in flags]
    return f"{fields.get('model name', 'CPU unknown')}; bf16 flags: {', '.join(bf16) or 'none'}"


def planned_runs(args):
    """`(peer, backend, precision, xla)` of every run: ours in each precision and
    XLA setting, the peers once each in float32. Only TensorFlow has a choice:
    without XLA it runs a graph of oneDNN kernels; JAX without `jit` would run
    op by op, and torch runs eagerly either way."""
    peers = args.peers.split(",")
    runs = []
    for backend in args.backends.split(","):
        if "ours" in peers:
            xla_settings = args.xla.split(",") if backend == "tensorflow" else ["on"]
            for precision in args.precision.split(","):
                runs += [("ours", backend, precision, xla) for xla in xla_settings]
        if "keras_hub" in peers:
            runs.append(("keras_hub", backend, "float32", "on"))
    if "torch_native" in peers:
        runs.append(("torch_native", "torch", "float32", "off"))
    return runs


def median_result(results):
    """The run with the median tokens/s (the lower middle for an even count), with the range."""
    good = sorted((r for r in results if "error" not in r), key=lambda r: r["tokens_per_s"])
    if not good:
        return results[-1]
    median = dict(good[(len(good) - 1) // 2])
    if len(good) > 1:
        median["tokens_range"] = f"{good[0]['tokens_per_s']:,.0f}-{good[-1]['tokens_per_s']:,.0f}"
    return median


def paired_median(pairs, key):
    """The median over rounds of ours[key] / peer[key], rounds where both ran."""
    ratios = sorted(
        mine[key] / theirs[key]
        for mine, theirs in pairs
        if "error" not in mine and "error" not in theirs
    )
    if not ratios:
        return None
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        peer, _ = args.worker
        if args.allocator == "reuse":
            if peer == "torch_native":  # the package without Keras, which this peer does not load
                os.environ["KERAS_TRANSFORMER_DEFER_API"] = "1"
            from keras_transformer.allocator import reuse_freed_memory

            reuse_freed_memory()
        report(torch_worker(args) if peer == "torch_native" else keras_worker(peer, args))
        return
    forwarded = [
        f"--{name.replace('_', '-')}={value}"
        for name, value in vars(args).items()
        if name not in ("worker", "backends", "repeats", "peers", "precision", "xla")
    ]
    runs = planned_runs(args)
    samples = {run: [] for run in runs}
    for round_ in range(args.repeats):
        shift = round_ % len(runs)
        for run in runs[shift:] + runs[:shift]:
            peer, backend, precision, xla = run
            what = f"{peer} on {backend}, {precision}, XLA {xla}"
            print(f"round {round_ + 1}/{args.repeats}: {what} ...", file=sys.stderr, flush=True)
            options = [f"--precision={precision}", f"--xla={xla}"]
            samples[run].append(
                run_worker(__file__, [peer, backend, *forwarded, *options], backend=backend)
            )

    # Rows keep the requested backend: the native worker reports "torch (native)".
    rows = [
        {**median_result(samples[run]), "peer": run[0], "backend": run[1], "precision": run[2],
         "xla": "-" if run[1] == "torch" else run[3]}
        for run in runs
    ]  # fmt: skip
    add_ratios(rows, runs, samples)

    print(
        f"\nTraining throughput: V={args.vocab_size} D={args.hidden_dim} F={args.intermediate_dim} "
        f"h={args.num_heads} L={args.num_layers}+{args.num_layers}, batch {args.batch_size} x "
        f"{args.length} tokens, {args.steps} timed steps, {args.repeats} round(s), "
        f"{os.cpu_count()} CPU cores, allocator {args.allocator}\n{cpu_description()}"
    )
    print_table(
        rows,
        [
            ("peer", "peer"),
            ("backend", "backend"),
            ("precision", "precision"),
            ("xla", "XLA"),
            ("parameters", "params"),
            ("compile_s", "compile s"),
            ("step_ms", "ms/step"),
            ("tokens_per_s", "target tok/s"),
            ("tokens_range", "tok/s range"),
            ("peak_rss_mib", "peak RSS MiB"),
            ("vs_float32_tokens", "vs float32"),
            ("ours_vs_peer_tokens", "ours/peer tok/s"),
            ("ours_vs_peer_rss", "ours/peer RSS"),
            ("error", "error"),
        ],
    )
    print_fastest(rows)


def add_ratios(rows, runs, samples):
    """`vs_float32_tokens` on our runs; `ours_vs_peer_*` on the peers' rows,
    against our float32 run with XLA (keras-hub: the same backend; native
    PyTorch: our fastest backend)."""
    good = {run: row for run, row in zip(runs, rows, strict=True) if "error" not in row}
    for run, row in good.items():
        peer, backend, precision, xla = run
        if peer == "ours" and precision != "float32" and (peer, backend, "float32", xla) in good:
            pairs = zip(samples[run], samples[peer, backend, "float32", xla], strict=True)
            row["vs_float32_tokens"] = paired_median(list(pairs), "tokens_per_s")
    ours = {run[1]: run for run in good if run[0] == "ours" and run[2:] == ("float32", "on")}
    fastest = max(ours.values(), key=lambda run: good[run]["tokens_per_s"], default=None)
    for run, row in good.items():
        mine = ours.get(run[1]) if run[0] == "keras_hub" else fastest
        if run[0] != "ours" and mine:
            pairs = list(zip(samples[mine], samples[run], strict=True))
            row["ours_vs_peer_tokens"] = paired_median(pairs, "tokens_per_s")
            row["ours_vs_peer_rss"] = paired_median(pairs, "peak_rss_mib")


def print_fastest(rows):
    """Per backend: the fastest run of each precision against the fastest float32 run."""
    ours = [row for row in rows if row["peer"] == "ours" and "error" not in row]
    for backend in dict.fromkeys(row["backend"] for row in ours):
        best = {}
        for row in (row for row in ours if row["backend"] == backend):
            if row["tokens_per_s"] > best.get(row["precision"], {}).get("tokens_per_s", 0):
                best[row["precision"]] = row
        base = best.get("float32")
        for precision, row in best.items():
            if base and precision != "float32":
                print(
                    f"{backend}: fastest {precision} (XLA {row['xla']}) "
                    f"{row['tokens_per_s'] / base['tokens_per_s']:.2f}x fastest float32 "
                    f"(XLA {base['xla']})"
                )


if __name__ == "__main__":
    main()
