"""Command-line flags from typed settings: one flag per dataclass field (`lora_r` <-> `--lora-r`), so a
setting is defined once and the CLI, YAML files and the Python API all take the same names."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_options(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field; booleans get --x / --no-x; defaults stay None so a YAML value is not overridden.
    A field whose metadata says `required` is a required flag."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        # `X | None` -> X; a list stays a list (its origin), whatever its item type.
        is_optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        base = next(a for a in typing.get_args(hint) if a is not type(None)) if is_optional else hint
        help_text = field.metadata.get("help", "")
        default = field.default if field.default is not dataclasses.MISSING else None
        if default not in (None, "") and not isinstance(default, bool):
            help_text = f"{help_text} (default {default})".strip()
        common = dict(dest=field.name, default=None, help=help_text)
        if field.metadata.get("required"):
            common["required"] = True
        if base is bool:
            parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, **common)
        elif typing.get_origin(base) is list:
            parser.add_argument(flag(field.name), nargs="+", **common)
        else:
            parser.add_argument(flag(field.name), type=base, **common)


def overrides(namespace: argparse.Namespace, cls) -> dict:
    """The flags of `cls` that were given (None = not given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(namespace).items() if k in names and v is not None}
