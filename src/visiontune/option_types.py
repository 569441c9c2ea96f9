"""Option values converted to their declared types, in one place for CLI flags, YAML keys and Python keywords.

YAML reads `1e-4` as a string and a hand-written config may say `max_steps: "20"`; both are converted here,
when the config is built. A value that cannot be converted is an error naming the option, the value and
the expected type, before any model loads.
"""

from __future__ import annotations

import dataclasses
import types
import typing

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


class OptionTypeError(ValueError):
    pass


def _fail(key: str, value, expected: str) -> OptionTypeError:
    return OptionTypeError(f"option {key}: {value!r} is not {expected}")


def _strip_optional(hint) -> tuple[typing.Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def convert(key: str, value, hint):
    """`value` as the type `hint` declares (int, float, bool, str, list[str], dict, or one of them | None)."""
    base, optional = _strip_optional(hint)
    if value is None:
        if optional:
            return None
        raise _fail(key, value, f"optional: give a value of type {getattr(base, '__name__', base)}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _fail(key, value, "true or false")
    if base is int:
        if isinstance(value, bool):
            raise _fail(key, value, "an integer")
        if isinstance(value, int):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _fail(key, value, "an integer") from None
        if not number.is_integer():
            raise _fail(key, value, "an integer")
        return int(number)
    if base is float:
        if isinstance(value, bool):
            raise _fail(key, value, "a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise _fail(key, value, "a number (e.g. 1e-4)") from None
    if base is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise _fail(key, value, "a string")
    if typing.get_origin(base) is list:
        if isinstance(value, str):  # `class_names: cat, dog` in YAML
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple)):
            return [convert(f"{key}[{index}]", item, typing.get_args(base)[0]) for index, item in enumerate(value)]
        raise _fail(key, value, "a list")
    if base is dict:
        if isinstance(value, dict):
            return value
        raise _fail(key, value, "a mapping of name: value")
    return value


def convert_fields(instance) -> None:
    """Convert every field of a dataclass instance to its declared type, in place."""
    hints = typing.get_type_hints(type(instance))
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        converted = convert(field.name, value, hints[field.name])
        if converted is not value:
            setattr(instance, field.name, converted)
