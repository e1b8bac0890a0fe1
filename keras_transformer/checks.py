"""The argument checks every part shares: configs, layers, schedules.

Each raises a ValueError that names the argument and quotes the value it
received. Imports neither Keras nor the rest of the package, so that the
configs use it before Keras loads.
"""

import numbers


def received(values):
    """`Received: a=1, b=0`: the values a check quotes."""
    return "Received: " + ", ".join(f"{name}={value!r}" for name, value in values.items())


def check_positive(**values):
    """Raises a ValueError quoting the values unless each one is > 0."""
    if not all(value > 0 for value in values.values()):
        raise ValueError(f"{' and '.join(values)} must be positive. {received(values)}")


def check_positive_integer(**values):
    """Raises a ValueError quoting the value unless each one is an integer (not a bool) > 0."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise ValueError(f"{name} must be a positive integer. {received({name: value})}")


def check_fraction(**values):
    """Raises a ValueError quoting the value unless each one is in [0, 1) (a dropout rate)."""
    for name, value in values.items():
        if not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1). {received({name: value})}")


def check_heads(hidden_dim, num_heads):
    """Raises a ValueError quoting both unless `num_heads` is positive and divides `hidden_dim`."""
    if num_heads <= 0 or hidden_dim % num_heads:
        raise ValueError(
            "num_heads must be positive and divide hidden_dim. "
            + received(dict(hidden_dim=hidden_dim, num_heads=num_heads))
        )


def check_key_dim(key_dim):
    """Raises a ValueError quoting the value unless `key_dim` is None or a positive integer."""
    if key_dim is not None:
        check_positive_integer(key_dim=key_dim)


def check_choice(allowed, **values):
    """Raises a ValueError naming the allowed values unless each value is one of `allowed`."""
    for name, value in values.items():
        if value not in allowed:
            raise ValueError(
                f"{name} must be one of {', '.join(map(repr, allowed))}. {received({name: value})}"
            )
