"""Checkpoint averaging (paper §6.1): "For the base models, we used a single
model obtained by averaging the last 5 checkpoints."
"""

import numpy as np

from keras_transformer import workdir
from keras_transformer.training import compile_model


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


def average_checkpoints_in(directory, last=5):
    """Averages a work directory's last `last` checkpoints into its `model.keras`.

    The model `train` wrote is the last checkpoint's weights, so replacing
    `model.keras` loses nothing: the checkpoints stay.

    Returns:
        str: what was done, for the user.
    """
    from keras_transformer.translation_model import build_model

    if last < 1:
        raise ValueError(f"--last must be positive. Received: {last}")
    found = workdir.checkpoints(directory)
    if not found:
        folder = workdir.path(directory, workdir.CHECKPOINTS)
        raise FileNotFoundError(f"No checkpoints in {folder}")
    chosen = found[-last:]
    configs = workdir.read_config(directory)
    training = configs["training"]
    model = build_model(configs["model"], dtype=training.precision)
    model = compile_model(model, training)
    average_checkpoints(model, [path for _, path in chosen])
    from keras_transformer.run import save_model

    target = save_model(model, directory)
    steps = ", ".join(str(step) for step, _ in chosen)
    return f"Averaged {len(chosen)} checkpoint(s) (steps {steps}) into {target}"
