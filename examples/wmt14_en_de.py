"""WMT 2014 English -> German with the paper's base recipe (§5, §6.1).

Needs internet (tensorflow-datasets downloads WMT14, about 1.3 GB) and a GPU
or TPU: the base model trains for 100,000 steps of ~25,000 tokens, 12 hours
on 8 P100s in the paper. It will not finish on a CPU.

    pip install tensorflow-datasets
    python examples/wmt14_en_de.py --workdir runs/wmt14-en-de --max-steps 100000

Writes the pairs to text files once, then runs `keras-transformer train` with
the `base` preset, a 37,000-piece joint vocabulary, max_tokens 25,000,
checkpoints every 10 minutes' worth of steps and averages the last 5, and
evaluates on newstest2014 with beam 4 and alpha 0.6.
"""

import argparse
import os
import sys

from keras_transformer import cli


def write_split(split, directory):
    import tensorflow_datasets as tfds

    paths = (os.path.join(directory, f"{split}.en"), os.path.join(directory, f"{split}.de"))
    if all(os.path.exists(path) for path in paths):
        return paths
    dataset = tfds.load("wmt14_translate/de-en", split=split, as_supervised=False)
    with open(paths[0], "w", encoding="utf-8") as en, open(paths[1], "w", encoding="utf-8") as de:
        for example in tfds.as_numpy(dataset):
            en.write(example["en"].decode("utf-8").replace("\n", " ") + "\n")
            de.write(example["de"].decode("utf-8").replace("\n", " ") + "\n")
    return paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/wmt14-en-de")
    parser.add_argument("--data", default="data/wmt14")
    parser.add_argument("--max-steps", type=int, default=100_000)
    args = parser.parse_args()
    os.makedirs(args.data, exist_ok=True)
    train = write_split("train", args.data)
    valid = write_split("validation", args.data)
    test = write_split("test", args.data)
    status = cli.main([
        "train", "--src", train[0], "--tgt", train[1], "--valid-src", valid[0],
        "--valid-tgt", valid[1], "--workdir", args.workdir, "--preset", "base",
        "--vocab-size", "37000", "--set", "max_tokens=25000",
        "--max-steps", str(args.max_steps), "--checkpoint-every", "1000", "--average-last", "5",
    ])  # fmt: skip
    if status:
        sys.exit(status)
    sys.exit(cli.main(["evaluate", "--workdir", args.workdir, "--src", test[0], "--ref", test[1]]))


if __name__ == "__main__":
    main()
