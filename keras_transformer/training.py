"""Training: the paper's optimizer (§5.3), compilation with its loss and metrics,
and `train()`: a resumable run in a work directory (see `workdir.py`), with
checkpoints every N steps and `average_checkpoints()` (§6.1).
"""

import math
import os
import re
import time
import warnings

import keras
import numpy as np

from keras_transformer import workdir as workdirs
from keras_transformer.config import TrainingConfig
from keras_transformer.losses import LabelSmoothedCrossEntropy
from keras_transformer.metrics import MaskedAccuracy, Perplexity
from keras_transformer.schedules import TransformerSchedule


def create_optimizer(hidden_dim, training_config=None):
    """Adam(beta_1=0.9, beta_2=0.98, epsilon=1e-9) on the warmup schedule (§5.3)."""
    training_config = training_config or TrainingConfig()
    schedule = TransformerSchedule(
        hidden_dim,
        warmup_steps=training_config.warmup_steps,
        scale=training_config.learning_rate_scale,
    )
    return keras.optimizers.Adam(
        learning_rate=schedule,
        beta_1=training_config.beta_1,
        beta_2=training_config.beta_2,
        epsilon=training_config.epsilon,
    )


def compile_model(model, training_config=None, jit_compile="auto", hidden_dim=None, **kwargs):
    """Compiles `model` with the paper's optimizer, smoothed loss and masked metrics.

    `jit_compile=True` compiles the train step with XLA on TensorFlow and JAX.
    On PyTorch it falls back to eager execution, see `_supported_jit_compile`.
    `hidden_dim` (d_model of the warmup schedule) defaults to
    `model.config.hidden_dim`; pass it for a model built by other means.
    A model that computes in float16 (`dtype="mixed_float16"`) gets its
    optimizer wrapped in `keras.optimizers.LossScaleOptimizer` (dynamic loss
    scaling), so an overflowing step is skipped instead of writing inf or NaN
    into the weights; `model.optimizer.iterations` then counts applied steps.
    """
    training_config = training_config or TrainingConfig()
    if hidden_dim is None:
        if not hasattr(model, "config"):
            raise ValueError(
                f"compile_model: model {model.name!r} has no `config` to read d_model from; "
                "pass hidden_dim=..."
            )
        hidden_dim = model.config.hidden_dim
    optimizer = create_optimizer(hidden_dim, training_config)
    if model.dtype_policy.compute_dtype == "float16":
        # float16 gradients underflow unless the loss is scaled up; a step whose
        # scaled gradients overflow is skipped and the scale halved.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=LabelSmoothedCrossEntropy(label_smoothing=training_config.label_smoothing),
        metrics=[MaskedAccuracy(), Perplexity()],
        jit_compile=_supported_jit_compile(jit_compile),
        **kwargs,
    )
    return model


def _supported_jit_compile(jit_compile):
    """PyTorch backend: `torch.compile` (torch 2.13) fails in TorchDynamo's guard
    evaluation on Keras layers, so the torch backend trains eagerly."""
    if jit_compile is True and keras.backend.backend() == "torch":
        warnings.warn(
            "jit_compile=True is not supported on the torch backend (torch.compile fails "
            "on Keras layers); training eagerly.",
            stacklevel=3,
        )
        return False
    return jit_compile


# --- a run in a work directory ------------------------------------------------

CHECKPOINT = re.compile(r"^ckpt-(\d+)\.weights\.h5$")


class TrainingError(RuntimeError):
    """A run that cannot go on: a NaN loss, or a work directory that does not fit."""


def checkpoints(workdir):
    """`[(step, path), ...]` of the work directory's checkpoints, oldest first."""
    directory = workdirs.path(workdir, workdirs.CHECKPOINTS)
    found = []
    for name in os.listdir(directory) if os.path.isdir(directory) else []:
        match = CHECKPOINT.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(directory, name)))
    return sorted(found)


def _step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class _Checkpoints(keras.callbacks.Callback):
    """Saves model and optimizer state every `every` steps, keeps the last `keep`.

    A non-finite loss stops the run before its weights are saved, so the last
    checkpoint is always a good one.
    """

    def __init__(self, workdir, every, keep):
        super().__init__()
        self.directory = workdirs.path(workdir, workdirs.CHECKPOINTS)
        self.workdir, self.every, self.keep = workdir, every, keep
        self.nan_step = None

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stop(step)
        elif step % self.every == 0:
            self.save(step)

    def stop(self, step):
        self.nan_step = step
        self.model.stop_training = True

    def save(self, step):
        # A finite loss was computed before this step's update: check the
        # weights themselves, so a checkpoint is never one of NaNs.
        if not all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in self.model.weights):
            return self.stop(step)
        self._write(step)

    def _write(self, step):
        os.makedirs(self.directory, exist_ok=True)
        final = os.path.join(self.directory, f"ckpt-{step}.weights.h5")
        temporary = os.path.join(self.directory, f"tmp-{os.getpid()}-ckpt-{step}.weights.h5")
        self.model.save_weights(temporary)
        os.replace(temporary, final)  # a kill never leaves a half-written checkpoint
        for _, old in checkpoints(self.workdir)[: -self.keep]:
            os.remove(old)


class _StopAt(keras.callbacks.Callback):
    """Stops at `max_steps` optimizer steps or after `budget_seconds`."""

    def __init__(self, max_steps, budget_seconds):
        super().__init__()
        self.max_steps, self.budget_seconds = max_steps, budget_seconds
        self.began = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        over_time = self.budget_seconds and time.monotonic() - self.began > self.budget_seconds
        if _step(self.model) >= self.max_steps or over_time:
            self.model.stop_training = True


class _Validation(keras.callbacks.Callback):
    """Adds `step`, `minutes`, `val_bleu` and `val_chrf` (greedy, on a sample) to the logs."""

    def __init__(self, tokenizer, pairs, minutes_before, jit_compile):
        super().__init__()
        self.jit_compile = jit_compile
        self.tokenizer, self.pairs = tokenizer, pairs
        self.began = time.monotonic() - 60 * minutes_before
        self.translator = None

    def on_epoch_end(self, epoch, logs=None):
        from keras_transformer.decoding.translator import Translator
        from keras_transformer.evaluation import score

        logs = logs if logs is not None else {}
        logs["step"] = _step(self.model)
        logs["minutes"] = (time.monotonic() - self.began) / 60
        if self.pairs:
            if self.translator is None:
                self.translator = Translator(
                    self.model, self.tokenizer, beam_size=1, jit_compile=self.jit_compile
                )
            hypotheses = self.translator.translate([source for source, _ in self.pairs])
            scores = score(hypotheses, [target for _, target in self.pairs])
            logs["val_bleu"], logs["val_chrf"] = scores.bleu, scores.chrf


def train(
    workdir,
    tokenizer,
    train_pairs,
    valid_pairs=None,
    max_steps=None,
    epochs=None,
    time_budget=None,
    checkpoint_every=1000,
    keep_checkpoints=5,
    jit_compile=True,
    validation_sample=200,
    verbose="auto",
):
    """Trains (or resumes) the model described by the work directory's `config.json`.

    A run continues from the last checkpoint when there is one: the same step
    count, optimizer state and data order, so a run killed at any moment loses
    at most the steps since that checkpoint. It ends at `max_steps` steps,
    after `epochs` passes over the data or after `time_budget` minutes,
    whichever comes first, then writes the last checkpoint and `model.keras`.

    Args:
        workdir: str. Holds `config.json` (see `workdir.write_config`).
        tokenizer: its `Tokenizer`.
        train_pairs, valid_pairs: lists of `(source, target)`.
        max_steps, epochs, time_budget: int, int, float minutes; at least one.
        checkpoint_every: int. Steps between checkpoints.
        keep_checkpoints: int. Checkpoints kept (the last ones).
        jit_compile: bool. XLA on TensorFlow and JAX; the torch backend
            always runs eagerly.
        validation_sample: int. Validation pairs translated for `val_bleu`.

    Returns:
        The `Transformer`, trained.

    Raises:
        TrainingError: the loss became NaN (the last good checkpoint stays).
    """
    from keras_transformer.data.pipeline import BatchedCorpus, make_dataset
    from keras_transformer.model import build_transformer

    if not (max_steps or epochs or time_budget):
        raise ValueError("Give max_steps, epochs or time_budget: training needs an end")
    configs = workdirs.read_config(workdir)
    config, training = configs["model"], configs["training"]
    keras.utils.set_random_seed(training.seed)

    corpus = BatchedCorpus(  # tokenized once, for every segment of the run
        train_pairs, tokenizer, training.max_tokens, config.max_length, seed=training.seed
    )

    def epochs_of(first, end):
        return corpus.dataset(epochs=(first, end))

    steps_per_epoch = corpus.batches_per_epoch
    if steps_per_epoch < 1:
        raise TrainingError(
            f"{len(train_pairs)} training pairs make no full batch of max_tokens="
            f"{training.max_tokens}: add data or lower training.max_tokens"
        )
    total = min(
        max_steps or math.inf,
        (epochs or math.inf) * steps_per_epoch,
    )
    valid_dataset = None
    if valid_pairs:
        valid_dataset = make_dataset(
            valid_pairs, tokenizer, training.max_tokens, config.max_length, shuffle=False,
            drop_remainder=False,
        )  # fmt: skip

    model = build_transformer(config)
    if keras.backend.backend() == "torch":
        jit_compile = False
    compile_model(model, training, jit_compile=jit_compile)
    start, minutes_before = 0, 0.0
    found = checkpoints(workdir)
    if found:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(found[-1][1])
        start = _step(model)
        minutes_before = minutes_logged(workdir)
        print(f"Resuming from {found[-1][1]} (step {start})", flush=True)
    if start >= total:
        print(f"Already at step {start} of {total}: nothing to train", flush=True)
    else:
        _fit(
            model, workdir, tokenizer, epochs_of, valid_dataset, valid_pairs, start, total,
            steps_per_epoch, time_budget, checkpoint_every, keep_checkpoints,
            validation_sample, minutes_before, verbose, jit_compile,
        )  # fmt: skip
    save_model(model, workdir)
    return model


def _fit(model, workdir, tokenizer, epochs_of, valid_dataset, valid_pairs, start, total,
         steps_per_epoch, time_budget, checkpoint_every, keep_checkpoints, validation_sample,
         minutes_before, verbose, jit_compile):  # fmt: skip
    saver = _Checkpoints(workdir, checkpoint_every, keep_checkpoints)
    sample = list(valid_pairs or [])[:validation_sample]
    logs = workdirs.path(workdir, workdirs.LOGS)
    os.makedirs(logs, exist_ok=True)
    callbacks = [
        saver,
        _StopAt(total, 60 * time_budget if time_budget else None),
        _Validation(
            tokenizer, sample, minutes_before, jit_compile
        ),  # before the loggers: they see val_bleu
        keras.callbacks.CSVLogger(os.path.join(logs, "history.csv"), append=True),
        keras.callbacks.TensorBoard(logs),
    ]
    epochs = math.ceil(total / steps_per_epoch) if math.isfinite(total) else 10**6
    # An epoch is one pass over the data. A resumed run first finishes the
    # epoch it was in, then goes on epoch by epoch; each epoch's order depends
    # on its number alone and the stream skips the batches already seen, so
    # the order is that of an uninterrupted run.
    epoch, offset = divmod(start, steps_per_epoch)
    segments = [(epoch, epoch + 1, steps_per_epoch - offset)] if offset else []
    segments.append((epoch + (1 if offset else 0), epochs, steps_per_epoch))
    for initial_epoch, end_epoch, steps in segments:
        if model.stop_training or _step(model) >= total or initial_epoch >= end_epoch:
            break
        seen = _step(model) - initial_epoch * steps_per_epoch
        model.fit(
            epochs_of(initial_epoch, end_epoch).skip(seen),
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            steps_per_epoch=steps,
            validation_data=valid_dataset,
            callbacks=callbacks,
            shuffle=False,  # make_dataset shuffles, seeded
            verbose=verbose,
        )
    if saver.nan_step is not None:
        raise _nan_error(workdir, saver.nan_step)
    step = _step(model)
    if not checkpoints(workdir) or checkpoints(workdir)[-1][0] != step:
        saver.save(step)
    _plot(workdir)
    if saver.nan_step is not None:
        raise _nan_error(workdir, saver.nan_step)


def _nan_error(workdir, step):
    good = checkpoints(workdir)
    where = f"{good[-1][1]} (step {good[-1][0]})" if good else "none yet"
    return TrainingError(
        f"The loss (or the weights) became NaN at step {step}; training stopped and "
        f"model.keras was not written. The last good checkpoint is {where}. Lower "
        f"training.learning_rate_scale or raise training.warmup_steps, then rerun: training "
        f"resumes from that checkpoint."
    )


def minutes_logged(workdir):
    """The training minutes the work directory's `history.csv` logged last (0.0 if none)."""
    import csv

    history = os.path.join(workdirs.path(workdir, workdirs.LOGS), "history.csv")
    if not os.path.isfile(history):
        return 0.0
    with open(history, encoding="utf-8") as file:
        minutes = [_number(row.get("minutes")) for row in csv.DictReader(file)]
    minutes = [value for value in minutes if value is not None]
    return minutes[-1] if minutes else 0.0


def _number(text):
    """A CSVLogger cell as a float; None for "NA" (a key missing that epoch) or blank."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _plot(workdir):
    from keras_transformer.visualization import plot_learning_curve

    logs = workdirs.path(workdir, workdirs.LOGS)
    history = os.path.join(logs, "history.csv")
    if os.path.isfile(history):
        plot_learning_curve(history, os.path.join(logs, "learning_curve.png"))


def save_model(model, workdir):
    """Writes `model.keras` atomically (what translate, evaluate and export load)."""
    final = workdirs.path(workdir, workdirs.MODEL)
    temporary = workdirs.path(workdir, f"tmp-{os.getpid()}-{workdirs.MODEL}")
    model.save(temporary)
    os.replace(temporary, final)
    return final


def average_checkpoints(model, paths):
    """Sets `model`'s weights to the mean of the checkpoints at `paths` (paper §6.1).

    "For the base models, we used a single model obtained by averaging the
    last 5 checkpoints." Only model weights are averaged; optimizer state is
    left out.
    """
    if not paths:
        raise ValueError("No checkpoints to average")
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    total = None
    for path in paths:
        model.load_weights(path)
        weights = [np.asarray(w, dtype="float64") for w in model.get_weights()]
        total = weights if total is None else [t + w for t, w in zip(total, weights, strict=True)]
    dtypes = [w.dtype for w in model.get_weights()]
    model.set_weights([(t / len(paths)).astype(d) for t, d in zip(total, dtypes, strict=True)])
    return model


def average_checkpoints_in(workdir, last=5):
    """Averages a work directory's last `last` checkpoints into its `model.keras`.

    The model `train` wrote is the last checkpoint's weights, so replacing
    `model.keras` loses nothing: the checkpoints stay.

    Returns:
        str: what was done, for the user.
    """
    from keras_transformer.model import build_transformer

    if last < 1:
        raise ValueError(f"--last must be positive. Received: {last}")
    found = checkpoints(workdir)
    if not found:
        raise FileNotFoundError(f"No checkpoints in {workdirs.path(workdir, workdirs.CHECKPOINTS)}")
    chosen = found[-last:]
    configs = workdirs.read_config(workdir)
    model = build_transformer(configs["model"])
    compile_model(model, configs["training"])
    average_checkpoints(model, [path for _, path in chosen])
    save_model(model, workdir)
    steps = ", ".join(str(step) for step, _ in chosen)
    target = workdirs.path(workdir, workdirs.MODEL)
    return f"Averaged {len(chosen)} checkpoint(s) (steps {steps}) into {target}"
