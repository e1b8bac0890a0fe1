"""The callbacks of a training run (`run.train`): checkpoints, the stop, validation."""

import math
import os
import tempfile
import time

import keras
import numpy as np

from keras_transformer import workdir
from keras_transformer.tokenization import PAD_ID


def discard(save, name):
    """Calls `save(path)` with a path in a temporary directory, then deletes it.

    For the processes other than the chief of a multi-process run: they save
    when the chief saves (saving creates variables, which is a collective
    operation there), but never into the work directory.
    """
    with tempfile.TemporaryDirectory() as scratch:
        save(os.path.join(scratch, name))


def optimizer_step(model):
    """Updates applied so far (with gradient accumulation, not batches)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class PerUpdate(keras.callbacks.Callback):
    """Calls `on_update(step, logs)` after each batch that completed an optimizer update.

    With `accumulation_steps` K, Keras ends a batch K times per update and
    `optimizer.iterations` moves once; a step's checkpoint, log line or
    validation happens once, at the batch that applied it.
    """

    def on_train_begin(self, logs=None):
        self.last_step = optimizer_step(self.model)

    def on_train_batch_end(self, batch, logs=None):
        step = optimizer_step(self.model)
        if step != self.last_step:
            self.last_step = step
            self.on_update(step, logs)

    def on_update(self, step, logs):
        raise NotImplementedError


class Checkpoints(PerUpdate):
    """Saves model and optimizer state every `every` steps, keeps the last `keep`.

    A non-finite loss stops the run before its weights are saved, so the last
    checkpoint is always a good one. With `write=False` (a process that is
    not the chief) it saves into a temporary directory, deleted at once:
    saving may create variables, which under several processes is a
    collective operation that every process must join.
    """

    def __init__(self, directory, every, keep, write=True):
        super().__init__()
        self.directory, self.every, self.keep = directory, every, keep
        self.write = write  # False: a process other than the chief
        self.nan_step = self.saved_step = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stop(optimizer_step(self.model))
        else:
            super().on_train_batch_end(batch, logs)

    def on_update(self, step, logs):
        if step % self.every == 0:
            self.save(step)

    def stop(self, step):
        self.nan_step = step
        self.model.stop_training = True

    def save(self, step):
        # A finite loss was computed before this step's update: check the
        # weights themselves, so a checkpoint is never one of NaNs.
        if not all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in self.model.weights):
            return self.stop(step)
        self.saved_step = step
        if not self.write:
            return discard(self.model.save_weights, "checkpoint.weights.h5")
        with workdir.atomic_write(workdir.checkpoint_path(self.directory, step)) as temporary:
            self.model.save_weights(temporary)
        for _, old in workdir.checkpoints(self.directory)[: -self.keep]:
            os.remove(old)


class StopAt(PerUpdate):
    """Stops at `max_steps` optimizer steps or after `budget_seconds`, at an update:
    never between the micro-batches of one, so a run always ends (and a
    resumed run starts) at `optimizer.iterations * accumulation_steps` batches."""

    def __init__(self, max_steps, budget_seconds):
        super().__init__()
        self.max_steps, self.budget_seconds = max_steps, budget_seconds
        self.began = time.monotonic()

    def on_update(self, step, logs):
        over_time = self.budget_seconds and time.monotonic() - self.began > self.budget_seconds
        if step >= self.max_steps or over_time:
            self.model.stop_training = True


class Validation(PerUpdate):
    """Adds `step`, `minutes`, `val_bleu` and `val_chrf` (greedy, on a sample) to the logs.

    At each epoch's end (Keras adds `val_loss` then), and with `every`, also
    every `every` optimizer steps, with `val_loss` computed here: the
    label-smoothed loss over the validation set's target tokens.
    """

    def __init__(self, tokenizer, pairs, minutes_before, jit_compile, every=0, dataset=None):
        super().__init__()
        self.jit_compile, self.every, self.dataset = jit_compile, every, dataset
        self.tokenizer, self.pairs = tokenizer, pairs
        self.began = time.monotonic() - 60 * minutes_before
        self.translator = None

    def on_update(self, step, logs):
        if self.every and step % self.every == 0 and logs is not None:
            if self.dataset is not None:
                logs["val_loss"] = self.loss()
            self.on_epoch_end(None, logs)

    def on_epoch_end(self, epoch, logs=None):
        from keras_transformer.decoding.translator import Translator
        from keras_transformer.evaluation import score

        logs = logs if logs is not None else {}
        logs["step"] = optimizer_step(self.model)
        logs["minutes"] = (time.monotonic() - self.began) / 60
        if self.pairs:
            if self.translator is None:
                self.translator = Translator(
                    self.model, self.tokenizer, beam_size=1, jit_compile=self.jit_compile
                )
            hypotheses = self.translator.translate([source for source, _ in self.pairs])
            scores = score(hypotheses, [target for _, target in self.pairs])
            logs["val_bleu"], logs["val_chrf"] = scores.bleu, scores.chrf

    def loss(self):
        """The model's loss over the validation set, weighted by target tokens."""
        total = tokens = 0.0
        for inputs, labels in self.dataset:
            inputs, labels = {k: np.asarray(v) for k, v in inputs.items()}, np.asarray(labels)
            count = float(np.sum(labels != PAD_ID))
            logits = self.model(inputs, training=False)
            total += float(keras.ops.convert_to_numpy(self.model.loss(labels, logits))) * count
            tokens += count
        return total / max(tokens, 1.0)


class StepLog(PerUpdate):
    """Every `every` steps: `learning_rate` and `tokens_per_s` into the logs, and a row in
    `logs/steps.csv` (step, minutes, loss, learning rate, tokens/s, validation when it ran).

    Before `TensorBoard(update_freq=every)`, which writes the same scalars per
    step. tokens/s counts target tokens, `tokens_per_step` (the epoch's mean
    per update: every replica's batch, every micro-batch) per step.
    """

    def __init__(self, directory, every, tokens_per_step, minutes_before):
        super().__init__()
        self.path = workdir.path(directory, workdir.STEPS)
        self.every, self.tokens_per_step = every, tokens_per_step
        self.began = time.monotonic() - 60 * minutes_before
        self.last = None

    def on_update(self, step, logs):
        now = time.monotonic()
        validated = "val_loss" in (logs or {}) or "val_bleu" in (logs or {})
        if logs is None or (step % self.every and not validated):
            return
        if self.last is not None and step > self.last[0]:
            logs["tokens_per_s"] = (
                (step - self.last[0]) * self.tokens_per_step / (now - self.last[1])
            )
        self.last = (step, now)
        schedule = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(schedule))
        row = {"step": step, "minutes": (now - self.began) / 60, **logs}
        workdir.append_row(self.path, row, STEP_COLUMNS)


STEP_COLUMNS = ("step", "minutes", "loss", "learning_rate", "tokens_per_s", "val_loss",
                "val_bleu", "val_chrf")  # fmt: skip


class LogLines(PerUpdate):
    """Plain progress lines, for a log file: every `every` steps, and each epoch's end.

    Keras's progress bar redraws one line with terminal escapes; in a file
    that is unreadable. These lines are whole, so `grep` and `tail` read them.
    """

    def __init__(self, every, total, stream=None):
        super().__init__()
        self.every, self.stream = every, stream
        self.of = f"/{total}" if math.isfinite(total) else ""

    def on_update(self, step, logs):
        if step % self.every == 0:
            self._print(f"step {step}{self.of}", logs)

    def on_epoch_end(self, epoch, logs=None):
        self._print(f"epoch {epoch + 1}", logs)  # with `step`, `minutes` and validation

    def _print(self, what, logs):
        values = (f"{name} {float(value):.4g}" for name, value in (logs or {}).items())
        print("  ".join([what, *values]), file=self.stream, flush=True)
