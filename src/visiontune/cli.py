"""`visiontune` command line: parse, build a config, call the Python API. Nothing else happens here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing

from .config import EvalConfig, PredictConfig, TrainConfig, build_config


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_options(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field; booleans get --x / --no-x; defaults stay None so a YAML value is not overridden."""
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
        if base is bool:
            parser.add_argument(_flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        elif typing.get_origin(base) is list:
            parser.add_argument(_flag(field.name), dest=field.name, nargs="+", default=None, help=help_text)
        else:
            parser.add_argument(_flag(field.name), dest=field.name, type=base, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visiontune", description="Fine-tune, evaluate and ship small VLMs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, cls, about in (("train", TrainConfig, "fine-tune a model on a task"),
                             ("predict", PredictConfig, "run a model on images, files, URLs or folders"),
                             ("eval", EvalConfig, "score a model (generates) or a predictions file")):
        sub = commands.add_parser(name, help=about)
        sub.add_argument("--config", help="YAML file with any option; flags override it")
        add_dataclass_options(sub, cls)
    merge = commands.add_parser("merge", help="fold a LoRA adapter into its base model and verify it")
    merge.add_argument("--adapter", required=True)
    merge.add_argument("--output", required=True)
    merge.add_argument("--tolerance", type=float, default=1e-3, help="max |logit difference| accepted")
    tiny = commands.add_parser("tiny-model", help="write a tiny random model of a real family (for tests and CI)")
    tiny.add_argument("--family", required=True, help="smolvlm | qwen2-vl | llava")
    tiny.add_argument("--output", required=True)
    tiny.add_argument("--seed", type=int, default=0)
    quick = commands.add_parser("quickstart", help="the offline main job: a real fine-tune + evaluation")
    quick.add_argument("--output", default="runs/quickstart")
    return parser


def _overrides(namespace: argparse.Namespace, cls) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(namespace).items() if k in names and v is not None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            from .training.run import train

            train(build_config(TrainConfig, _overrides(args, TrainConfig), args.config))
        elif args.command == "predict":
            from .predict import predict

            rows = predict(build_config(PredictConfig, _overrides(args, PredictConfig), args.config))
            if not args.output:
                for row in rows:
                    print(json.dumps(row, ensure_ascii=False))
        elif args.command == "eval":
            from .evaluate import evaluate

            evaluate(build_config(EvalConfig, _overrides(args, EvalConfig), args.config))
        elif args.command == "merge":
            from .export.merge import merge

            merge(args.adapter, args.output, tolerance=args.tolerance)
        elif args.command == "tiny-model":
            from .models.tiny import build_tiny_model

            print(f"wrote {build_tiny_model(args.family, args.output, seed=args.seed)}")
        elif args.command == "quickstart":
            from .quickstart import quickstart

            quickstart(args.output)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        # Our errors already name the input and the fix; a traceback would bury that.
        print(f"visiontune {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
