"""Command-line flags from typed settings: one flag per dataclass field (`lora_r` <-> `--lora-r`), so a
setting is defined once and the CLI, YAML files and the Python API all take the same names."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_options(parser: argparse.ArgumentParser, cls, more: dict | None = None) -> None:
    """One flag per field (not those whose metadata says `cli: False`); `more`: {group title: [(field, type,
    help prefix)]} of flags defined elsewhere (the tasks' own options)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get("cli", True):
            add_field_flag(parser, field, hints[field.name])
    for title, fields in (more or {}).items():
        group = parser.add_argument_group(title)
        for field, hint, prefix in fields:
            add_field_flag(group, field, hint, prefix)


def add_field_flag(parser, field: dataclasses.Field, hint, prefix: str = "") -> None:
    """Booleans get --x / --no-x; defaults stay None so a YAML value is not overridden. A field whose metadata
    says `required` is a required flag."""
    # `X | None` -> X; a list stays a list (its origin), whatever its item type.
    is_optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(hint) if a is not type(None)) if is_optional else hint
    help_text = prefix + field.metadata.get("help", "")
    default = field.default if field.default is not dataclasses.MISSING else None
    if default not in (None, "") and not isinstance(default, bool):
        help_text = f"{help_text} (default {default})".strip()
    common = dict(dest=field.name, default=None, help=help_text)
    if field.metadata.get("required"):
        common["required"] = True
    if base is bool:
        parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, **common)
    elif typing.get_origin(base) is list:  # `--x a b` and `--x a --x b` alike
        parser.add_argument(flag(field.name), nargs="+", action="extend", **common)
    else:
        parser.add_argument(flag(field.name), type=base, **common)


def overrides(namespace: argparse.Namespace, cls=None) -> dict:
    """The flags that were given (None = not given): those of `cls`, or (for `build_config` to sort into the
    config and the task's options) all but the command's name and --config."""
    names = {f.name for f in dataclasses.fields(cls)} if cls is not None else None
    return {k: v for k, v in vars(namespace).items()
            if (k in names if names is not None else k not in ("command", "config")) and v is not None}
