"""Data-parallel training over the devices of one process.

Each of N devices (replicas) holds the weights and runs the training step on
its share of the batch; the gradients are combined before each update, so N
devices train like one device on the N-times batch (the paper trained on 8
GPUs, §5.2). A batch holds `max_tokens` per replica (see `data.pipeline`),
so it always divides evenly.

Each backend's own distribution engine does the work, which is why this
module, unlike the rest of the library, is not backend-neutral:

- JAX: `keras.distribution.DataParallel`, Keras's engine (one program over a
  device mesh);
- TensorFlow: `tf.distribute.MirroredStrategy` (a replica of the step per
  device, the gradients summed; the loss divides by the whole batch's token
  count, see `losses.py`, so the sum is the batch's mean);
- PyTorch: Keras's torch backend has no single-process multi-device
  training (multi-device PyTorch is one process per device with
  `torch.distributed`, not built yet), so only one device.
"""

import contextlib
import functools

import keras

from keras_transformer.checks import check_positive_integer
from keras_transformer.model_inputs import DECODER_INPUT, ENCODER_INPUT
from keras_transformer.tokenization import EOS_ID

# Why PyTorch refuses N > 1 devices, and what to use instead.
TORCH_REFUSAL = (
    "the torch backend trains on one device per process: Keras's torch backend has no "
    "single-process multi-device training, and one process per device (torch.distributed) "
    "is not supported yet. Use --backend jax or --backend tensorflow for several devices, "
    "or --devices 1"
)


def local_devices():
    """This process's devices of the kind training would use: its accelerators, else its CPUs.

    Returns:
        list of str: device names as the backend's engine takes them.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return keras.distribution.list_devices()  # GPUs or TPUs if any, else CPUs
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return [device.name for device in gpus or tf.config.list_logical_devices("CPU")]
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{index}" for index in range(count)] or ["cpu"]


def default_devices():
    """Every accelerator of this process where there are some; 1 on a CPU and on PyTorch."""
    if keras.backend.backend() == "torch":
        return 1
    found = local_devices()
    return len(found) if "cpu" not in found[0].lower() else 1


def resolve_devices(devices=None):
    """The replica count to train on: `devices`, or `default_devices()` when None.

    Raises:
        ValueError: `devices` is not a positive integer, exceeds the devices
            this process has (naming how many it found), or is above 1 on the
            torch backend.
    """
    if devices is None:
        return default_devices()
    check_positive_integer(devices=devices)
    if devices == 1:
        return 1
    if keras.backend.backend() == "torch":
        raise ValueError(f"--devices {devices}: {TORCH_REFUSAL}")
    found = local_devices()
    if devices > len(found):
        hint = ""
        if "cpu" in found[0].lower():
            hint = (
                ". A CPU counts as one device; for tests, JAX splits it with "
                "XLA_FLAGS=--xla_force_host_platform_device_count=N"
            )
        raise ValueError(
            f"--devices {devices}: this process found {len(found)} device(s) "
            f"({', '.join(found)}){hint}"
        )
    return devices


@contextlib.contextmanager
def data_parallel(devices):
    """Within this block, models built, compiled and fit train on the first `devices` devices.

    Build, compile, load weights and `fit` inside the block: the engines
    place variables when they are created. With `devices=1` the block
    changes nothing. Call `resolve_devices` first to check the count.

    Yields:
        int: the replica count.
    """
    if devices == 1:
        yield 1
        return
    chosen = local_devices()[:devices]
    backend = keras.backend.backend()
    if backend == "jax":
        with keras.distribution.DataParallel(devices=chosen).scope():
            yield devices
    elif backend == "tensorflow":
        with _mirrored_strategy(tuple(chosen)).scope():
            yield devices
    else:
        raise ValueError(f"devices={devices}: {TORCH_REFUSAL}")


@functools.cache
def _mirrored_strategy(devices):
    """One `tf.distribute.MirroredStrategy` per device set and process: a second
    one over the same devices makes collective ops whose keys clash with the
    first's (TensorFlow 2.21 fails with "Shape mismatch in the collective")."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(list(devices))


def tensorflow_replicas():
    """The replica count of the TensorFlow strategy in scope (1 without one, or elsewhere)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync if tf.distribute.has_strategy() else 1


def build_for_replicas(model):
    """Builds a compiled model's loss, metrics and optimizer now, under a TensorFlow
    strategy of several replicas (elsewhere: nothing to do).

    Keras 3.15's TensorFlow `fit` under `tf.distribute` builds them from its
    first batch averaged over the replicas (`strategy.reduce("MEAN")`), which
    turns integer token ids into float64, and the model refuses float ids.
    Built here from integer ids (one batch of two tokens, through the public
    `compute_loss` and `compute_metrics`; `fit` resets the metrics it fed),
    they leave `fit` nothing to build.
    """
    if tensorflow_replicas() < 2:
        return
    ids = keras.ops.full((2, 2), EOS_ID, dtype="int32")  # (B, S), (B, T) and the (B, T) labels
    inputs = {ENCODER_INPUT: ids, DECODER_INPUT: ids}
    logits = model(inputs)
    model.compute_loss(inputs, ids, logits)
    model.compute_metrics(inputs, ids, logits)
    model.optimizer.build(model.trainable_variables)
    model.reset_metrics()
