"""The learning-rate schedule of paper §5.3."""

import keras
from keras import ops

from keras_transformer.checks import check_positive


@keras.saving.register_keras_serializable(package="keras_transformer")
class TransformerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """lrate = d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5) (§5.3).

    Linear warmup for `warmup_steps`, then decay with the inverse square root
    of the step; the peak, at `step == warmup_steps`, is
    `scale * (d_model * warmup_steps)^-0.5`. Steps count from 1: Keras'
    optimizer iteration 0 is the paper's step 1.

    A step is an update. An optimizer with `gradient_accumulation_steps=K`
    calls its schedule with the count of micro-batches (Keras 3.15 passes
    its raw iteration counter, not `optimizer.iterations`, which counts
    updates); with `accumulation_steps=K` the schedule divides that count by
    K, so the K micro-batches of an update share the update's rate.

    Args:
        hidden_dim: int. d_model.
        warmup_steps: int. Default 4000.
        scale: float. Multiplies the whole schedule. Default 1.0 (the paper).
        accumulation_steps: int. The optimizer's micro-batches per update.
            Default 1.
    """

    def __init__(self, hidden_dim, warmup_steps=4000, scale=1.0, accumulation_steps=1):
        check_positive(
            hidden_dim=hidden_dim, warmup_steps=warmup_steps, accumulation_steps=accumulation_steps
        )
        self.hidden_dim = hidden_dim
        self.warmup_steps = warmup_steps
        self.scale = scale
        self.accumulation_steps = accumulation_steps

    def __call__(self, step):
        if self.accumulation_steps > 1:  # micro-batches -> updates
            step = ops.floor_divide(step, self.accumulation_steps)
        step = ops.cast(step, "float32") + 1.0
        warmup = float(self.warmup_steps)
        rate = ops.minimum(ops.rsqrt(step), step * warmup**-1.5)
        return self.scale * float(self.hidden_dim) ** -0.5 * rate

    def get_config(self):
        return {
            "hidden_dim": self.hidden_dim,
            "warmup_steps": self.warmup_steps,
            "scale": self.scale,
            "accumulation_steps": self.accumulation_steps,
        }
