"""Decoding throughput: our cached, compiled search against uncached decoding and keras-hub.

For each backend, in its own subprocess, on one batch of source sentences:

- ours: `greedy_search` / `beam_search` over `Transformer.decode_step` (KV cache),
  compiled by `compile_search` (XLA on TensorFlow and JAX, eager on PyTorch);
- ours uncached: the same greedy search, but each step re-runs the whole
  decoder over the fixed-size prefix buffer (same weights);
- keras-hub: a model of the same size from `TokenAndPositionEmbedding`,
  `TransformerEncoder` and `TransformerDecoder` (its self- and cross-attention
  caches) decoded by `GreedySampler` / `BeamSampler(num_beams=4)`, compiled the
  same way.

Every peer generates exactly `--length` tokens (EOS is masked out of our
searches; keras-hub's samplers are given no stop token), so the work is equal.
Compilation is timed apart; then the peers are timed round-robin, median of
`--repeats` rounds, so that a drift in the machine's speed does not tilt their
ratios. Our cached greedy search at 32, 64 and 128
output tokens gives the time per generated token as the output grows.

    python benchmarks/decode_throughput.py [--backends tensorflow,jax,torch]
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import add_model_arguments, print_table, report, run_worker  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser)
    parser.add_argument("--source-length", type=int, default=24)
    parser.add_argument("--length", type=int, default=64, help="generated tokens")
    parser.add_argument("--sweep", default="32,64,128", help="output lengths for ours-greedy")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")
    parser.add_argument("--backends", default="tensorflow,jax,torch")
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

    def search(encoder_token_ids, row_limits, max_length):
        encoder_output, mask = model.encode(encoder_token_ids, training=False)
        batch = encoder_token_ids.shape[0]
        if uncached:
            prefix = ops.zeros((batch, max_length + 1), dtype="int32")
            cache = {"prefix": prefix, "encoder_output": encoder_output,
                     "encoder_padding_mask": mask}  # fmt: skip
            return greedy_search(without_eos(uncached_step), cache, batch, max_length)
        cache = model.initialize_cache(encoder_output, mask, max_length, beam_size)
        step = without_eos(model.decode_step)
        if beam_size == 1:
            return greedy_search(step, cache, batch, max_length)
        return beam_search(
            step, cache, batch, max_length, beam_size, 0.6, reorder_cache=model.reorder_cache
        )

    return search


def keras_hub_peer(args, beam_size=1):
    """A keras-hub encoder-decoder of the same size, decoded by its samplers."""
    import keras
    import keras_hub
    from keras import ops

    import keras_transformer as kt

    max_positions = 1 + max(int(n) for n in args.sweep.split(",") + [args.length])
    encoder_embedding = keras_hub.layers.TokenAndPositionEmbedding(
        args.vocab_size, max(args.source_length, max_positions), args.hidden_dim
    )
    decoder_embedding = keras_hub.layers.TokenAndPositionEmbedding(
        args.vocab_size, max_positions, args.hidden_dim
    )
    layer_args = dict(intermediate_dim=args.intermediate_dim, num_heads=args.num_heads)
    encoders = [keras_hub.layers.TransformerEncoder(**layer_args) for _ in range(args.num_layers)]
    decoders = [keras_hub.layers.TransformerDecoder(**layer_args) for _ in range(args.num_layers)]
    projection = keras.layers.Dense(args.vocab_size)
    head_dim = args.hidden_dim // args.num_heads

    # Build every layer once, outside any compiled function.
    source = ops.ones((1, args.source_length), "int32")
    x = encoder_embedding(source)
    for layer in encoders:
        x = layer(x)
    y = decoder_embedding(source)
    for layer in decoders:
        y = layer(y, x)
    projection(y)
    variables = [
        v
        for layer in [encoder_embedding, decoder_embedding, *encoders, *decoders, projection]
        for v in layer.variables
    ]
    sampler = (
        keras_hub.samplers.GreedySampler()
        if beam_size == 1
        else keras_hub.samplers.BeamSampler(num_beams=beam_size)
    )

    def search(encoder_token_ids, row_limits, max_length):
        batch = encoder_token_ids.shape[0]
        padding = ops.not_equal(encoder_token_ids, kt.PAD_ID)
        encoded = encoder_embedding(encoder_token_ids)
        for layer in encoders:
            encoded = layer(encoded, padding_mask=padding)
        total = max_length + 1
        prompt = ops.concatenate(
            [ops.full((batch, 1), kt.BOS_ID, "int32"), ops.zeros((batch, max_length), "int32")], 1
        )
        # Seed the caches: cross-attention keys/values once, from the encoder.
        shape = (batch, 2, total, args.num_heads, head_dim)
        cross_shape = (batch, 2, args.source_length, args.num_heads, head_dim)
        y = decoder_embedding(prompt[:, :1])
        self_caches, cross_caches = [], []
        for layer in decoders:
            y, self_cache, cross_cache = layer(
                y, encoded, encoder_padding_mask=padding,
                self_attention_cache=ops.zeros(shape), self_attention_cache_update_index=0,
                cross_attention_cache=ops.zeros(cross_shape), cross_attention_cache_update_index=0,
            )  # fmt: skip
            self_caches.append(self_cache)
            cross_caches.append(cross_cache)
        cache = {"self": self_caches, "cross": cross_caches, "padding": padding,
                 "encoded": encoded}  # fmt: skip

        def next_token(prompt, cache, index):
            y = decoder_embedding(
                ops.slice(prompt, (0, index - 1), (ops.shape(prompt)[0], 1)), start_index=index - 1
            )
            new_self = []
            for layer, self_cache, cross_cache in zip(
                decoders, cache["self"], cache["cross"], strict=True
            ):
                y, self_cache, _ = layer(
                    y, cache["encoded"], encoder_padding_mask=cache["padding"],
                    self_attention_cache=self_cache, self_attention_cache_update_index=index - 1,
                    cross_attention_cache=cross_cache, cross_attention_cache_update_index=None,
                )  # fmt: skip
                new_self.append(self_cache)
            logits = projection(y)[:, 0, :]
            return logits, None, {**cache, "self": new_self}

        mask = ops.concatenate(
            [ops.ones((batch, 1), "bool"), ops.zeros((batch, max_length), "bool")], 1
        )
        tokens = sampler(next_token, prompt, cache=cache, index=1, mask=mask)
        return tokens, None

    return search, _VariableHolder(variables)


class _VariableHolder:
    """What `compile_search` needs of a model: its variables."""

    def __init__(self, variables):
        self.variables = variables


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
    config = kt.TransformerConfig(
        vocab_size=args.vocab_size, hidden_dim=args.hidden_dim,
        intermediate_dim=args.intermediate_dim, num_heads=args.num_heads,
        num_layers=args.num_layers, max_length=1024,
    )  # fmt: skip
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
        rows.append({
            "backend": keras.backend.backend(), "peer": peer, "beam": beam, "tokens": length,
            "compile_s": max(first - seconds, 0.0), "seconds": seconds,
            "sentences_per_s": args.batch_size / seconds,
            "ms_per_token": 1000 * seconds / length,
        })  # fmt: skip
    return {"rows": rows}


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        report(worker(args))
        return
    forwarded = [
        f"--{name.replace('_', '-')}={value}"
        for name, value in vars(args).items()
        if name not in ("worker", "backends")
    ]
    rows, ratios = [], []
    for backend in args.backends.split(","):
        print(f"decoding on {backend} ...", file=sys.stderr, flush=True)
        result = run_worker(__file__, [backend, *forwarded], backend=backend)
        if "error" in result:
            rows.append({"backend": backend, "peer": "error: " + result["error"]})
            continue
        rows += result["rows"]
        by = {(r["peer"], r["beam"], r["tokens"]): r for r in result["rows"]}
        n = args.length
        sweep = sorted(int(t) for t in args.sweep.split(","))

        def ratio(a, b, by=by):
            return by[a]["sentences_per_s"] / by[b]["sentences_per_s"]

        ratios += [
            {"backend": backend, "measure": "ours beam 4 / keras-hub BeamSampler",
             "value": ratio(("ours", 4, n), ("keras-hub", 4, n)), "target": ">= 2"},
            {"backend": backend, "measure": "ours greedy / keras-hub GreedySampler",
             "value": ratio(("ours", 1, n), ("keras-hub", 1, n)), "target": ""},
            {"backend": backend, "measure": f"cached / uncached greedy at {n} tokens",
             "value": ratio(("ours", 1, n), ("ours uncached", 1, n)), "target": ">= 3"},
            {"backend": backend,
             "measure": f"ms/token at {sweep[-1]} / at {sweep[0]} tokens (greedy)",
             "value": by[("ours", 1, sweep[-1])]["ms_per_token"]
             / by[("ours", 1, sweep[0])]["ms_per_token"], "target": "<= 1.5"},
        ]  # fmt: skip
    print(
        f"\nDecoding: V={args.vocab_size} D={args.hidden_dim} L={args.num_layers}+"
        f"{args.num_layers}, {args.batch_size} sentences of {args.source_length} tokens, "
        f"{os.cpu_count()} CPU cores"
    )
    print_table(
        rows,
        [("backend", "backend"), ("peer", "peer"), ("beam", "beam"), ("tokens", "out tokens"),
         ("compile_s", "compile s"), ("seconds", "s/batch"), ("sentences_per_s", "sent/s"),
         ("ms_per_token", "ms/token")],
    )  # fmt: skip
    print()
    print_table(
        ratios, [("backend", "backend"), ("measure", "ratio"), ("value", "value"),
                 ("target", "target")]
    )  # fmt: skip


if __name__ == "__main__":
    main()
