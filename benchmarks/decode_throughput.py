"""Decoding throughput: our cached, compiled search against uncached decoding and keras-hub.

For each backend, in its own subprocess, on one batch of source sentences:

- ours: `greedy_search` / `beam_search` over `Transformer.decode_step` (KV cache),
  compiled by `compile_search` (XLA on TensorFlow and JAX, eager on PyTorch);
- ours uncached: the same greedy search, but each step re-runs the whole
  decoder over the fixed-size prefix buffer (same weights);
- keras-hub: a model of the same size from `TokenAndPositionEmbedding`,
  `TransformerEncoder` and `TransformerDecoder` (its self- and cross-attention
  caches) decoded by `GreedySampler` / `BeamSampler(num_beams=4)`, compiled the
  same way (`keras_hub_decoding.py`).

Every peer generates exactly `--length` tokens (EOS is masked out of our
searches; keras-hub's samplers are given no stop token), so the work is equal.
Compilation is timed apart; then the peers are timed round-robin, median of
`--repeats` rounds, so that a drift in the machine's speed does not tilt their
ratios. Our cached greedy search at 32, 64 and 128
output tokens gives the time per generated token as the output grows.

    python benchmarks/decode_throughput.py [--backends tensorflow,jax,torch] [--tree PATH]

`--tree PATH` measures the `keras_transformer` of another checkout (an
earlier commit, say) with this script, for a before/after comparison.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import add_model_arguments, print_table, report, run_worker  # noqa: E402
from keras_hub_decoding import keras_hub_peer  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--source-length", type=int, default=24)
    parser.add_argument("--length", type=int, default=64, help="generated tokens")
    parser.add_argument("--sweep", default="32,64,128", help="output lengths for ours-greedy")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--tree", help="a checkout whose keras_transformer to measure instead")
    parser.add_argument("--worker", nargs=1, metavar="BACKEND", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def timed_interleaved(calls, repeats):
    """Times `calls` (name -> no-argument function) round-robin, `repeats` rounds.

    Returns name -> (first-call seconds, median seconds of the timed calls).
    Interleaving the peers, rather than timing each peer's calls in a row,
    keeps a drift in the machine's speed out of their ratios.
    """
    import keras

    def seconds(call):
        began = time.perf_counter()
        keras.ops.convert_to_numpy(call()[0])
        return time.perf_counter() - began

    first = {name: seconds(call) for name, call in calls.items()}
    runs = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            runs[name].append(seconds(call))
    return {name: (first[name], statistics.median(runs[name])) for name in calls}


def without_eos(step_fn):
    """Masks EOS so a search runs to its full length, like a sampler with no stop token."""
    from keras import ops

    import keras_transformer as kt

    def step(token_ids, cache, index):
        logits, cache = step_fn(token_ids, cache, index)
        is_eos = ops.equal(ops.arange(ops.shape(logits)[-1]), kt.EOS_ID)
        return ops.where(is_eos, -1e9, logits), cache

    return step


def ours(args, model, uncached=False, beam_size=1):
    from keras import ops

    from keras_transformer.decoding import beam_search, greedy_search

    def uncached_step(token_ids, cache, index):
        # Re-runs the decoder over the whole (B, 1 + T) prefix buffer each step.
        prefix = ops.slice_update(cache["prefix"], (0, index), token_ids[:, None])
        logits = model.decode(prefix, cache["encoder_output"], cache["encoder_padding_mask"])
        return ops.take(logits, index, axis=1), {**cache, "prefix": prefix}

    def search(encoder_token_ids, row_limits, max_decode_length):
        encoder_output, mask = model.encode(encoder_token_ids, training=False)
        batch = encoder_token_ids.shape[0]
        if uncached:
            prefix = ops.zeros((batch, max_decode_length + 1), dtype="int32")
            cache = dict(prefix=prefix, encoder_output=encoder_output, encoder_padding_mask=mask)
            return greedy_search(without_eos(uncached_step), cache, batch, max_decode_length)
        cache = model.initialize_cache(encoder_output, mask, max_decode_length, beam_size)
        step = without_eos(model.decode_step)
        if beam_size == 1:
            return greedy_search(step, cache, batch, max_decode_length)
        return beam_search(
            step, cache, batch, max_decode_length, beam_size, reorder_cache=model.reorder_cache
        )

    return search


def worker(args):
    import keras
    import numpy as np

    import keras_transformer as kt
    from keras_transformer.decoding.compile import compile_search

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    source = rng.integers(4, args.vocab_size, size=(args.batch_size, args.source_length))
    source[:, -1] = kt.EOS_ID
    source = source.astype("int32")
    limits = np.full((args.batch_size,), 10**6, "int32")
    sizes = ("vocab_size", "hidden_dim", "intermediate_dim", "num_heads", "num_layers")
    config = kt.TransformerConfig(**{name: getattr(args, name) for name in sizes}, max_length=1024)
    model = kt.build_transformer(config)
    calls = {}

    def add(peer, search, holder, length, beam):
        compiled = compile_search(search, holder)
        calls[(peer, beam, length)] = lambda: compiled(source, limits, length)

    for beam in (1, 4):
        add("ours", ours(args, model, beam_size=beam), model, args.length, beam)
        search, holder = keras_hub_peer(args, beam_size=beam)
        add("keras-hub", search, holder, args.length, beam)
    add("ours uncached", ours(args, model, uncached=True), model, args.length, 1)
    for length in (int(n) for n in args.sweep.split(",")):
        if length != args.length:
            add("ours", ours(args, model), model, length, 1)
    rows = []
    for (peer, beam, length), (first, seconds) in timed_interleaved(calls, args.repeats).items():
        rows.append(
            {
                "backend": keras.backend.backend(),
                "peer": peer,
                "beam": beam,
                "tokens": length,
                "compile_s": max(first - seconds, 0.0),
                "seconds": seconds,
                "sentences_per_s": args.batch_size / seconds,
                "ms_per_token": 1000 * seconds / length,
            }
        )
    return {"rows": rows}


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        report(worker(args))
        return
    forwarded = [
        f"--{name.replace('_', '-')}={value}"
        for name, value in vars(args).items()
        if name not in ("worker", "backends", "tree")
    ]
    library = os.path.abspath(args.tree) if args.tree else None
    rows, ratios = [], []
    for backend in args.backends.split(","):
        print(f"decoding on {backend} ...", file=sys.stderr, flush=True)
        result = run_worker(__file__, [backend, *forwarded], backend=backend, pythonpath=library)
        if "error" in result:
            rows.append({"backend": backend, "peer": "error: " + result["error"]})
            continue
        rows += result["rows"]
        by = {(r["peer"], r["beam"], r["tokens"]): r for r in result["rows"]}
        n = args.length
        sweep = sorted(int(t) for t in args.sweep.split(","))

        def ratio(a, b, key="sentences_per_s", by=by):
            return by[a][key] / by[b][key]

        greedy, beam = ("ours", 1, n), ("ours", 4, n)
        measures = [
            ("ours beam 4 / keras-hub BeamSampler", beam, ("keras-hub", 4, n), ">= 2"),
            ("ours greedy / keras-hub GreedySampler", greedy, ("keras-hub", 1, n), ""),
            (f"cached / uncached greedy at {n} tokens", greedy, ("ours uncached", 1, n), ">= 3"),
        ]
        ratios += [
            dict(backend=backend, measure=measure, value=ratio(a, b), target=target)
            for measure, a, b, target in measures
        ]
        longest, shortest = ("ours", 1, sweep[-1]), ("ours", 1, sweep[0])
        measure = f"ms/token at {sweep[-1]} / at {sweep[0]} tokens (greedy)"
        value = ratio(longest, shortest, "ms_per_token")
        ratios.append(dict(backend=backend, measure=measure, value=value, target="<= 1.5"))
    print(
        f"\nDecoding: V={args.vocab_size} D={args.hidden_dim} L={args.num_layers}+"
        f"{args.num_layers}, {args.batch_size} sentences of {args.source_length} tokens, "
        f"{os.cpu_count()} CPU cores, keras_transformer of {library or 'this checkout'}"
    )
    columns = {
        "backend": "backend",
        "peer": "peer",
        "beam": "beam",
        "tokens": "out tokens",
        "compile_s": "compile s",
        "seconds": "s/batch",
        "sentences_per_s": "sent/s",
        "ms_per_token": "ms/token",
    }
    print_table(rows, list(columns.items()))
    print()
    columns = {"backend": "backend", "measure": "ratio", "value": "value", "target": "target"}
    print_table(ratios, list(columns.items()))


if __name__ == "__main__":
    main()
