"""What the encoder and decoder layers share: the dtype-policy check (the
other argument checks are in `keras_transformer.checks`), the residual
connection around every sublayer (paper §3.1, §5.4) and the base class that
builds their sublayers."""

import keras

from keras_transformer.checks import check_fraction, check_heads, check_key_dim, check_positive
from keras_transformer.layers.initializers import clone_initializer
from keras_transformer.layers.normalization import (
    check_normalization,
    make_normalization,
    norm_name,
    normalize,
)


def check_dtype_policy(dtype):
    """`dtype` (a policy name, dict or `keras.DTypePolicy`; None: the global
    policy) as a float `keras.DTypePolicy`, or a ValueError naming the value."""
    try:
        policy = keras.dtype_policies.get(dtype)
    except (ValueError, TypeError):
        policy = None
    floating = policy is not None and all(
        "float" in keras.backend.standardize_dtype(d)
        for d in (policy.compute_dtype, policy.variable_dtype)
    )
    if not floating or policy.quantization_mode is not None:
        raise ValueError(
            "dtype must be a float Keras dtype policy such as 'float32', 'mixed_bfloat16' or "
            f"'mixed_float16', or a keras.DTypePolicy. Received: dtype={dtype!r}"
        )
    return policy


def residual_connection(inputs, sublayer, norm, dropout, normalize_first, training):
    """Wraps `sublayer` in dropout, a residual add and normalization.

    Post-LN, the paper's form (§3.1, with dropout on the sublayer output before
    the add, §5.4): `LayerNorm(x + Dropout(Sublayer(x)))`.
    Pre-LN (`normalize_first=True`): `x + Dropout(Sublayer(LayerNorm(x)))`.
    `norm` maps `(B, T, D)` to `(B, T, D)`: the layer norm, or a batch norm.

    `sublayer` maps `(B, T, D)` to `(B, T, D)` or to a tuple whose first item
    is that; the rest (caches, attention scores) is returned beside the
    output as a tuple.
    """
    outputs = sublayer(norm(inputs) if normalize_first else inputs)
    extras = ()
    if isinstance(outputs, tuple):
        outputs, extras = outputs[0], outputs[1:]
    outputs = inputs + dropout(outputs, training=training)
    if not normalize_first:
        outputs = norm(outputs)
    return outputs, extras


class TransformerLayer(keras.layers.Layer):
    """The base of `TransformerEncoderLayer` and `TransformerDecoderLayer`.

    Holds their common arguments (documented on those classes), checks them,
    makes their sublayers, each built at once and with its own initializer,
    and wraps a sublayer in its residual block: the block called `name` uses
    the attributes `{name}_layer_norm` (`{name}_batch_norm` with either batch
    norm, see `normalization.py`) and `{name}_dropout`.
    """

    def __init__(
        self,
        hidden_dim=512,
        intermediate_dim=2048,
        num_heads=8,
        dropout=0.1,
        attention_dropout=0.0,
        normalize_first=False,
        layer_norm_epsilon=1e-6,
        normalization="layer",
        activation="relu",
        kernel_initializer="glorot_uniform",
        key_dim=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive(hidden_dim=hidden_dim, intermediate_dim=intermediate_dim)
        check_heads(hidden_dim, num_heads)
        check_fraction(dropout=dropout, attention_dropout=attention_dropout)
        check_normalization(normalization)
        check_key_dim(key_dim)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.normalize_first = normalize_first
        self.layer_norm_epsilon = layer_norm_epsilon
        self.normalization = normalization
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.key_dim = key_dim

    def _built(self, layer):
        layer.build((None, None, self.hidden_dim))
        return layer

    def _sublayer(self, layer_class, name, **kwargs):
        """A built `layer_class` sublayer under this layer's policy, with its own initializer."""
        return self._built(
            layer_class(
                **kwargs,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=name,
            )
        )

    def _attention(self, name):
        # Imported here, not above: attention.py reads this module's checks.
        from keras_transformer.layers.attention import MultiHeadAttention

        return self._sublayer(
            MultiHeadAttention,
            name,
            num_heads=self.num_heads,
            hidden_dim=self.hidden_dim,
            key_dim=self.key_dim,
            dropout=self.attention_dropout,
        )

    def _feedforward(self):
        from keras_transformer.layers.feedforward import PositionwiseFeedForward

        return self._sublayer(
            PositionwiseFeedForward,
            "feedforward",
            hidden_dim=self.hidden_dim,
            intermediate_dim=self.intermediate_dim,
            activation=self.activation,
        )

    def _add_norm(self, block):
        """Creates residual block `block`'s norm, under `norm_name`'s name and attribute."""
        name = norm_name(block, self.normalization)
        norm = make_normalization(
            self.normalization, self.layer_norm_epsilon, self.dtype_policy, name
        )
        setattr(self, name, self._built(norm))

    def _dropout(self, name):
        return keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=name)

    def _residual(self, inputs, sublayer, name, training, padding_mask=None):
        """Block `name` around `sublayer`; `padding_mask` `(B, T)` is for a masked batch norm."""
        norm = getattr(self, norm_name(name, self.normalization))
        return residual_connection(
            inputs,
            sublayer,
            lambda x: normalize(norm, x, padding_mask, training),
            getattr(self, f"{name}_dropout"),
            self.normalize_first,
            training,
        )

    def compute_output_shape(self, input_shape, *args, **kwargs):
        return input_shape

    def get_config(self):
        names = (
            "hidden_dim",
            "intermediate_dim",
            "num_heads",
            "dropout",
            "attention_dropout",
            "normalize_first",
            "layer_norm_epsilon",
            "normalization",
            "key_dim",
        )
        return {
            **super().get_config(),
            **{name: getattr(self, name) for name in names},
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
