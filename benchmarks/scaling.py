"""Multi-process scaling: two processes on one core each against one process on one core.

Each process is pinned to its own core (`os.sched_setaffinity`) and trains our
model on the same per-process batch (`--batch-size` rows of `--length` tokens),
so two processes train on twice the global batch. Prints the CPU model, the
target tokens per second of each run and the scaling efficiency

    efficiency = tokens/s (2 processes) / (2 * tokens/s (1 process))

per backend. Several processes train through JAX's distributed runtime
(`keras_transformer.multiprocess`); the TensorFlow and PyTorch backends refuse
them (the reason is printed in their row).

    python benchmarks/scaling.py                      # the small preset's size, JAX
    python benchmarks/scaling.py --backends jax,tensorflow,torch
    python benchmarks/scaling.py --smoke              # a tiny model, two steps: does it run
"""

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import add_model_arguments, add_step_arguments, cpu_model, print_table, report  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    add_step_arguments(parser)
    parser.add_argument("--backends", default="jax", help="comma list of " + ",".join(BACKENDS))
    parser.add_argument("--cores", default="0,1", help="the two cores to pin the processes to")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, 2 steps")
    parser.add_argument("--worker", nargs=4, metavar=("PROCS", "RANK", "PORT", "CORE"),
                        help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args(argv)
    if args.smoke:
        args.vocab_size, args.hidden_dim, args.intermediate_dim = 100, 32, 64
        args.num_heads, args.num_layers, args.batch_size, args.length = 2, 1, 4, 8
        args.steps, args.warmup, args.timeout = 2, 1, 300
    unknown = set(args.backends.split(",")) - set(BACKENDS)
    cores = args.cores.split(",")
    if unknown or len(cores) != 2 or not all(core.isdigit() for core in cores):
        parser.error(f"Unknown --backends or --cores. Received: {args.backends} {args.cores}")
    return args


def worker(args):
    """One process of a run: pinned, joined to the others, trains, reports tokens/s."""
    processes, rank, port, core = (int(value) for value in args.worker)
    os.sched_setaffinity(0, {core})  # before any library starts its threads
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_transformer as kt
    from keras_transformer import multiprocess

    class Times(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.began, self.ends = time.perf_counter(), []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    scope = None
    if processes > 1:
        multiprocess.initialize(multiprocess.Cluster(processes, rank, f"127.0.0.1:{port}"))
        scope = multiprocess.scope()
    keras.utils.set_random_seed(0)
    with scope or contextlib.nullcontext():
        config = kt.TransformerConfig(
            vocab_size=args.vocab_size, hidden_dim=args.hidden_dim,
            intermediate_dim=args.intermediate_dim, num_heads=args.num_heads,
            num_layers=args.num_layers, max_length=max(args.length, 8),
        )  # fmt: skip
        model = kt.compile_model(kt.build_transformer(config))
        rng = np.random.default_rng(rank)  # this process's rows
        shape = ((args.warmup + args.steps) * args.batch_size, args.length)
        ids = rng.integers(kt.EOS_ID + 1, args.vocab_size, size=shape).astype("int32")
        inputs = {kt.model.ENCODER_INPUT: ids, kt.model.DECODER_INPUT: ids}
        dataset = tf.data.Dataset.from_tensor_slices((inputs, ids)).batch(args.batch_size)
        times = Times()
        model.fit(dataset, epochs=1, verbose=0, shuffle=False, callbacks=[times])
    timed = times.ends[-1] - times.ends[args.warmup - 1]
    tokens = processes * args.batch_size * args.length * args.steps  # the global batches
    report({"tokens_per_s": tokens / timed, "compile_s": times.ends[args.warmup - 1] - times.began})


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(args, backend, processes):
    """`processes` workers of `backend`, at once; rank 0's report (or an error)."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    cores, port = args.cores.split(","), str(free_port())
    forwarded = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in
                 ("vocab_size", "hidden_dim", "intermediate_dim", "num_heads", "num_layers",
                  "batch_size", "length", "steps", "warmup")]  # fmt: skip
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                *forwarded,
                "--worker",
                str(processes),
                str(rank),
                port,
                cores[rank],
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in range(processes)
    ]
    results = []
    for process in workers:
        try:
            out, err = process.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            return {"error": f"ran past {args.timeout} s"}
        if process.returncode != 0:
            lines = [line for line in err.splitlines() if "Error" in line] or err.splitlines()
            results.append({"error": (lines or ["failed"])[-1][:300]})
        else:
            results.append(json.loads(out.strip().splitlines()[-1]))
    errors = [result for result in results if "error" in result]
    return errors[0] if errors else results[0]


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    print(f"CPU: {cpu_model()}; {os.cpu_count()} logical cores; pinned to cores {args.cores}")
    print(f"per-process batch {args.batch_size} x {args.length} tokens, {args.steps} steps")
    rows, notes = [], []
    for backend in args.backends.split(","):
        one, two = run(args, backend, 1), run(args, backend, 2)
        row = {"backend": backend, "one": one.get("tokens_per_s"), "two": two.get("tokens_per_s")}
        if row["one"] and row["two"]:
            row["efficiency"] = row["two"] / (2 * row["one"])
        error = one.get("error") or two.get("error")
        row["note"] = f"[{len(notes) + 1}]" if error else None
        notes.extend([error] if error else [])
        rows.append(row)
    print_table(rows, [("backend", "backend"), ("one", "1 proc tokens/s"),
                       ("two", "2 procs tokens/s"), ("efficiency", "efficiency"),
                       ("note", "note")])  # fmt: skip
    for number, note in enumerate(notes, 1):
        print(f"[{number}] {note}")
    return 0 if all(row.get("efficiency") or row["note"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
