"""Run by test_distribution.py in a fresh process, on KERAS_BACKEND (jax or tensorflow)
with the CPU split into 2 devices before the backend starts:

1. Data-parallel training on the 2 devices equals one device on the same
   global batches (dropout 0): the losses of each step and the final weights.
2. `train --devices 2` writes checkpoints that a 1-device model resumes from
   (weights and optimizer state) and `average` averages; validation runs on
   the 2 devices (an odd number of validation pairs: a last batch padded to
   an even count).
"""

import os
import sys
import tempfile

BACKEND = os.environ["KERAS_BACKEND"]
if BACKEND == "jax":  # read when JAX starts
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=2"]
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if BACKEND == "tensorflow":  # before TensorFlow lists its devices
    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras_transformer as kt  # noqa: E402
from keras_transformer import cli, distribution, run, workdir  # noqa: E402
from keras_transformer.callbacks import optimizer_step  # noqa: E402

assert len(distribution.local_devices()) == 2, distribution.local_devices()


def replicas_of(model):
    """How many devices hold the model's weights, as the engine says."""
    if BACKEND == "jax":
        return len(model.trainable_variables[0].value.sharding.device_set)
    return model.distribute_strategy.num_replicas_in_sync


class Losses(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs["loss"]))  # the mean so far: equal means, equal losses


def equal_to_one_device():
    config = kt.TransformerConfig.tiny(vocab_size=40, num_layers=1, dropout=0.0)
    rng = np.random.default_rng(0)
    steps, batch = 3, 8

    def ids(length):
        # Rows of 2 to `length` tokens: a batch's halves hold different token counts.
        values = rng.integers(kt.EOS_ID + 1, 40, size=(steps * batch, length)).astype("int32")
        values[np.arange(length) >= rng.integers(2, length + 1, size=(len(values), 1))] = kt.PAD_ID
        return values

    inputs = {"encoder_token_ids": ids(6), "decoder_token_ids": ids(5)}
    labels = np.where(inputs["decoder_token_ids"] == kt.PAD_ID, kt.PAD_ID, ids(5))
    dataset = tf.data.Dataset.from_tensor_slices((inputs, labels)).batch(batch)
    keras.utils.set_random_seed(1)
    initial = kt.build_transformer(config).get_weights()

    def train(devices):
        with distribution.data_parallel(devices):
            model = kt.build_transformer(config)
            model.set_weights(initial)
            # epsilon: see ADAM_EPSILON in test_distribution.py. XLA on 2
            # TensorFlow replicas falls back to a graph without it, with a warning.
            training = kt.TrainingConfig(warmup_steps=2, epsilon=1e-3)
            kt.compile_model(model, training, jit_compile=True if devices > 1 else "auto")
            assert model.jit_compile == (BACKEND == "jax"), model.jit_compile
            losses = Losses()
            model.fit(dataset, epochs=1, callbacks=[losses], verbose=0, shuffle=False)
            assert replicas_of(model) == devices, (replicas_of(model), devices)
        return losses.values, model.get_weights()

    one_losses, one_weights = train(1)
    two_losses, two_weights = train(2)
    assert len(two_losses) == steps
    np.testing.assert_allclose(two_losses, one_losses, rtol=0, atol=1e-5)
    assert any(np.abs(a - b).max() > 1e-4 for a, b in zip(one_weights, initial, strict=True))
    for a, b in zip(two_weights, one_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def resumes_on_one_device(directory):
    work = os.path.join(directory, "run")
    files = {}
    for split, size in (("train", 150), ("valid", 5)):
        files[split] = os.path.join(directory, f"{split}.tsv")
        with open(files[split], "w", encoding="utf-8") as file:
            file.writelines(f"{s}\t{t}\n" for s, t in kt.data.number_words(split, size=size))
    no_jit = ["--no-jit"] if BACKEND == "tensorflow" else []
    status = cli.main(["train", "--tsv", files["train"], "--valid-tsv", files["valid"],
                       "--workdir", work, "--preset", "tiny", "--vocab-size", "100", *no_jit,
                       "--set", "model.num_layers=1", "--set", "model.max_length=16",
                       "--set", "max_tokens=64", "--set", "dropout=0.0",
                       "--set", "warmup_steps=10", "--checkpoint-every", "1", "--devices", "2",
                       "--max-steps", "2"])  # fmt: skip
    assert status == 0
    assert [step for step, _ in workdir.checkpoints(work)] == [1, 2]
    history = workdir.read_history(workdir.path(work, workdir.HISTORY))
    assert history[-1]["val_loss"] is not None and history[-1]["val_bleu"] is not None, history
    # On one device: what `train` resumes from, then what `average` reads.
    resumed = run._resumed_model(workdir.read_config(work), work, jit_compile=False)
    assert optimizer_step(resumed) == 2
    saved = keras.saving.load_model(workdir.path(work, workdir.MODEL), compile=False)
    for a, b in zip(resumed.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert cli.main(["average", "--workdir", work, "--last", "2"]) == 0


equal_to_one_device()
with tempfile.TemporaryDirectory() as directory:
    resumes_on_one_device(directory)
print("ok", file=sys.stderr)
