"""`quality.py`'s `peer` run: the recipe of the keras.io example
"English-to-Spanish translation with a sequence-to-sequence Transformer" in
its keras-hub form, written anew (the differences are listed in `quality.py`).
"""

import os
import re
import time

PEER = dict(
    embed_dim=256, intermediate_dim=2048, num_heads=8, dropout=0.5, batch_size=64, max_length=40
)
PEER_RESERVED = ["[PAD]", "[UNK]", "[START]", "[END]"]


def train_peer(args, task, directory):
    """The keras.io recipe (see `quality.py`) on `task`; its result, as `train_ours`'."""
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf  # tf.data and the tokenizers, as in the keras.io example
    from keras import ops
    from quality import evaluate, read_split

    train_pairs, valid_pairs = read_split(args, task, "train"), read_split(args, task, "valid")
    test_pairs = read_split(args, task, task.test)[: args.test_size]
    keras.utils.set_random_seed(1234)
    length = PEER["max_length"]

    def word_piece(texts):
        vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
            tf.data.Dataset.from_tensor_slices(texts).batch(1000),
            vocabulary_size=args.vocab_size,
            reserved_tokens=PEER_RESERVED,
        )
        return keras_hub.tokenizers.WordPieceTokenizer(vocabulary=vocabulary)

    source_tokenizer = word_piece([source for source, _ in train_pairs])
    target_tokenizer = word_piece([target for _, target in train_pairs])
    pad, start, end = (target_tokenizer.token_to_id(t) for t in ("[PAD]", "[START]", "[END]"))
    source_packer = keras_hub.layers.StartEndPacker(sequence_length=length, pad_value=pad)
    target_packer = keras_hub.layers.StartEndPacker(
        sequence_length=length + 1, start_value=start, end_value=end, pad_value=pad
    )

    def preprocess(sources, targets):
        targets = target_packer(target_tokenizer(targets))
        inputs = {"encoder_inputs": source_packer(source_tokenizer(sources))}
        inputs["decoder_inputs"] = targets[:, :-1]
        return inputs, targets[:, 1:]

    def dataset(pairs, shuffle):
        data = tf.data.Dataset.from_tensor_slices(
            ([source for source, _ in pairs], [target for _, target in pairs])
        )
        if shuffle:
            data = data.shuffle(len(pairs), seed=1234)
        data = data.batch(PEER["batch_size"]).map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        return data.prefetch(tf.data.AUTOTUNE)

    width = PEER["embed_dim"]
    layer_args = dict(intermediate_dim=PEER["intermediate_dim"], num_heads=PEER["num_heads"])
    encoder_inputs = keras.Input(shape=(None,), dtype="int32", name="encoder_inputs")
    decoder_inputs = keras.Input(shape=(None,), dtype="int32", name="decoder_inputs")
    x = keras_hub.layers.TokenAndPositionEmbedding(
        source_tokenizer.vocabulary_size(), length, width, mask_zero=True
    )(encoder_inputs)
    encoded = keras_hub.layers.TransformerEncoder(**layer_args)(x)
    x = keras_hub.layers.TokenAndPositionEmbedding(
        target_tokenizer.vocabulary_size(), length, width, mask_zero=True
    )(decoder_inputs)
    x = keras_hub.layers.TransformerDecoder(**layer_args)(
        decoder_sequence=x, encoder_sequence=encoded
    )
    x = keras.layers.Dropout(PEER["dropout"])(x)
    outputs = keras.layers.Dense(target_tokenizer.vocabulary_size(), activation="softmax")(x)
    model = keras.Model([encoder_inputs, decoder_inputs], outputs)
    model.compile("rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    minutes = []

    class Budget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.began, self.steps = time.monotonic(), 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if args.steps:
                done = self.steps >= args.steps
            else:
                done = time.monotonic() - self.began > 60 * args.budget
            if done:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            minutes.append((time.monotonic() - self.began) / 60)
            if logs is not None:
                logs["minutes"] = minutes[-1]
                logs["step"] = int(ops.convert_to_numpy(self.model.optimizer.iterations))

    history = os.path.join(directory, "history.csv")
    began = time.monotonic()
    model.fit(
        dataset(train_pairs, shuffle=True), validation_data=dataset(valid_pairs, shuffle=False),
        epochs=10**6, callbacks=[Budget(), keras.callbacks.CSVLogger(history)],
    )  # fmt: skip
    train_minutes = (time.monotonic() - began) / 60
    steps = int(ops.convert_to_numpy(model.optimizer.iterations))

    sampler = keras_hub.samplers.GreedySampler()

    def translate(texts):
        translations = []
        for first in range(0, len(texts), 64):
            encoder_ids = source_packer(source_tokenizer(tf.constant(texts[first : first + 64])))
            encoder_ids = ops.convert_to_tensor(np.asarray(encoder_ids), "int32")
            batch = ops.shape(encoder_ids)[0]
            prompt = ops.concatenate(
                [ops.full((batch, 1), start, "int32"), ops.full((batch, length - 1), pad, "int32")],
                axis=1,
            )

            def next_token(prompt, cache, index, encoder_ids=encoder_ids):
                probabilities = model([encoder_ids, prompt], training=False)[:, index - 1, :]
                return probabilities, None, cache

            generated = ops.convert_to_numpy(
                sampler(next_token, prompt, index=1, stop_token_ids=[end])
            )
            for row in generated:
                row = list(row[1:])
                row = row[: row.index(end)] if end in row else row
                ids = [token for token in row if token != pad]
                text = target_tokenizer.detokenize(np.asarray(ids, "int32")) if ids else ""
                translations.append(detokenize(_text(text)))
        return translations

    result = {"steps": steps, "train_minutes": train_minutes, "parameters": model.count_params()}
    result.update(evaluate(directory, "greedy", translate, test_pairs))
    result["variants"] = {}
    from keras_transformer.visualization import plot_learning_curve

    plot_learning_curve(
        history, os.path.join(directory, "learning_curve.png"), loss_label="cross-entropy"
    )
    return result


def detokenize(text):
    """Takes out the spaces WordPiece's detokenizer leaves around punctuation."""
    text = re.sub(r"([¿¡(\[]) ", r"\1", text)
    text = re.sub(r" ([.,!?;:%)\]])", r"\1", text)
    return re.sub(r"(\w) ([-'’/]) (\w)", r"\1\2\3", text)


def _text(value):
    import numpy as np

    value = np.asarray(value).item() if not isinstance(value, str) else value
    return value.decode("utf-8") if isinstance(value, bytes) else value
