"""The model's two inputs: their names, which the input pipeline and the model
both read, and the check of an input dict.

A leaf of the package: it imports nothing of it, so that the data side need
not import the model.
"""

import keras

ENCODER_INPUT = "encoder_token_ids"
DECODER_INPUT = "decoder_token_ids"


def check_model_inputs(inputs):
    """Raises a ValueError naming what was expected unless `inputs` is a dict of
    `(B, S)` and `(B, T)` integer token ids under the two names."""
    if not isinstance(inputs, dict) or set(inputs) != {ENCODER_INPUT, DECODER_INPUT}:
        received = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(
            f"Transformer expects a dict with keys {[ENCODER_INPUT, DECODER_INPUT]}. "
            f"Received: {received}"
        )
    for name in (ENCODER_INPUT, DECODER_INPUT):
        tensor = inputs[name]
        dtype = keras.backend.standardize_dtype(tensor.dtype)
        if "int" not in dtype or len(tensor.shape) != 2:
            raise ValueError(
                f"{name} must be integer token ids of shape (batch, length). "
                f"Received: dtype={dtype}, shape={tuple(tensor.shape)}"
            )
