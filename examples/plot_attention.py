"""Attention maps of a trained model as PNG, as in the paper's Figures 3 to 5.

Translates one sentence with the work directory's model, then draws, for the
last layer, the encoder self-attention and the decoder's attention over the
source (one panel per head).

    python examples/plot_attention.py --workdir runs/number-words-en-de \
        --text "forty-two thousand, one hundred and seven" --out attention
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_transformer as kt  # noqa: E402
from keras_transformer.visualization import plot_attention  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--layer", type=int, default=-1, help="which layer (default: the last)")
    parser.add_argument("--out", default="attention", help="PNG file prefix")
    args = parser.parse_args()

    model_path, tokenizer_path, decoding = kt.workdir.model_files(args.workdir)
    model = keras.saving.load_model(model_path, compile=False)
    tokenizer = kt.Tokenizer.load(tokenizer_path)
    translator = kt.Translator(model, tokenizer, **decoding.to_dict())
    translation = translator.translate([args.text])[0]
    print(f"{args.text} -> {translation}")

    source = tokenizer.encode(args.text)
    target = tokenizer.encode(translation)  # ends in EOS
    decoder_input = [kt.BOS_ID, *target[:-1]]
    scores = model.attention_scores(np.array([source], "int32"), np.array([decoder_input], "int32"))
    source_pieces = [tokenizer.id_to_piece(i) for i in source]
    target_pieces = [tokenizer.id_to_piece(i) for i in target]
    for name, rows, columns in (
        ("encoder_self_attention", source_pieces, source_pieces),
        ("cross_attention", target_pieces, source_pieces),
    ):
        weights = keras.ops.convert_to_numpy(scores[name][args.layer])[0]
        path = plot_attention(weights, columns, rows, f"{args.out}-{name}.png", title=name)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
