"""The machinery of the configuration records (`config.py`): a JSON round
trip, `key=value` overrides converted to each field's type, and validation
helpers that name the record, the field and the value.
"""

import dataclasses
import json
import typing

from keras_transformer.checks import check_fraction, check_positive_integer


class Record:
    """JSON round trip, validation helpers and `key=value` overrides."""

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(
                f"Unknown {cls.__name__} field(s): {unknown}. Known fields: {sorted(names)}"
            )
        return cls(**values)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))

    def replace(self, **changes):
        """Returns a copy with `changes` applied (validated like a new record)."""
        return self.from_dict({**self.to_dict(), **changes})

    def override(self, assignments):
        """Applies `["key=value", ...]` strings, converting each to its field's type.

        Unknown keys and values that do not convert raise a `ValueError` that
        names the key and the value.
        """
        fields = {field.name: field for field in dataclasses.fields(self)}
        types = typing.get_type_hints(type(self))
        changes = {}
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"Expected key=value, received {assignment!r}")
            if key not in fields:
                raise ValueError(
                    f"Unknown {type(self).__name__} key {key!r} in {assignment!r}. "
                    f"Known keys: {sorted(fields)}"
                )
            changes[key] = _convert(key, text.strip(), types[key])
        return self.replace(**changes)

    def _check(self, condition, message):
        if not condition:
            raise ValueError(f"{type(self).__name__}: {message}")

    def _check_fields(self, check, *names):
        """`check` (from `keras_transformer.checks`) on the named fields."""
        try:
            check(**{name: getattr(self, name) for name in names})
        except ValueError as error:
            raise ValueError(f"{type(self).__name__}: {error}") from None

    def _check_positive(self, *names):
        self._check_fields(check_positive_integer, *names)

    def _check_fraction(self, *names):
        self._check_fields(check_fraction, *names)


def _convert(key, text, kind):
    """`text` as a value of type `kind`; for `X | None`, "none" or "null" is None."""
    optional = _optional(kind)
    if optional is not None:
        if text.lower() in ("none", "null"):
            return None
        kind = optional
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        return text
    except ValueError:
        expected = kind.__name__ + (" or None" if optional is not None else "")
        raise ValueError(
            f"{key} expects a value of type {expected}. Received: {key}={text!r}"
        ) from None


def _optional(kind):
    """X for a type hint `X | None` (or `Optional[X]`); None for any other hint."""
    arguments = typing.get_args(kind)
    if len(arguments) == 2 and type(None) in arguments:
        return next(argument for argument in arguments if argument is not type(None))
    return None
