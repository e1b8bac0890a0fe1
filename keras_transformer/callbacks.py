"""The callbacks of a training run (`run.train`): checkpoints, the stop, validation."""

import math
import os
import time

import keras
import numpy as np

from keras_transformer import workdir


def optimizer_step(model):
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class Checkpoints(keras.callbacks.Callback):
    """Saves model and optimizer state every `every` steps, keeps the last `keep`.

    A non-finite loss stops the run before its weights are saved, so the last
    checkpoint is always a good one.
    """

    def __init__(self, directory, every, keep):
        super().__init__()
        self.directory, self.every, self.keep = directory, every, keep
        self.nan_step = None

    def on_train_batch_end(self, batch, logs=None):
        step = optimizer_step(self.model)
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
        with workdir.atomic_write(workdir.checkpoint_path(self.directory, step)) as temporary:
            self.model.save_weights(temporary)
        for _, old in workdir.checkpoints(self.directory)[: -self.keep]:
            os.remove(old)


class StopAt(keras.callbacks.Callback):
    """Stops at `max_steps` optimizer steps or after `budget_seconds`."""

    def __init__(self, max_steps, budget_seconds):
        super().__init__()
        self.max_steps, self.budget_seconds = max_steps, budget_seconds
        self.began = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        over_time = self.budget_seconds and time.monotonic() - self.began > self.budget_seconds
        if optimizer_step(self.model) >= self.max_steps or over_time:
            self.model.stop_training = True


class Validation(keras.callbacks.Callback):
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


class LogLines(keras.callbacks.Callback):
    """Plain progress lines, for a log file: every `every` steps, and each epoch's end.

    Keras's progress bar redraws one line with terminal escapes; in a file
    that is unreadable. These lines are whole, so `grep` and `tail` read them.
    """

    def __init__(self, every, total, stream=None):
        super().__init__()
        self.every, self.stream = every, stream
        self.of = f"/{total}" if math.isfinite(total) else ""

    def on_train_batch_end(self, batch, logs=None):
        step = optimizer_step(self.model)
        if step % self.every == 0:
            self._print(f"step {step}{self.of}", logs)

    def on_epoch_end(self, epoch, logs=None):
        self._print(f"epoch {epoch + 1}", logs)  # with `step`, `minutes` and validation

    def _print(self, what, logs):
        values = (f"{name} {float(value):.4g}" for name, value in (logs or {}).items())
        print("  ".join([what, *values]), file=self.stream, flush=True)
