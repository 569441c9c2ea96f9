"""`visiontune quickstart`: the offline main job — a real fine-tune and evaluation, start to finish.

For now: a tiny SmolVLM-family model built from config, LoRA-tuned on a generated caption set
(coloured shapes), then evaluated with COCO caption metrics on held-out images, and merged. The
offline-zoo issue upgrades this to real pretrained weights.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import EvalConfig, TrainConfig
from .data.builtin.shapes import write_shapes_dataset


def quickstart(output: str = "runs/quickstart", log=print) -> dict:
    from .evaluate import evaluate
    from .export.merge import merge
    from .models.tiny import build_tiny_model
    from .training.run import train

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
                                eval_data=str(root / "data" / "val.jsonl"), output=str(root / "run"),
                                method="lora", lora_r=32, lora_alpha=64, lora_dropout=0.0, learning_rate=3e-3,
                                epochs=30, batch_size=12, warmup_ratio=0.0, logging_steps=10, num_workers=0,
                                eval_steps=30, report_to="tensorboard"), log=log)
    before = evaluate(EvalConfig(data=str(root / "data" / "val.jsonl"), model=str(model),
                                 output=str(root / "eval-before")), log=log)
    after = evaluate(EvalConfig(data=str(root / "data" / "val.jsonl"), model=str(root / "run"),
                                output=str(root / "eval")), log=log)
    merge(str(root / "run"), str(root / "merged"), log=log)
    result = {"train": summary, "before": {k: v for k, v in before.items() if isinstance(v, float)},
              "after": {k: v for k, v in after.items() if isinstance(v, float)}}
    (root / "quickstart.json").write_text(json.dumps(result, indent=2))
    log("quickstart: CIDEr before fine-tuning {:.3f} -> after {:.3f}; outputs under {}".format(
        before["CIDEr"], after["CIDEr"], root))
    return result
