"""One training run in a work directory (see `workdir.py`): `train()` with
checkpoints every N steps, resume and validation, on one device or several
(`distribution.py`). Checkpoint averaging (§6.1) is `averaging.py`'s.
"""

import dataclasses
import math
import os

import keras

from keras_transformer import multiprocess, workdir

# Their home before averaging.py, kept importable from here.
from keras_transformer.averaging import average_checkpoints, average_checkpoints_in  # noqa: F401
from keras_transformer.callbacks import (
    Checkpoints,
    LogLines,
    StepLog,
    StopAt,
    Validation,
    discard,
    optimizer_step,
)
from keras_transformer.distribution import data_parallel, resolve_devices
from keras_transformer.training import compile_model
from keras_transformer.translation_model import build_model


class TrainingError(RuntimeError):
    """A run that cannot go on: a NaN loss, or a work directory that does not fit."""


@dataclasses.dataclass
class _Run:
    """What a (resumed) run fits: its model and data, where it starts and ends, its settings."""

    model: keras.Model
    directory: str
    tokenizer: object
    corpus: object  # a BatchedCorpus of the training pairs
    valid_dataset: object  # a tf.data.Dataset, or None
    valid_sample: list  # the pairs translated for val_bleu
    start: int  # the optimizer step the run starts from
    total: float  # the step it ends at (math.inf: no step limit)
    accumulation: int  # micro-batches (batches) per optimizer step
    time_budget: float  # minutes, or None
    checkpoint_every: int
    keep_checkpoints: int
    minutes_before: float  # training minutes of the runs it resumes
    jit_compile: bool
    verbose: object  # model.fit's
    log_every: int  # steps between plain progress lines, or None
    validate_every: int  # steps between validations (0: each epoch only)


def train(
    directory,
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
    log_every=None,
    validate_every=0,
    devices=None,
    cluster=None,
):
    """Trains (or resumes) the model described by the work directory's `config.json`.

    A run continues from the last checkpoint when there is one: the same step
    count, optimizer state and data order, so a run killed at any moment loses
    at most the steps since that checkpoint. It ends at `max_steps` steps,
    after `epochs` passes over the data or after `time_budget` minutes,
    whichever comes first, then writes the last checkpoint and `model.keras`.

    A step is an optimizer update: `training.accumulation_steps` batches
    (each of `devices` times `training.max_tokens` tokens a side). The
    checkpoints hold one copy of the weights, whatever the device count, so
    a run may resume on another count (its batches then change size).

    Args:
        directory: str. A work directory holding `config.json` (see
            `workdir.write_config`).
        tokenizer: its `Tokenizer`.
        train_pairs, valid_pairs: lists of `(source, target)`.
        max_steps, epochs, time_budget: int, int, float minutes; at least one.
        checkpoint_every: int. Steps between checkpoints.
        keep_checkpoints: int. Checkpoints kept (the last ones).
        jit_compile: bool. XLA on TensorFlow and JAX; the torch backend
            runs eagerly (see `compile_model`).
        validation_sample: int. Validation pairs translated for `val_bleu`.
        verbose: `model.fit`'s.
        log_every: int. Plain lines every `log_every` steps and one per
            epoch instead of Keras's progress bar (redrawn with terminal
            escapes), for output to a log file.
        validate_every: int. Also validate (loss, greedy BLEU) every this
            many steps, not only at each epoch's end; 0: per epoch only.
        devices: int. Devices to train on, data-parallel (see
            `distribution.py`); None: every accelerator, or 1 on a CPU.
        cluster: a `multiprocess.Cluster`: train in several processes, each
            on every device it has (`devices` must be None). Only process 0
            writes files; every process reads the work directory.

    Returns:
        The `Transformer`, trained.

    Raises:
        TrainingError: the loss became NaN (the last good checkpoint stays).
    """
    from keras_transformer.data.pipeline import BatchedCorpus, make_dataset

    if not (max_steps or epochs or time_budget):
        raise ValueError("Give max_steps, epochs or time_budget: training needs an end")
    if cluster is not None:
        multiprocess.check_run(cluster, devices, time_budget)
        multiprocess.initialize(cluster)
        replicas = multiprocess.replicas()
    else:
        replicas = resolve_devices(devices)
    configs = workdir.read_config(directory)
    config, training = configs["model"], configs["training"]
    keras.utils.set_random_seed(training.seed)

    corpus = BatchedCorpus(  # tokenized once, for every segment of the run
        train_pairs, tokenizer, training.max_tokens, config.max_length, seed=training.seed,
        replicas=replicas,
    )  # fmt: skip
    accumulation = training.accumulation_steps
    updates_per_epoch = corpus.batches_per_epoch / accumulation
    if corpus.batches_per_epoch < 1 or (epochs and epochs * updates_per_epoch < 1):
        raise TrainingError(
            f"{len(train_pairs)} training pairs make {corpus.batches_per_epoch} full batch(es) "
            f"of max_tokens={training.max_tokens} on {replicas} device(s), with "
            f"accumulation_steps={accumulation}: too few for an update; add data or lower "
            f"training.max_tokens"
        )
    valid_dataset = None
    if valid_pairs:
        valid_dataset = make_dataset(
            valid_pairs, tokenizer, training.max_tokens, config.max_length, shuffle=False,
            drop_remainder=False, replicas=replicas,
        )  # fmt: skip
    total = min(max_steps or math.inf, int(epochs * updates_per_epoch) if epochs else math.inf)
    scope = multiprocess.scope() if cluster else data_parallel(replicas)
    with scope:  # the model is built, resumed and fit on the replicas
        model = _resumed_model(configs, directory, jit_compile)
        if multiprocess.is_chief():
            workdir.drop_rows_after(directory, optimizer_step(model))
        run = _Run(
            model, directory, tokenizer, corpus, valid_dataset,
            valid_sample=list(valid_pairs or [])[:validation_sample],
            start=optimizer_step(model), total=total, accumulation=accumulation,
            time_budget=time_budget, checkpoint_every=checkpoint_every,
            keep_checkpoints=keep_checkpoints,
            minutes_before=minutes_logged(directory) if optimizer_step(model) else 0.0,
            jit_compile=jit_compile, verbose=0 if log_every else verbose, log_every=log_every,
            validate_every=validate_every,
        )  # fmt: skip
        if run.start >= run.total:
            print(f"Already at step {run.start} of {run.total}: nothing to train", flush=True)
        else:
            _fit(run)
        if multiprocess.is_chief():
            save_model(model, directory)
        else:  # saving is collective: join the chief's, write nothing
            discard(model.save, workdir.MODEL)
    return model


def _resumed_model(configs, directory, jit_compile):
    """The compiled model, with the last checkpoint's weights and optimizer state if any."""
    training = configs["training"]
    model = build_model(configs["model"], dtype=training.precision)
    model = compile_model(model, training, jit_compile=jit_compile)
    found = workdir.checkpoints(directory)
    if found:
        if not model.optimizer.built:  # built already on TensorFlow replicas
            model.optimizer.build(model.trainable_variables)
        model.load_weights(found[-1][1])
        print(f"Resuming from {found[-1][1]} (step {optimizer_step(model)})", flush=True)
    return model


def _fit(run):
    # Keras counts batches (micro-batches), the optimizer counts updates: a
    # run stops only at an update (`StopAt`), so `step * accumulation`
    # batches are behind it, in this run or the runs it resumes.
    model, per_epoch, accumulation = run.model, run.corpus.batches_per_epoch, run.accumulation
    chief = multiprocess.is_chief()  # the other processes write nothing
    saver = Checkpoints(run.directory, run.checkpoint_every, run.keep_checkpoints, write=chief)
    logs = workdir.path(run.directory, workdir.LOGS)
    every = run.log_every or 100
    tokens_per_step = accumulation * run.corpus.target_tokens / per_epoch
    writers = []
    if chief:
        os.makedirs(logs, exist_ok=True)
        writers = [
            StepLog(run.directory, every, tokens_per_step, run.minutes_before),
            keras.callbacks.CSVLogger(workdir.path(run.directory, workdir.HISTORY), append=True),
            keras.callbacks.TensorBoard(logs, update_freq=every * accumulation),
        ]
    callbacks = [
        saver,
        StopAt(run.total, 60 * run.time_budget if run.time_budget else None),
        # Before the loggers, so that they see val_bleu.
        Validation(
            run.tokenizer,
            run.valid_sample,
            run.minutes_before,
            run.jit_compile,
            every=run.validate_every,
            dataset=run.valid_dataset,
        ),  # fmt: skip
        *writers,
    ]
    if run.log_every:  # after validation: its epoch line shows val_bleu
        callbacks.append(LogLines(run.log_every, run.total))
    epochs = math.ceil(run.total * accumulation / per_epoch) if math.isfinite(run.total) else 10**6
    # An epoch is one pass over the data. A resumed run first finishes the
    # epoch it was in, skipping the batches seen, then goes on epoch by epoch
    # from each one's first batch (an update may span two epochs); each
    # epoch's order depends on its number alone, so the order is that of an
    # uninterrupted run.
    epoch, offset = divmod(run.start * accumulation, per_epoch)
    segments = [(epoch, epoch + 1, per_epoch - offset, offset)] if offset else []
    segments.append((epoch + (1 if offset else 0), epochs, per_epoch, 0))
    validation_data = multiprocess.distribute(run.valid_dataset)
    for initial_epoch, end_epoch, steps, seen in segments:
        if model.stop_training or optimizer_step(model) >= run.total or initial_epoch >= end_epoch:
            break
        # Under several processes, fit takes this process's rows of each batch.
        model.fit(
            multiprocess.distribute(
                run.corpus.dataset(epochs=(initial_epoch, end_epoch)).skip(seen)
            ),
            initial_epoch=initial_epoch,
            epochs=end_epoch,
            steps_per_epoch=steps,
            validation_data=validation_data,
            callbacks=callbacks,
            shuffle=False,  # make_dataset shuffles, seeded
            verbose=run.verbose,
        )
    step = optimizer_step(model)
    # Decided from what every process knows alike, not from the chief's files:
    # under several processes a save is collective, so all save or none.
    saved = step == saver.saved_step or (step == run.start and run.start > 0)
    if saver.nan_step is None and not saved:
        saver.save(step)  # which refuses weights gone NaN
    if saver.nan_step is not None:
        raise _nan_error(run.directory, saver.nan_step)
    if chief:
        _plot(run.directory)


def _nan_error(directory, step):
    good = workdir.checkpoints(directory)
    where = f"{good[-1][1]} (step {good[-1][0]})" if good else "none yet"
    return TrainingError(
        f"The loss (or the weights) became NaN at step {step}; training stopped and "
        f"model.keras was not written. The last good checkpoint is {where}. Lower "
        f"training.learning_rate_scale or raise training.warmup_steps, then rerun: training "
        f"resumes from that checkpoint."
    )


def minutes_logged(directory):
    """The training minutes the work directory's `history.csv` logged last (0.0 if none)."""
    rows = workdir.read_history(workdir.path(directory, workdir.HISTORY))
    minutes = [row.get("minutes") for row in rows if row.get("minutes") is not None]
    return minutes[-1] if minutes else 0.0


def _plot(directory):
    from keras_transformer.visualization import plot_learning_curve

    history = workdir.path(directory, workdir.HISTORY)
    if os.path.isfile(history):
        png = workdir.path(directory, os.path.join(workdir.LOGS, "learning_curve.png"))
        plot_learning_curve([history, workdir.path(directory, workdir.STEPS)], png)


def save_model(model, directory):
    """Writes `model.keras` atomically (what translate, evaluate and export load)."""
    with workdir.atomic_write(workdir.path(directory, workdir.MODEL)) as temporary:
        model.save(temporary)
    return workdir.path(directory, workdir.MODEL)
