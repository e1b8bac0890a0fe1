"""Training: the paper's optimizer (§5.3) and compilation with its loss and metrics."""

import keras

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


def compile_model(model, training_config=None, jit_compile="auto", **kwargs):
    """Compiles `model` with the paper's optimizer, smoothed loss and masked metrics.

    `jit_compile=True` compiles the train step with XLA on TensorFlow and JAX;
    the PyTorch backend then uses `torch.compile` (see the README).
    """
    training_config = training_config or TrainingConfig()
    model.compile(
        optimizer=create_optimizer(model.config.hidden_dim, training_config),
        loss=LabelSmoothedCrossEntropy(label_smoothing=training_config.label_smoothing),
        metrics=[MaskedAccuracy(), Perplexity()],
        jit_compile=jit_compile,
        **kwargs,
    )
    return model
