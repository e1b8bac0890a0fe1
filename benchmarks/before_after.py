"""Before and after a change: training and decoding speed of two checkouts, side by side.

For each backend, the same measurement runs with this checkout's
`keras_transformer` and with another checkout's (`--before PATH`, e.g. a
`git worktree` of an earlier commit), in alternating processes, `--repeats`
times, so that a drift in the machine's speed falls on both; the table gives
each median and the ratio after / before.

The measurement, on the `small` preset at V=8000 with random weights (every
sentence decodes to its length cap, so the work is fixed):

- training: `train_on_batch` on one batch of `--batch-size` pairs of
  `--length` tokens, compiled as `compile_model` compiles (XLA on TensorFlow
  and JAX, eager on PyTorch); tokens/s over `--steps` steps after two;
- decoding: `Translator.translate_ids` with beam 4 on `--decode-batch`
  sources of `--length` tokens, `--extra` output tokens each; sentences/s
  over two calls after the first (compilation).

Only public API that both checkouts share is used.

    python benchmarks/before_after.py --before /tmp/before [--backends jax,tensorflow,torch]

`--precision mixed_bfloat16` measures another dtype policy, `--allocator
reuse` keeps freed memory first (`kt.reuse_freed_memory()`), as the command
line does; the model-size flags measure other sizes (`base`: `--vocab-size
37000 --hidden-dim 512 --intermediate-dim 2048 --num-heads 8 --num-layers 6
--batch-size 128`).
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import add_model_arguments, print_table, report, run_worker  # noqa: E402

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--before", required=True, help="the other checkout")
    parser.add_argument("--backends", default="jax,tensorflow,torch")
    parser.add_argument("--repeats", type=int, default=3, help="processes per checkout")
    parser.add_argument("--length", type=int, default=32, help="source and target tokens")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--decode-batch", type=int, default=16, help="sentences per search")
    parser.add_argument("--extra", type=int, default=24, help="output tokens per sentence")
    parser.add_argument(
        "--measures", default="train,decode", help="what to measure: train, decode or both"
    )
    parser.add_argument("--precision", default="float32", help="the Keras dtype policy")
    parser.add_argument(
        "--allocator",
        choices=("system", "reuse"),
        default="system",
        help="'reuse': each process first keeps freed memory, as the CLI does",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def worker(args):
    import keras
    import numpy as np

    import keras_transformer as kt

    if args.allocator == "reuse":
        kt.reuse_freed_memory()
    keras.utils.set_random_seed(0)
    config = kt.TransformerConfig.small(
        vocab_size=args.vocab_size, hidden_dim=args.hidden_dim,
        intermediate_dim=args.intermediate_dim, num_heads=args.num_heads,
        num_layers=args.num_layers, max_length=args.length + args.extra,
    )  # fmt: skip
    model = kt.build_transformer(config, dtype=args.precision)
    kt.compile_model(model, kt.TrainingConfig(warmup_steps=100))
    rng = np.random.default_rng(0)
    shape = (args.batch_size, args.length)
    inputs = {
        "encoder_token_ids": rng.integers(4, args.vocab_size, shape).astype("int32"),
        "decoder_token_ids": rng.integers(4, args.vocab_size, shape).astype("int32"),
    }
    labels = rng.integers(4, args.vocab_size, shape).astype("int32")
    measured = {"library": os.path.dirname(os.path.dirname(os.path.abspath(kt.__file__)))}
    if "train" in args.measures:
        for _ in range(2):
            model.train_on_batch(inputs, labels)
        began = time.perf_counter()
        for _ in range(args.steps):
            loss = model.train_on_batch(inputs, labels)
        float(np.asarray(loss if np.ndim(loss) == 0 else loss[0]))  # the last step has finished
        seconds = (time.perf_counter() - began) / args.steps
        measured["train_tokens_per_s"] = 2 * args.batch_size * args.length / seconds
    if "decode" not in args.measures:
        return report(measured)

    pairs = kt.data.number_words("train", "de", size=500, seed=0)
    tokenizer = kt.Tokenizer.train([text for pair in pairs for text in pair], vocab_size=300)
    translator = kt.Translator(model, tokenizer, beam_size=4, max_extra_length=args.extra)
    sources = rng.integers(4, args.vocab_size, (args.decode_batch, args.length)).astype("int32")
    translator.translate_ids(sources)  # compilation
    began = time.perf_counter()
    for _ in range(2):
        translator.translate_ids(sources)
    measured["decode_sentences_per_s"] = args.decode_batch * 2 / (time.perf_counter() - began)
    report(measured)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    forwarded = [
        f"--{name.replace('_', '-')}={value}"
        for name, value in vars(args).items()
        if name not in ("worker", "backends", "before")
    ]
    trees = {"before": os.path.abspath(args.before), "after": CHECKOUT}
    rows = []
    for backend in args.backends.split(","):
        measured = {name: [] for name in trees}
        for repeat in range(args.repeats):
            for name, tree in trees.items():
                print(f"{backend}: {name}, run {repeat + 1}/{args.repeats}", file=sys.stderr)
                arguments = ["--before", tree, *forwarded]
                result = run_worker(__file__, arguments, backend=backend, pythonpath=tree)
                if "error" in result:
                    sys.exit(f"{backend} {name}: {result['error']}")
                if result["library"] != tree:
                    sys.exit(f"{backend} {name}: measured {result['library']}, not {tree}")
                measured[name].append(result)
        for key, title in (("train_tokens_per_s", "training tokens/s"),
                           ("decode_sentences_per_s", "beam-4 sentences/s")):  # fmt: skip
            if key not in measured["after"][0]:
                continue
            medians = {n: statistics.median(r[key] for r in measured[n]) for n in trees}
            spread = {n: (min(r[key] for r in measured[n]), max(r[key] for r in measured[n]))
                      for n in trees}  # fmt: skip
            rows.append({
                "backend": backend, "measure": title,
                "before": medians["before"], "after": medians["after"],
                "ratio": medians["after"] / medians["before"],
                "range": f"{spread['before'][0]:.0f}-{spread['before'][1]:.0f} / "
                         f"{spread['after'][0]:.0f}-{spread['after'][1]:.0f}",
            })  # fmt: skip
    print(
        f"\n{args.precision}, allocator {args.allocator}: "
        f"V={args.vocab_size} D={args.hidden_dim} F={args.intermediate_dim} h={args.num_heads} "
        f"L={args.num_layers}+{args.num_layers}, batch {args.batch_size} x {args.length} tokens, "
        f"beam 4 on {args.decode_batch} x {args.length} -> +{args.extra}; medians of "
        f"{args.repeats} processes per checkout; {os.cpu_count()} CPU cores"
    )
    print(f"before: {trees['before']}\nafter:  {trees['after']}")
    print_table(
        rows,
        [
            ("backend", "backend"),
            ("measure", "measure"),
            ("before", "before"),
            ("after", "after"),
            ("ratio", "after / before"),
            ("range", "range before / after"),
        ],
    )


if __name__ == "__main__":
    main()
