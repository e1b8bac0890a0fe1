"""Training, the library API: the paper's optimizer (§5.3) and compilation with
its loss and metrics. A whole run in a work directory is `run.py`'s.
"""

import warnings

import keras

from keras_transformer.config import TrainingConfig
from keras_transformer.distribution import build_for_replicas, tensorflow_replicas
from keras_transformer.losses import LabelSmoothedCrossEntropy
from keras_transformer.metrics import MaskedAccuracy, Perplexity
from keras_transformer.schedules import TransformerSchedule


def create_optimizer(hidden_dim, training_config=None):
    """Adam(beta_1=0.9, beta_2=0.98, epsilon=1e-9) on the warmup schedule (§5.3).

    With `training_config.accumulation_steps` K > 1, Keras's own gradient
    accumulation: K micro-batches' gradients are averaged into one update
    (each micro-batch's loss is the mean over its own target tokens, so the
    micro-batches weigh the same), `optimizer.iterations` counts updates and
    so does the schedule.
    """
    training_config = training_config or TrainingConfig()
    accumulation = training_config.accumulation_steps
    schedule = TransformerSchedule(
        hidden_dim,
        warmup_steps=training_config.warmup_steps,
        scale=training_config.learning_rate_scale,
        accumulation_steps=accumulation,
    )
    return keras.optimizers.Adam(
        learning_rate=schedule,
        beta_1=training_config.beta_1,
        beta_2=training_config.beta_2,
        epsilon=training_config.epsilon,
        gradient_accumulation_steps=accumulation if accumulation > 1 else None,
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
    build_for_replicas(model)  # a TensorFlow strategy's replicas need it (see there)
    return model


def _supported_jit_compile(jit_compile):
    """PyTorch backend: `torch.compile` (torch 2.13) fails in TorchDynamo's guard
    evaluation on Keras layers, so the torch backend trains eagerly.

    TensorFlow with several replicas (`tf.distribute`): Keras puts the whole
    replicated step in one XLA function, which cannot read the other devices'
    copies of the variables, so the step runs as a graph without XLA.
    """
    if jit_compile is True and keras.backend.backend() == "torch":
        warnings.warn(
            "jit_compile=True is not supported on the torch backend (torch.compile fails "
            "on Keras layers); training eagerly.",
            stacklevel=3,
        )
        return False
    if jit_compile and tensorflow_replicas() > 1:
        if jit_compile is True:
            warnings.warn(
                "jit_compile=True is not supported on several TensorFlow replicas (XLA "
                "cannot read the other devices' variables); training without XLA.",
                stacklevel=3,
            )
        return False
    return jit_compile
