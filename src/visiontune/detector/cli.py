"""`visiontune detector train|predict|eval|export`: the dedicated detector's command line."""

from __future__ import annotations

import argparse

from ..cli_options import add_dataclass_options, overrides

COMMANDS = {"train": "train neck + head (+ LoRA) on a frozen pretrained ViT",
            "predict": "detect objects in images, files, URLs or folders",
            "eval": "COCO mAP, duplicate rate and overlays on a labelled dataset",
            "export": "ONNX (dynamic batch), checked against PyTorch; --fp16 or --int8"}


def _settings_classes() -> dict:
    from .config import DetectorEvalSettings, DetectorExportSettings, DetectorPredictSettings, DetectorTrainSettings

    return {"train": DetectorTrainSettings, "predict": DetectorPredictSettings, "eval": DetectorEvalSettings,
            "export": DetectorExportSettings}


def add_detector_commands(commands) -> None:
    detector = commands.add_parser("detector", help="a small dedicated detector: frozen ViT, simple pyramid, NMS-free")
    actions = detector.add_subparsers(dest="detector_command", required=True)
    for name, cls in _settings_classes().items():
        add_dataclass_options(actions.add_parser(name, help=COMMANDS[name]), cls)


def run_detector_command(args: argparse.Namespace) -> None:
    command = args.detector_command
    cls = _settings_classes()[command]
    settings = cls(**overrides(args, cls))
    if command == "train":
        from .train import train_detector

        train_detector(settings)
    else:
        from . import commands

        {"predict": commands.predict, "eval": commands.evaluate, "export": commands.export}[command](settings)
