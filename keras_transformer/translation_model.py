"""What the models that `Translator` decodes share: the functional model and its config.

`Transformer` and `RecurrentBaseline` are functional Keras models from the
dict of int32 token ids (`encoder_token_ids` `(B, S)`, `decoder_token_ids`
`(B, T)`) to float32 logits `(B, T, V)`. Each builds its layers and then
calls `_build_graph`, which runs its own `encode` and `decode` on symbolic
inputs. Its config and dtype policy travel in `get_config`, so that a
`.keras` file rebuilds it. The step-function contract of `decoding/`
(`encode`, `initialize_cache`, `decode_step`, `reorder_cache`) is each
model's own.
"""

import keras

from keras_transformer.model_inputs import DECODER_INPUT, ENCODER_INPUT, check_model_inputs


class TranslationModel(keras.Model):
    """The base of `Transformer` and `RecurrentBaseline`; see the module docstring."""

    def __setattr__(self, name, value):
        # PyTorch backend: a Keras layer is a torch `Module`, which cannot be an
        # attribute before `Module.__init__`, and that runs only once the
        # functional graph exists. The graph tracks every layer anyway.
        if keras.backend.backend() == "torch" and not hasattr(self, "_tracker"):
            return object.__setattr__(self, name, value)
        return super().__setattr__(name, value)

    def _build_graph(self, dtype, **kwargs):
        """Makes this a functional model over `encode` and `decode`; last in `__init__`."""
        encoder_token_ids = keras.Input(shape=(None,), dtype="int32", name=ENCODER_INPUT)
        decoder_token_ids = keras.Input(shape=(None,), dtype="int32", name=DECODER_INPUT)
        encoder_output, encoder_padding_mask = self.encode(encoder_token_ids)
        logits = self.decode(decoder_token_ids, encoder_output, encoder_padding_mask)
        super().__init__(
            inputs={ENCODER_INPUT: encoder_token_ids, DECODER_INPUT: decoder_token_ids},
            outputs=logits,
            **kwargs,
        )
        # Functional's constructor drops `dtype`; the policy decides loss
        # scaling in `compile` and must reach `get_config`.
        self.dtype_policy = dtype

    def call(self, inputs, training=None, mask=None):
        check_model_inputs(inputs)
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        return {
            "config": self.config.to_dict(),
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_model(config, dtype=None):
    """The model a work directory's config describes: a `TransformerConfig` builds
    the `Transformer`, a `RecurrentConfig` the `RecurrentBaseline`."""
    from keras_transformer.config import RecurrentConfig

    if isinstance(config, RecurrentConfig):
        from keras_transformer.recurrent import build_recurrent_baseline

        return build_recurrent_baseline(config, dtype=dtype)
    from keras_transformer.model import build_transformer

    return build_transformer(config, dtype=dtype)
