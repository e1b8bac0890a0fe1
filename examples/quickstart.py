"""Quickstart: the whole flow through the public Python API, on the built-in corpus.

Number words, English to German ("three hundred and twenty-one" ->
"dreihunderteinundzwanzig"): a joint BPE vocabulary, token-budget batches,
the paper's optimizer, loss and schedule with `model.fit`, then beam search.

    KERAS_BACKEND=jax python examples/quickstart.py            # about 7 minutes on 2 cores
    KERAS_BACKEND=torch python examples/quickstart.py --epochs 1 --train-size 5000
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import keras_transformer as kt  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--preset", default="tiny", choices=kt.config.PRESETS)
    parser.add_argument("--beam-size", type=int, default=4)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)

    train = kt.data.number_words("train", target_lang="de", size=args.train_size)
    test = kt.data.number_words("test", target_lang="de", size=200)
    tokenizer = kt.Tokenizer.train([text for pair in train for text in pair], vocab_size=1000)
    dataset = kt.data.make_dataset(train, tokenizer, max_tokens=2048, max_length=64)

    config = kt.TransformerConfig.preset(
        args.preset, tokenizer.vocab_size, hidden_dim=128, intermediate_dim=512, max_length=64
    )
    model = kt.build_transformer(config)
    kt.compile_model(model, kt.TrainingConfig(warmup_steps=1000), jit_compile=True)
    model.fit(dataset, epochs=args.epochs, shuffle=False)  # make_dataset shuffles

    translator = kt.Translator(model, tokenizer, beam_size=args.beam_size)
    hypotheses = translator.translate([source for source, _ in test])
    exact = sum(h == target for h, (_, target) in zip(hypotheses, test, strict=True))
    for (source, target), hypothesis in list(zip(test, hypotheses, strict=True))[:5]:
        print(f"{source}\n  -> {hypothesis}\n     (reference: {target})")
    print(f"exact match on {len(test)} test numbers: {exact / len(test):.1%}")


if __name__ == "__main__":
    main()
