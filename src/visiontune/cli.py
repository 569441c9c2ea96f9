"""`visiontune` command line: parse, build a config, call the Python API. Nothing else happens here."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys

from . import serve_defaults
from .cli_options import add_dataclass_options, overrides
from .config import EvalConfig, PredictConfig, TrainConfig, build_config, option_kind

TORCH_EXTRA = {"torch", "transformers", "peft", "accelerate", "datasets", "safetensors", "tensorboard"}


def task_flags(kind: str) -> list:
    """Every registered task's own options of `kind` (train|inference), each flag's help naming its task(s)."""
    from .tasks import option_fields

    return [(field, hint, " / ".join(tasks) + ": ") for _, (tasks, field, hint) in sorted(option_fields(kind).items())]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visiontune", description="Fine-tune, evaluate and ship small VLMs.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, cls, about in (("train", TrainConfig, "fine-tune a model on a task"),
                             ("predict", PredictConfig, "run a model on images, files, URLs or folders"),
                             ("eval", EvalConfig, "score a model (generates) or a predictions file")):
        sub = commands.add_parser(name, help=about)
        sub.add_argument("--config", help="YAML file with any option; flags override it")
        add_dataclass_options(sub, cls, {"task options": task_flags(option_kind(cls))})
    merge = commands.add_parser("merge", help="fold a LoRA adapter into its base model and verify it")
    merge.add_argument("--adapter", required=True)
    merge.add_argument("--output", required=True)
    merge.add_argument("--tolerance", type=float, default=1e-3, help="max |logit difference| accepted")
    export = commands.add_parser("export", help="a model or run folder as ONNX graphs for the torch-free runtime and "
                                                "transformers.js, checked against PyTorch")
    export.add_argument("--model", required=True, help="a model folder or run folder (LoRA runs are merged first)")
    export.add_argument("--format", default="onnx", choices=["onnx", "gguf"],
                        help="onnx (torch-free runtime, transformers.js) or gguf (llama.cpp, Ollama, LM Studio: "
                             "SmolVLM / Idefics3 family)")
    export.add_argument("--output", required=True)
    export.add_argument("--quantize", nargs="*", default=[],
                        choices=["int8", "q4", "fp16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"],
                        help="also write these variants (onnx: int8 dynamic int8 weights, q4 4-bit MatMul weights, "
                             "fp16; gguf: q8_0, and with llama-cpp-python q4_0 q4_k_m q5_k_m q6_k, beside f16)")
    export.add_argument("--eval-data", help="also report the task metric of PyTorch and of every variant on this data")
    export.add_argument("--eval-split", help="split of --eval-data")
    export.add_argument("--max-eval-samples", type=int, default=200)
    served = commands.add_parser("serve", help="an HTTP API (OpenAI-compatible) and a web page for a model or run")
    served.add_argument("--model", required=True, help="a run or model folder, an ONNX export, or a dedicated "
                                                        "detector (its folder or .onnx file)")
    served.add_argument("--host", default=serve_defaults.HOST, help="default: loopback only")
    served.add_argument("--port", type=int, default=serve_defaults.PORT)
    served.add_argument("--max-batch", type=int, default=serve_defaults.MAX_BATCH, help="requests run together at most")
    served.add_argument("--max-wait-ms", type=float, default=serve_defaults.MAX_WAIT_MS,
                        help="how long a request waits for company")
    served.add_argument("--api-key", default=os.environ.get("VISIONTUNE_API_KEY"),
                        help="required on /v1/* and /metrics (default: $VISIONTUNE_API_KEY; none: open)")
    served.add_argument("--allow-urls", action="store_true", help="fetch http(s) image URLs (off by default)")
    served.add_argument("--allow-private-urls", action="store_true",
                        help="with --allow-urls, also loopback, private and link-local addresses")
    served.add_argument("--max-body-mb", type=float, default=serve_defaults.MAX_BODY_MB,
                        help="request body and image size limit")
    served.add_argument("--max-pixels", type=int, default=serve_defaults.MAX_PIXELS,
                        help="decoded pixels per image at most")
    served.add_argument("--device", default="auto", help="dedicated detector: auto | cpu | cuda")
    served.add_argument("--adapter", action="append", default=[], metavar="NAME=RUN",
                        help="a LoRA run over --model, served by name (repeat for more; requests pick one with "
                             "'model'; 'base' is the base model alone)")
    tiny = commands.add_parser("tiny-model", help="write a tiny random model of a real family (for tests and CI)")
    tiny.add_argument("--family", required=True, help="smolvlm | qwen2-vl | llava | composed | smolvlm-256m-architecture "
                                                     "(full size, random weights: for speed benchmarks)")
    tiny.add_argument("--output", required=True)
    tiny.add_argument("--seed", type=int, default=0)
    compose = commands.add_parser("compose", help="a new VLM from a pretrained vision encoder + a causal LM + a projector")
    compose.add_argument("--vision", required=True, help="hub id, folder, or zoo model (dinov2-small)")
    compose.add_argument("--lm", required=True, help="hub id, folder, .gguf file, or zoo model (smollm2-135m-instruct)")
    compose.add_argument("--projector", default="swiglu", help="swiglu | mlp | linear (default swiglu)")
    compose.add_argument("--projector-hidden", type=int, default=None, help="projector width (default: its input width)")
    compose.add_argument("--pixel-shuffle", type=int, default=2, help="fold s x s patches into one token (default 2)")
    compose.add_argument("--image-size", type=int, default=224, help="square input side in pixels (default 224)")
    compose.add_argument("--summary-token", action=argparse.BooleanOptionalAction, default=True,
                         help="one more image token from the encoder's [CLS, mean patch] (default on)")
    compose.add_argument("--output-norm", action=argparse.BooleanOptionalAction, default=True,
                         help="RMS-normalise image tokens at the LM's text-embedding scale (default on)")
    compose.add_argument("--grid-positions", action=argparse.BooleanOptionalAction, default=True,
                         help="add a learned row + column embedding to each image token, so the LM reads where "
                              "it lies (default on)")
    compose.add_argument("--seed", type=int, default=0)
    compose.add_argument("--output", required=True)
    zoo = commands.add_parser("zoo", help="the offline zoo: weights and datasets shipped inside packages")
    zoo_commands = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_commands.add_parser("list", help="show the zoo and what is installed / prepared")
    prepare = zoo_commands.add_parser("prepare", help="convert zoo models into the cache (once)")
    prepare.add_argument("names", nargs="*", help="zoo models (default: all)")
    prepare.add_argument("--force", action="store_true", help="convert again even if prepared")
    canvases = zoo_commands.add_parser("canvases", help="detection + caption data: Fashion-MNIST items on canvases")
    canvases.add_argument("--output", required=True)
    canvases.add_argument("--count", type=int, default=256)
    canvases.add_argument("--size", type=int, default=112, help="canvas side in pixels")
    canvases.add_argument("--max-objects", type=int, default=4)
    canvases.add_argument("--split", default="train", help="which Fashion-MNIST split the items come from")
    canvases.add_argument("--seed", type=int, default=0)
    canvases.add_argument("--background", choices=("black", "textured"), default="black",
                          help="textured: random grey textures, items light or dark over them (a harder set)")
    from .detector.cli import add_detector_commands

    add_detector_commands(commands)
    quick = commands.add_parser("quickstart", help="the offline main job: compose a VLM from the zoo, align, "
                                                   "fine-tune and evaluate on Fashion-MNIST")
    quick.add_argument("--output", default="runs/quickstart")
    quick.add_argument("--full", action="store_true", help="all of Fashion-MNIST at 224 px (for a GPU)")
    quick.add_argument("--tiny", action="store_true", help="the 2-minute spine check on a tiny random model instead")
    _remember_leaf_parsers(parser)
    return parser


def _remember_leaf_parsers(parser: argparse.ArgumentParser) -> None:
    """Each command's parser records itself, so an unknown flag is reported with that command's usage."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                sub.set_defaults(leaf_parser=sub)
                _remember_leaf_parsers(sub)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    leaf = vars(args).pop("leaf_parser", parser)
    if unknown:
        flags = [word.split("=")[0] for word in unknown if word.startswith("--")]
        near = [close[0] for word in flags if (close := difflib.get_close_matches(word, leaf._option_string_actions, 1))]
        leaf.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" (did you mean {', '.join(near)}?)" if near else ""))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "train":
            from .api.train import train

            train(build_config(TrainConfig, overrides(args), args.config))
        elif args.command == "predict":
            from .api.predict import predict

            rows = predict(build_config(PredictConfig, overrides(args), args.config))
            if not args.output:
                for row in rows:
                    print(json.dumps(row, ensure_ascii=False))
        elif args.command == "eval":
            from .api.evaluate import evaluate

            evaluate(build_config(EvalConfig, overrides(args), args.config))
        elif args.command == "merge":
            from .export.merge import merge

            merge(args.adapter, args.output, tolerance=args.tolerance)
        elif args.command == "export" and args.format == "gguf":
            from .export.gguf_export import export_gguf

            export_gguf(args.model, args.output, quantize=args.quantize, eval_data=args.eval_data,
                        eval_split=args.eval_split, max_eval_samples=args.max_eval_samples)
        elif args.command == "export":
            from .export.onnx_export import export_onnx

            export_onnx(args.model, args.output, quantize=args.quantize, eval_data=args.eval_data,
                        eval_split=args.eval_split, max_eval_samples=args.max_eval_samples)
        elif args.command == "serve":
            from .api.predict import named_adapters
            from .serve import serve

            serve(args.model, host=args.host, port=args.port, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                  api_key=args.api_key, allow_urls=args.allow_urls, allow_private_urls=args.allow_private_urls,
                  max_body_mb=args.max_body_mb, max_pixels=args.max_pixels, device=args.device,
                  adapters=named_adapters(args.adapter))
        elif args.command == "tiny-model":
            from .models.tiny import build_tiny_model

            print(f"wrote {build_tiny_model(args.family, args.output, seed=args.seed)}")
        elif args.command == "compose":
            from .models.compose.build import compose

            compose(args.vision, args.lm, args.output, projector=args.projector, pixel_shuffle=args.pixel_shuffle,
                    image_size=args.image_size, projector_hidden=args.projector_hidden,
                    summary_token=args.summary_token, output_norm=args.output_norm,
                    grid_positions=args.grid_positions, seed=args.seed)
        elif args.command == "zoo":
            _zoo(args)
        elif args.command == "detector":
            from .detector.cli import run_detector_command

            run_detector_command(args)
        elif args.command == "quickstart":
            if args.tiny:
                from .quickstart_tiny import tiny_quickstart

                tiny_quickstart(args.output)
            else:
                from .quickstart import quickstart

                quickstart(args.output, full=args.full)
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        # Our errors already name the input and the fix; a traceback would bury that.
        print(f"visiontune {args.command}: error: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in TORCH_EXTRA:
            raise
        print(f"visiontune {args.command}: error: this needs {error.name}, which is not installed here. PyTorch "
              f"models need the torch extra: install the torch build you want first (CPU or CUDA, pytorch.org), "
              f"then pip install 'visiontune[torch]'. ONNX exports run without it "
              f"(predict / eval / serve --model EXPORT/onnx).", file=sys.stderr)
        return 2
    return 0


def _zoo(args) -> None:
    if args.zoo_command == "list":
        from .zoo.prepare import zoo_status

        for row in zoo_status():
            state = "prepared" if row["prepared"] else ("available" if row["available"] else "missing")
            print(f"{row['name']:24} {row['type']:8} {state:10} {row['description']}\n{'':44}{row['path'] or row['source']}")
    elif args.zoo_command == "prepare":
        from .zoo.prepare import prepare_model
        from .zoo.registry import MODELS

        unknown = [name for name in args.names if name not in MODELS]
        if unknown:
            raise ValueError(f"unknown zoo model(s) {unknown}; choose from {', '.join(MODELS)}")
        for name in args.names or list(MODELS):
            prepare_model(name, force=args.force)
    elif args.zoo_command == "canvases":
        from .zoo.canvases import write_canvases

        paths = write_canvases(args.output, count=args.count, seed=args.seed, size=args.size,
                               objects=(1, args.max_objects), split=args.split, background=args.background)
        print(f"wrote {args.count} canvases: {paths['instances']} (detect), {paths['captions']} (caption)")


if __name__ == "__main__":
    sys.exit(main())
