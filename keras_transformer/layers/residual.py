"""The residual connection around every sublayer (paper §3.1, §5.4)."""


def residual_connection(inputs, sublayer, layer_norm, dropout, normalize_first, training):
    """Wraps `sublayer` in dropout, a residual add and layer normalization.

    Post-LN, the paper's form (§3.1, with dropout on the sublayer output before
    the add, §5.4): `LayerNorm(x + Dropout(Sublayer(x)))`.
    Pre-LN (`normalize_first=True`): `x + Dropout(Sublayer(LayerNorm(x)))`.

    `sublayer` maps `(B, T, D)` to `(B, T, D)` or to a tuple whose first item
    is that; the rest (caches, attention scores) is returned beside the
    output as a tuple.
    """
    outputs = sublayer(layer_norm(inputs) if normalize_first else inputs)
    extras = ()
    if isinstance(outputs, tuple):
        outputs, extras = outputs[0], outputs[1:]
    outputs = inputs + dropout(outputs, training=training)
    if not normalize_first:
        outputs = layer_norm(outputs)
    return outputs, extras
