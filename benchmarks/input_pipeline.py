"""Input pipeline on Multi30k: tokenizer training, throughput, padding, shapes.

Trains the joint BPE vocabulary on Multi30k's training pairs, runs one epoch
of `make_dataset` batches, and in a subprocess measures how fast the `small`
model consumes the same batches in training, to show that the pipeline is
never the bottleneck.

    python benchmarks/input_pipeline.py [--data ../shared/data/multi30k] [--backend torch]

Targets: padding below 10% of batch tokens, the pipeline at least 10x faster
than training, tokenizer training under 60 s on a 2-core CPU.
"""

import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import print_table, report, run_worker  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.join(HERE, "..", "..", "shared", "data", "multi30k")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA, help="folder with train.en, train.de")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--backend", default="torch", help="backend of the training consumer")
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument(
        "--worker", nargs=2, metavar=("TOKENIZER", "BACKEND"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def read_pairs(data):
    import keras_transformer as kt

    return kt.data.read_parallel(os.path.join(data, "train.en"), os.path.join(data, "train.de"))


def training_worker(args, tokenizer_path):
    """Target tokens per second the `small` model trains at on pipeline batches."""
    import keras

    import keras_transformer as kt

    tokenizer = kt.Tokenizer.load(tokenizer_path)
    dataset = kt.data.make_dataset(read_pairs(args.data), tokenizer, max_tokens=args.max_tokens)
    config = kt.TransformerConfig.small(vocab_size=tokenizer.vocab_size)
    model = kt.compile_model(kt.build_transformer(config))
    batches = list(dataset.take(args.train_steps + 2).as_numpy_iterator())
    model.train_on_batch(*batches[0])
    model.train_on_batch(*batches[1])
    tokens = 0
    began = time.perf_counter()
    for inputs, labels in batches[2:]:
        model.train_on_batch(inputs, labels)
        tokens += int((labels != kt.PAD_ID).sum())
    seconds = time.perf_counter() - began
    return {"backend": keras.backend.backend(), "tokens_per_s": tokens / seconds}


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        report(training_worker(args, args.worker[0]))
        return
    if not os.path.isfile(os.path.join(args.data, "train.en")):
        print(f"SKIPPED: no Multi30k corpus at {os.path.abspath(args.data)} (train.en/train.de)")
        return

    import keras_transformer as kt

    pairs = read_pairs(args.data)
    began = time.perf_counter()
    tokenizer = kt.Tokenizer.train([text for pair in pairs for text in pair], args.vocab_size)
    tokenizer_seconds = time.perf_counter() - began

    began = time.perf_counter()
    dataset = kt.data.make_dataset(pairs, tokenizer, max_tokens=args.max_tokens)
    shapes = collections.Counter()
    real = padded = target_tokens = batches = 0
    for inputs, labels in dataset:
        source, labels = inputs["encoder_token_ids"].numpy(), labels.numpy()
        shapes[(source.shape, labels.shape)] += 1
        real += int((source != kt.PAD_ID).sum() + (labels != kt.PAD_ID).sum())
        padded += source.size + labels.size
        target_tokens += int((labels != kt.PAD_ID).sum())
        batches += 1
    pipeline_seconds = time.perf_counter() - began
    pipeline_rate = target_tokens / pipeline_seconds

    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "tokenizer.model")
        tokenizer.save(path)
        forwarded = [
            f"--data={args.data}",
            f"--max-tokens={args.max_tokens}",
            f"--train-steps={args.train_steps}",
        ]
        training = run_worker(__file__, [path, args.backend, *forwarded], backend=args.backend)

    rows = [
        {"measure": "tokenizer training (s)", "value": tokenizer_seconds, "target": "< 60"},
        {"measure": "vocabulary size", "value": tokenizer.vocab_size, "target": ""},
        {
            "measure": "pairs / batches in one epoch",
            "value": f"{len(pairs)} / {batches}",
            "target": "",
        },
        {
            "measure": "padding fraction of batch tokens",
            "value": f"{1 - real / padded:.1%}",
            "target": "< 10%",
        },
        {"measure": "distinct batch shapes", "value": len(shapes), "target": "a handful"},
        {
            "measure": "pipeline (build + 1 epoch), target tok/s",
            "value": pipeline_rate,
            "target": "",
        },
    ]
    if "error" in training:
        rows.append({"measure": "training consumer", "value": training["error"], "target": ""})
    else:
        rows += [
            {
                "measure": f"training on {training['backend']}, target tok/s",
                "value": training["tokens_per_s"],
                "target": "",
            },
            {
                "measure": "pipeline / training",
                "value": pipeline_rate / training["tokens_per_s"],
                "target": ">= 10",
            },
        ]
    print(
        f"\nInput pipeline on {os.path.abspath(args.data)}, max_tokens={args.max_tokens}, "
        f"{os.cpu_count()} CPU cores"
    )
    print_table(rows, [("measure", "measure"), ("value", "value"), ("target", "target")])


if __name__ == "__main__":
    main()
