"""`visiontune quickstart --tiny`: the whole spine in ~2 minutes on a tiny random model (no zoo needed).

A tiny SmolVLM-family model built from config, LoRA-tuned on a generated caption set (coloured shapes),
then evaluated with COCO caption metrics on held-out images, and merged; then the same model learns to
classify the shapes' colours (six classes, image folders), calibrated on a validation split and scored on
a test split in both prediction modes. The real main job (`quickstart.py`) uses the offline zoo.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import EvalConfig, TrainConfig
from .data.builtin.shapes import write_shape_classes, write_shapes_dataset


def tiny_quickstart(output: str = "runs/quickstart-tiny", log=print) -> dict:
    from .api.evaluate import evaluate
    from .api.train import train
    from .export.merge import merge
    from .models.tiny import build_tiny_model

    root = Path(output)
    data = write_shapes_dataset(root / "data", count=48, seed=0)
    # Hold out the last 12 images: their captions are shape/colour/background combinations the model
    # must get right from pixels, not memorise.
    rows = data["jsonl"].read_text().splitlines()
    (root / "data" / "train.jsonl").write_text("\n".join(rows[:36]) + "\n")
    (root / "data" / "val.jsonl").write_text("\n".join(rows[36:]) + "\n")
    model = build_tiny_model("smolvlm", root / "tiny-smolvlm")
    log(f"quickstart: tiny SmolVLM-family model at {model}; 36 training / 12 held-out images")
    summary = train(TrainConfig(model=str(model), data=str(root / "data" / "train.jsonl"),
                                eval_data=str(root / "data" / "val.jsonl"), output=str(root / "run"), overwrite=True,
                                method="lora", lora_r=32, lora_alpha=64, lora_dropout=0.0, learning_rate=3e-3,
                                epochs=30, batch_size=12, warmup_ratio=0.0, logging_steps=10, num_workers=0,
                                eval_steps=30, report_to="tensorboard"), log=log)
    before = evaluate(EvalConfig(data=str(root / "data" / "val.jsonl"), model=str(model),
                                 output=str(root / "eval-before")), log=log)
    after = evaluate(EvalConfig(data=str(root / "data" / "val.jsonl"), model=str(root / "run"),
                                output=str(root / "eval")), log=log)
    merge(str(root / "run"), str(root / "merged"), log=log)
    result = {"train": summary, "before": {k: v for k, v in before.items() if isinstance(v, float)},
              "after": {k: v for k, v in after.items() if isinstance(v, float)},
              "classify": _classify(model, root / "classify", log)}
    (root / "quickstart.json").write_text(json.dumps(result, indent=2))
    log("quickstart: CIDEr before fine-tuning {:.3f} -> after {:.3f}".format(before["CIDEr"], after["CIDEr"]))
    scores = result["classify"]
    log("quickstart: colour classification accuracy before {:.3f} -> after {:.3f} (score mode, ECE {:.3f}); "
        "generate mode {:.3f}, unmapped {:.3f}; outputs under {}".format(
            scores["before"]["accuracy"], scores["score"]["accuracy"], scores["score"]["ece"],
            scores["generate"]["accuracy"], scores["generate"]["unmapped_rate"], root))
    return result


def _classify(model: Path, root: Path, log) -> dict:
    from .api.evaluate import evaluate
    from .api.train import train

    splits = {name: write_shape_classes(root / "data" / name, per_class=count, seed=seed, label_by="colour")
              for name, count, seed in (("train", 16, 1), ("val", 16, 3), ("test", 16, 2))}
    summary = train(TrainConfig(task="classify", model=str(model), data=str(splits["train"]),
                                eval_data=str(splits["val"]), output=str(root / "run"), overwrite=True, lora_r=32, lora_alpha=64,
                                lora_dropout=0.0, learning_rate=3e-3, epochs=30, batch_size=16, warmup_ratio=0.0,
                                logging_steps=10, num_workers=0, report_to="tensorboard"), log=log)
    test = str(splits["test"])
    metrics = {"before": evaluate(EvalConfig(task="classify", data=test, model=str(model)), log=log)}
    for mode in ("score", "generate"):
        metrics[mode] = evaluate(EvalConfig(data=test, model=str(root / "run"), mode=mode,
                                            output=str(root / f"eval-{mode}")), log=log)
    headline = {name: {k: v for k, v in m.items() if isinstance(v, float)} for name, m in metrics.items()}
    return {"train": {k: summary.get(k) for k in ("eval_accuracy", "calibration", "samples_per_second")}, **headline}
