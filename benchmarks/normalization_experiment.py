"""LayerNorm against BatchNorm, measured on trained models (issue #31, docs/experiments.md).

Reads the work directories that `quality.py` trains for `ours` (layer norm),
`batch-norm` and `masked-batch-norm` (the same recipe and steps), and
measures what separates them:

1. **Learning curves**: training loss and validation loss against steps,
   from each work directory's `logs/steps.csv` (`normalization_curves.png`).
2. **Does inference depend on the batch?** The test set translated (each
   model's last weights, beam 4) in batches of 1, 8 and 64 sentences, in the
   file's order ("unsorted": a batch holds sentences of any length, padded to
   the longest) and sorted by length (alone, a sentence has no order): BLEU,
   and how many translations differ from those of the sorted batches of 64.
3. **Batch statistics across length buckets, in training**: each batch norm
   run in training mode on training batches (the batches `fit` sees, one
   length bucket each) with the final weights; per bucket, the share of
   padding among the positions, and how far the batch's mean and variance
   (the statistics training normalizes with) lie from the moving averages
   (the statistics inference uses): mean over features and layers of
   `|mean_batch - mean_moving| / std_moving` and of `var_batch / var_moving`.
   For `batch` the statistics run over every position, padding included;
   for `masked_batch` over the real tokens.

Writes `normalization.md`, `.json` and `normalization_curves.png` to `--out`.

    python benchmarks/quality.py --steps 1000 --tasks multi30k-en-de \\
        --runs ours,batch-norm,masked-batch-norm --out runs/quality
    python benchmarks/normalization_experiment.py --runs runs/quality/multi30k-en-de
    python benchmarks/normalization_experiment.py --smoke   # seconds: tiny models, the test runs it
"""

import argparse
import csv
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import cpu_model, plot_panels, print_table  # noqa: E402

VARIANTS = {"ours": "layer", "batch-norm": "batch", "masked-batch-norm": "masked_batch"}
LABELS = {"ours": "layer norm (the paper's)", "batch-norm": "batch norm",
          "masked-batch-norm": "masked batch norm"}  # fmt: skip
BLOCKS = {"encoder": ("self_attention", "feedforward"),
          "decoder": ("self_attention", "cross_attention", "feedforward")}  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", help="quality.py's task folder: RUN/workdir for each variant")
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "multi30k"))
    parser.add_argument("--test", default="test2016", help="split scored")
    parser.add_argument("--test-size", type=int, default=1000, help="test sentences translated")
    parser.add_argument("--batch-sizes", default="1,8,64")
    parser.add_argument("--statistics-batches", type=int, default=60, help="training batches")
    parser.add_argument("--out", default=os.path.join("runs", "experiments"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--smoke", action="store_true", help="tiny models trained here: seconds")
    args = parser.parse_args(argv)
    args.variants = [name for name in args.variants.split(",") if name]
    unknown = [name for name in args.variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown --variants {unknown}; choose from {list(VARIANTS)}")
    args.batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    if not args.smoke and not args.runs:
        parser.error("--runs is required (or --smoke)")
    return args


def read_steps(workdir):
    """Steps and training loss (`logs/steps.csv`), steps and validation loss (the
    validations of `steps.csv`, or else the per-epoch ones of `history.csv`)."""
    train, valid = ([], []), ([], [])
    for name in ("steps.csv", "history.csv"):
        path = os.path.join(workdir, "logs", name)
        if valid[0] or not os.path.isfile(path):
            continue
        with open(path) as file:
            for row in csv.DictReader(file):
                step = int(float(row["step"]))
                series = [(valid, "val_loss")] + ([(train, "loss")] if name == "steps.csv" else [])
                for (steps, values), key in series:
                    if row.get(key):
                        steps.append(step)
                        values.append(float(row[key]))
    return train, valid


def plot_curves(workdirs, path):
    curves = {LABELS[name]: read_steps(workdir) for name, workdir in workdirs.items()}
    plot_panels(curves, ("training loss", "validation loss"), "optimizer steps",
                ("label-smoothed cross-entropy", None), path, sharey=True)  # fmt: skip


def batch_dependence(workdir, sources, references, batch_sizes, **overrides):
    """BLEU of the test set translated in batches of each size, unsorted and sorted."""
    from keras_transformer.decoding import Translator
    from keras_transformer.evaluation import score

    by_length = sorted(range(len(sources)), key=lambda i: len(sources[i].split()))
    loaded = Translator.from_workdir(workdir, **overrides)  # one model for every batch size
    results, baseline = {}, None
    for size in sorted(batch_sizes, reverse=True):
        translator = Translator(
            loaded.model, loaded.tokenizer, loaded.decoding_config, batch_size=size
        )
        orders = [("sorted", by_length), ("unsorted", list(range(len(sources))))]
        for order_name, order in orders[: 1 if size == 1 else 2]:  # one sentence has no order
            outputs = [None] * len(sources)
            for start in range(0, len(order), size):
                rows = order[start : start + size]
                for i, text in zip(rows, translator.translate([sources[i] for i in rows]),
                                   strict=True):  # fmt: skip
                    outputs[i] = text
            baseline = baseline or outputs
            scores = score(outputs, references)
            results[f"{size}/{order_name}"] = {
                "bleu": scores.bleu,
                "differ": sum(a != b for a, b in zip(outputs, baseline, strict=True)),
            }
    return results


def norm_layers(model):
    """`(side, norm layer)` for every residual block's norm of `model` (side: "encoder" or
    "decoder")."""
    from keras_transformer.layers.normalization import norm_name

    found = []
    for side, blocks in BLOCKS.items():
        for layer in getattr(model, f"{side}_layers"):
            for block in blocks:
                found.append((side, getattr(layer, norm_name(block, model.config.normalization))))
    return found


def bucket_statistics(workdir, pairs, batches):
    """Per padded length: padding share and batch-vs-moving statistics of the batch norms."""
    import keras
    import numpy as np
    from keras import ops

    from keras_transformer import Tokenizer
    from keras_transformer import workdir as workdirs
    from keras_transformer.data.pipeline import make_dataset
    from keras_transformer.model_inputs import DECODER_INPUT, ENCODER_INPUT
    from keras_transformer.tokenization import PAD_ID

    model_path, tokenizer_path, _ = workdirs.model_files(workdir)
    model = keras.saving.load_model(model_path, compile=False)
    masked = model.config.normalization == "masked_batch"
    training = workdirs.read_config(workdir)["training"]
    dataset = make_dataset(pairs, Tokenizer.load(tokenizer_path), training.max_tokens,
                           model.config.max_length, seed=1)  # fmt: skip
    masks, seen = {}, {}

    def recording(side, norm):
        call = norm.call

        def record(inputs, *args, **kwargs):
            x = ops.convert_to_numpy(ops.cast(inputs, "float32")).reshape(-1, inputs.shape[-1])
            real = masks[side].reshape(-1)
            used = x[real] if masked else x  # the statistics this norm trains with
            mean, variance = used.mean(0), used.var(0)
            moving_mean = ops.convert_to_numpy(norm.moving_mean)
            moving_std = np.sqrt(ops.convert_to_numpy(norm.moving_variance) + norm.epsilon)
            seen.setdefault(masks["length"], []).append((
                float(np.mean(np.abs(mean - moving_mean) / moving_std)),
                float(np.mean(variance / moving_std**2)),
                float(1.0 - real.mean()),
            ))  # fmt: skip
            return call(inputs, *args, **kwargs)

        return record

    norms = norm_layers(model)
    for side, norm in norms:
        norm.call = recording(side, norm)
    for inputs, _ in dataset.take(batches):
        encoder_ids = np.asarray(inputs[ENCODER_INPUT])
        decoder_ids = np.asarray(inputs[DECODER_INPUT])
        masks.update(encoder=encoder_ids != PAD_ID, decoder=decoder_ids != PAD_ID,
                     length=int(encoder_ids.shape[1]))  # fmt: skip
        model(inputs, training=True)
    return {
        length: {
            "batches": len(values) // len(norms),
            "mean_shift": float(np.mean([v[0] for v in values])),
            "variance_ratio": float(np.mean([v[1] for v in values])),
            "padding_share": float(np.mean([v[2] for v in values])),
        }
        for length, values in sorted(seen.items())
    }


def smoke_workdirs(scratch, variants):
    """Tiny models of each variant, trained for a few steps on the number-words corpus."""
    import keras_transformer as kt
    from keras_transformer import workdir
    from keras_transformer.data.number_words import number_words
    from keras_transformer.run import train

    pairs = number_words("train", size=300)
    tokenizer = kt.Tokenizer.train([text for pair in pairs for text in pair], 200)
    workdirs = {}
    for name in variants:
        normalization = VARIANTS[name]
        directory = os.path.join(scratch, name, "workdir")
        model = kt.TransformerConfig.preset("tiny", tokenizer.vocab_size,
                                            normalization=normalization)  # fmt: skip
        workdir.write_config(directory, {"model": model, "training": kt.TrainingConfig(
            max_tokens=256), "decoding": kt.DecodingConfig()})  # fmt: skip
        tokenizer.save(workdir.path(directory, workdir.TOKENIZER))
        train(directory, tokenizer, pairs, pairs[:20], max_steps=2, checkpoint_every=1,
              validate_every=1, verbose=0, validation_sample=0)  # fmt: skip
        workdirs[name] = directory
    return workdirs, pairs


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        if args.smoke:
            workdirs, train_pairs = smoke_workdirs(scratch, args.variants)
            test_pairs = train_pairs[:4]
            args.batch_sizes, args.statistics_batches = [2, 1], 3
        else:
            from keras_transformer.data import read_parallel

            files = [os.path.join(args.data, f"{split}.{side}")
                     for split in ("train", args.test) for side in ("en", "de")]  # fmt: skip
            missing = [path for path in files if not os.path.isfile(path)]
            if missing:
                print(f"SKIPPED: corpus files missing: {missing}")
                return 0
            train_pairs = read_parallel(*files[:2])
            test_pairs = read_parallel(*files[2:])[: args.test_size]
            workdirs = {name: os.path.join(args.runs, name, "workdir") for name in args.variants}
            workdirs = {name: path for name, path in workdirs.items() if os.path.isdir(path)}
            if not workdirs:
                raise SystemExit(f"no work directory of {list(VARIANTS)} under {args.runs}")
        plot_curves(workdirs, os.path.join(args.out, "normalization_curves.png"))
        sources, references = [s for s, _ in test_pairs], [t for _, t in test_pairs]
        results = {"cpu": cpu_model(), "test_sentences": len(sources), "variants": {}}
        for name, workdir in workdirs.items():
            print(f"{name}: translating in batches of {args.batch_sizes} ...", file=sys.stderr,
                  flush=True)  # fmt: skip
            # The smoke models are untrained: a short cap keeps their search short.
            overrides = {"max_extra_length": 2} if args.smoke else {}
            batches = batch_dependence(workdir, sources, references, args.batch_sizes, **overrides)
            measured = {"batches": batches}
            if VARIANTS[name] != "layer":
                measured["statistics"] = bucket_statistics(workdir, train_pairs,
                                                           args.statistics_batches)  # fmt: skip
            results["variants"][name] = measured
    with open(os.path.join(args.out, "normalization.json"), "w") as file:
        json.dump(results, file, indent=1)
    write_tables(results, os.path.join(args.out, "normalization.md"))
    return 0


def write_tables(results, path):
    """Prints the two tables and writes them as Markdown."""
    lines = []
    batch_rows = []
    for name, measured in results["variants"].items():
        row = {"variant": name}
        for key, value in measured["batches"].items():
            row[key] = f"{value['bleu']:.2f} ({value['differ']})"
        batch_rows.append(row)
    keys = list(results["variants"][next(iter(results["variants"]))]["batches"])
    columns = [("variant", "variant")] + [(key, f"batch {key}") for key in keys]
    print_table(batch_rows, columns)
    lines += ["BLEU by batch size and order (translations differing from batch "
              f"{keys[0]}), {results['test_sentences']} test sentences:", "",
              "| " + " | ".join(title for _, title in columns) + " |",
              "|" + "---|" * len(columns)]  # fmt: skip
    lines += [
        "| " + " | ".join(str(row.get(k, "")) for k, _ in columns) + " |" for row in batch_rows
    ]
    stat_rows = [
        {"variant": name, "length": length, **values}
        for name, measured in results["variants"].items()
        for length, values in measured.get("statistics", {}).items()
    ]
    if stat_rows:
        columns = [("variant", "variant"), ("length", "padded length"), ("batches", "batches"),
                   ("padding_share", "padding share"), ("mean_shift", "mean shift / moving std"),
                   ("variance_ratio", "var / moving var")]  # fmt: skip
        print()
        print_table(stat_rows, columns)
        lines += ["", "Batch statistics in training, per length bucket:", "",
                  "| " + " | ".join(title for _, title in columns) + " |",
                  "|" + "---|" * len(columns)]  # fmt: skip
        for row in stat_rows:
            cells = [f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k])
                     for k, _ in columns]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    with open(path, "w") as file:
        file.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
