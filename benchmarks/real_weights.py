"""What the VLM learns on real weights, held out, beside the obvious baselines: one command for every row of
BENCHMARKS.md's "Real weights" table.

Model: the quickstart's composed VLM (DINOv2-S + SwiGLU projector + SmolLM2-135M, offline zoo), aligned on
captioned canvases of Fashion-MNIST training items. Sections (`--only` picks some):

- classify:   the quickstart itself (Fashion-MNIST test accuracy) beside logistic regression on the frozen
              DINOv2-S features of the same training images at the same input size.
- generality: from the quickstart's aligned model, `visiontune train --task classify` with default settings
              on a few hundred images of sets the alignment never saw (zoo:digits, zoo:animal-shapes), beside
              their linear probes. Only the data, the output and the run's plumbing (workers, logging) are set.
- caption:    held-out caption canvases (test-split items): CIDEr of the aligned model before, after
              visiontune's caption fine-tune, and after the known recipe (batch 2, right padding, loss on every
              non-pad token, LoRA r=2) trained on the same number of examples.
- detect:     detection as text on canvases of 4 Fashion-MNIST classes (train: training-split items; test:
              test-split items): `train --task detect` with default settings against the known recipe (largest
              box per class, no negatives, no balance, no region slots, no replay) with the same steps; COCO
              AP/AP50/APs, AR by objects per image, hallucination rate on absent classes, duplicates, parse
              failures; the dedicated detector on the same canvases (upper reference); and the same defaults,
              untouched, on canvases of 4 zoo:digits classes, which the alignment never saw.
- textured:   the same defaults, untouched, on a harder set the alignment never saw: small grey zoo:animal-shapes
              silhouettes (4 classes), light or dark, on random grey textures, 128 px canvases (400 training,
              100 test), beside the dedicated detector on them at 112 px.
- imbalance:  the detection defaults (class-balanced sampling) against the same without balancing
              (--balance none), trained on long-tailed canvases where one class's objects are 10x rarer;
              AP per class on the usual test canvases.
- kept:       after detection fine-tuning with self-replay at shares 0 (--no-keep-skills), 0.1 (the default) and
              0.25, the caption metrics of the fine-tuned weights (--no-task-routing) on the held-out caption
              canvases beside the aligned model before it, and the detection metrics (the trade); and the default
              run's captions as a user gets them (`eval --task caption --model RUN`: its base answers). The default
              share's run is the detect section's own when that section finished at the same sizes in the same
              output folder.

    python benchmarks/real_weights.py                      # CPU size (2 cores: see BENCHMARKS.md for times)
    python benchmarks/real_weights.py --only generality --quickstart runs/quickstart   # reuse a quickstart run
    python benchmarks/real_weights.py --only detect textured --quickstart runs/quickstart
    python benchmarks/real_weights.py --full               # GPU size
    python benchmarks/real_weights.py --smoke --only caption detect kept --quickstart runs/quickstart  # does it run?
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from linear_probe import probe_dataset

from visiontune.tasks.self_replay import DEFAULT_SHARE

SECTIONS = ("classify", "generality", "caption", "detect", "textured", "imbalance", "kept")
QUIET = {"log": lambda *_: None}
PLUMBING = {"num_workers": 0, "report_to": "none", "logging_steps": 10, "overwrite": True}
CAPTION_PROMPT = "Describe this image in one sentence."


@dataclass
class Sizes:
    generality_train: int = 600
    generality_test: int = 400
    caption_train: int = 320
    caption_test: int = 80
    caption_epochs: float = 2.0
    detect_size: int = 112
    detect_classes: tuple[str, ...] = ("Trouser", "Bag", "Sneaker", "Ankle boot")
    detect_train: int = 400
    detect_test: int = 80
    detect_epochs: float | None = None  # None: the default
    second_source: str = "zoo:digits"
    second_classes: tuple[str, ...] = ("0", "1", "4", "7")
    textured_source: str = "zoo:animal-shapes"
    textured_classes: tuple[str, ...] = ("cat", "bird", "elephant", "giraffe")
    textured_size: int = 128
    textured_test: int = 100
    rare_class: str = "Bag"  # 10x rarer in the imbalance section's training canvases
    detector_epochs: int = 36


# A minutes-long check that every section runs end to end (its numbers mean nothing).
SMOKE = Sizes(generality_train=40, generality_test=20, caption_train=16, caption_test=8, caption_epochs=1.0,
              detect_train=16, detect_test=8, detect_epochs=0.1, detector_epochs=1, textured_test=8)
FULL = Sizes(generality_train=600, generality_test=2000, caption_train=4000, caption_test=500, caption_epochs=2.0,
             detect_size=224, detect_train=4000, detect_test=500, textured_test=500)


def hardware() -> str:
    name = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return name + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")


def rounded(value):
    """A metric to 4 places; a breakdown ({subset: value}) likewise."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return None if value is None else round(value, 4)


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, round(time.perf_counter() - started, 1)


def run_classify(root: Path, args) -> dict:
    from visiontune.quickstart import FULL as QUICK_FULL
    from visiontune.quickstart import TRAIN_SLICE, QuickstartSizes, quickstart

    sizes = QUICK_FULL if args.full else QuickstartSizes()
    summary_file = root / "quickstart" / "quickstart.json"
    if args.quickstart:
        summary = json.loads((Path(args.quickstart) / "quickstart.json").read_text())
    else:
        summary = quickstart(str(root / "quickstart"), sizes=sizes)
        summary_file.write_text(json.dumps(summary, indent=2))
    used = summary["sizes"]
    probe = probe_dataset("zoo:fashion-mnist", TRAIN_SLICE, "test", used["train_images"], used["test_images"],
                          used["image_size"])
    return {"vlm_accuracy": summary["test"]["accuracy"], "probe_accuracy": probe["accuracy"],
            "ratio": round(summary["test"]["accuracy"] / probe["accuracy"], 3),
            "minutes": round(sum(summary["seconds"].values()) / 60, 1), "sizes": used}


def aligned_model(root: Path, args) -> str:
    folder = Path(args.quickstart) if args.quickstart else root / "quickstart"
    if not (folder / "align").is_dir():
        raise SystemExit(f"{folder / 'align'} is missing: run the classify section first, or pass --quickstart DIR")
    return str(folder / "align")


def run_generality(root: Path, args, sizes: Sizes) -> dict:
    from visiontune.api.evaluate import evaluate
    from visiontune.api.train import train

    model = aligned_model(root, args)
    image_size = json.loads((Path(model) / "config.json").read_text())["image_size"]
    rows = {}
    for data in ("zoo:digits", "zoo:animal-shapes"):
        output = root / "generality" / data.split(":")[1]
        summary, seconds = timed(train, task="classify", model=model, data=data, split="train", shuffle=True,
                                 max_samples=sizes.generality_train, output=str(output), **PLUMBING, **QUIET)
        test = evaluate(task="classify", model=str(output), data=data, split="test",
                        max_samples=sizes.generality_test, output=str(output / "eval"), **QUIET)
        probe = probe_dataset(data, "train", "test", sizes.generality_train, sizes.generality_test, image_size)
        rows[data] = {"vlm_accuracy": test["accuracy"], "probe_accuracy": probe["accuracy"],
                      "ratio": round(test["accuracy"] / probe["accuracy"], 3), "train_seconds": seconds,
                      "probe_start": summary.get("probe_start")}
        print(data, json.dumps(rows[data]), flush=True)
    return rows


def caption_data(root: Path, sizes: Sizes, image_size: int) -> tuple[dict, dict]:
    from visiontune.zoo.canvases import write_canvases

    shape = dict(size=image_size, objects=(1, 2), scale=(image_size * 3 // 7, image_size))
    train_data = write_canvases(root / "data" / "caption-train", count=sizes.caption_train, seed=3, **shape)
    test_data = write_canvases(root / "data" / "caption-test", count=sizes.caption_test, seed=4, split="test", **shape)
    return train_data, test_data


def caption_scores(model: str, test_data: dict, output: Path, task_routing: bool = True) -> dict:
    """Caption metrics; `task_routing` False: a LoRA run trained for another task answers with its own weights."""
    from visiontune.api.evaluate import evaluate

    metrics = evaluate(task="caption", model=model, data=str(test_data["captions"]), prompt=CAPTION_PROMPT,
                       system_prompt="Answer briefly.", output=str(output), max_new_tokens=24,
                       task_routing=task_routing, **QUIET)
    return {k: round(v, 4) for k, v in metrics.items() if k in ("CIDEr", "BLEU-4", "METEOR", "ROUGE-L")}


def train_known_caption_recipe(model_path: str, train_data: dict, output: Path, examples: int) -> None:
    """The widespread notebook recipe: batch 2, prompt + answer rendered together and right-padded, the model's
    own loss on every non-pad, non-image token, LoRA r=2 on the LM's projections."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

    import visiontune.models  # noqa: F401  (registers the composed VLM with the Auto classes)
    from visiontune.data.loading import DataSpec, load_caption_records

    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=8, lora_dropout=0.1, init_lora_weights="gaussian",
                                             target_modules=r".*language_model.*\.(q|k|v|o|gate|up|down)_proj"))
    records = load_caption_records(DataSpec(path=str(train_data["captions"])), log=lambda *_: None)
    image_token_id = processor.image_token_id

    def collate(rows):
        texts, images = [], []
        for record in rows:
            messages = [{"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
                        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CAPTION_PROMPT}]},
                        {"role": "assistant", "content": [{"type": "text", "text": record.captions[0]}]}]
            texts.append(processor.apply_chat_template(messages).strip())
            images.append([record.load_image()])
        processor.tokenizer.padding_side = "right"
        batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        labels[labels == image_token_id] = -100
        batch["labels"] = labels
        return batch

    arguments = TrainingArguments(output_dir=str(output), per_device_train_batch_size=2, max_steps=examples // 2,
                                  learning_rate=1e-4, report_to=[], save_strategy="no", remove_unused_columns=False,
                                  logging_steps=50, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
                                  bf16=torch.cuda.is_available())
    Trainer(model=model, args=arguments, train_dataset=records, data_collator=collate).train()
    model.merge_and_unload().save_pretrained(output)
    processor.save_pretrained(output)


def run_caption(root: Path, args, sizes: Sizes) -> dict:
    from visiontune.api.train import train

    model = aligned_model(root, args)
    image_size = json.loads((Path(model) / "config.json").read_text())["image_size"]
    train_data, test_data = caption_data(root, sizes, image_size)
    rows = {"aligned (before)": caption_scores(model, test_data, root / "caption" / "before")}
    output = root / "caption" / "visiontune"
    _, seconds = timed(train, task="caption", model=model, data=str(train_data["captions"]), output=str(output),
                       prompt=CAPTION_PROMPT, system_prompt="Answer briefly.", epochs=sizes.caption_epochs,
                       **PLUMBING, **QUIET)
    rows["visiontune"] = {**caption_scores(str(output), test_data, output / "eval"), "train_seconds": seconds}
    examples = int(sizes.caption_train * sizes.caption_epochs)
    output = root / "caption" / "known"
    _, seconds = timed(train_known_caption_recipe, model, train_data, output, examples)
    rows["known recipe"] = {**caption_scores(str(output), test_data, output / "eval"), "train_seconds": seconds}
    for name, row in rows.items():
        print("caption", name, json.dumps(row), flush=True)
    return rows


# The known recipe: largest box per class, no negatives, no balance, no region slots, no replay, no probe start.
KNOWN_RECIPE = dict(max_objects=1, negatives=0.0, balance="none", region_slots=0, probe_start=False,
                    keep_skills=False)
DETECT_REPORTED = ("AP", "AP50", "APs", "APm", "AR100", "AR100_by_objects", "hallucination_rate", "duplicate_rate",
                   "parse_failure_rate")
REPLAY_SHARES = (0.0, DEFAULT_SHARE, 0.25)


def detection_data(root: Path, sizes: Sizes, source: str = "zoo:fashion-mnist",
                   long_tailed: bool = False) -> tuple[dict, dict]:
    """Train and test canvases; `long_tailed`: the training canvases' `sizes.rare_class` objects 10x rarer."""
    from visiontune.zoo.canvases import write_canvases

    side = sizes.detect_size
    classes = list(sizes.detect_classes if source == "zoo:fashion-mnist" else sizes.second_classes)
    shape = dict(size=side, objects=(1, 4), scale=(side * 5 // 28, side * 3 // 7), classes=classes, source=source)
    name = source.split(":")[-1]
    weights = {"class_weights": {sizes.rare_class: 0.1}} if long_tailed else {}
    train_folder = root / "data" / f"detect-{name}-train{'-long-tailed' if long_tailed else ''}"
    return (write_canvases(train_folder, count=sizes.detect_train, seed=5, **shape, **weights),
            write_canvases(root / "data" / f"detect-{name}-test", count=sizes.detect_test, seed=6, split="test",
                           **shape))


def textured_data(root: Path, sizes: Sizes) -> tuple[dict, dict]:
    """Train and test canvases of small silhouettes on grey textures (`zoo/canvases.py`, background "textured")."""
    from visiontune.zoo.canvases import write_canvases

    side = sizes.textured_size
    shape = dict(size=side, objects=(1, 4), scale=(side // 7, side * 3 // 8), classes=list(sizes.textured_classes),
                 source=sizes.textured_source, background="textured")
    name = sizes.textured_source.split(":")[-1]
    return (write_canvases(root / "data" / f"textured-{name}-train", count=sizes.detect_train, seed=11, **shape),
            write_canvases(root / "data" / f"textured-{name}-test", count=sizes.textured_test, seed=12, split="test",
                           **shape))


def train_detection(model: str, train_data: dict, output: Path, sizes: Sizes, **options):
    """`train --task detect` with default settings but for `options` and the run's plumbing; `max_steps` in
    `options` replaces the epochs."""
    from visiontune.api.train import train

    length = {"epochs": sizes.detect_epochs} if sizes.detect_epochs else {}
    return timed(train, task="detect", model=model, data=str(train_data["instances"]), output=str(output),
                 **length, **options, **PLUMBING, **QUIET)


def detection_scores(model: str, test_data: dict, output: Path, extra: tuple[str, ...] = ()) -> dict:
    from visiontune.api.evaluate import evaluate

    metrics = evaluate(task="detect", model=model, data=str(test_data["instances"]), output=str(output), **QUIET)
    return {k: rounded(metrics[k]) for k in DETECT_REPORTED + extra if k in metrics}


def dedicated_detector_scores(train_data: dict, test_data: dict, output: Path, sizes: Sizes) -> dict:
    """The upper reference: `visiontune detector` (frozen DINOv2-S, pyramid, one-to-one head) on the same
    canvases at the same input size, trained and scored as a user would from the command line."""
    import subprocess

    command = [sys.executable, "-m", "visiontune", "detector"]
    started = time.perf_counter()
    subprocess.run(command + ["train", "--backbone", "dinov2-small", "--data", str(train_data["instances"]),
                              "--image-size", str(sizes.detect_size), "--epochs", str(sizes.detector_epochs),
                              "--workers", "0", "--output", str(output)], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    subprocess.run(command + ["eval", "--model", str(output), "--data", str(test_data["instances"]),
                              "--output", str(output / "eval")], check=True, stdout=subprocess.DEVNULL)
    metrics = json.loads((output / "eval" / "metrics.json").read_text())
    return {**{k: round(metrics[k], 4) for k in DETECT_REPORTED if k in metrics}, "train_seconds": round(seconds, 1)}


def run_detect(root: Path, args, sizes: Sizes) -> dict:
    model = aligned_model(root, args)
    train_data, test_data = detection_data(root, sizes)
    rows = {"dedicated detector": dedicated_detector_scores(train_data, test_data, root / "detect" / "detector", sizes)}
    print("detect dedicated detector", json.dumps(rows["dedicated detector"]), flush=True)
    output = root / "detect" / "visiontune"
    summary, seconds = train_detection(model, train_data, output, sizes)
    rows["visiontune"] = {**detection_scores(str(output), test_data, output / "eval"), "steps": summary["steps"],
                          "train_seconds": seconds}
    print("detect visiontune", json.dumps(rows["visiontune"]), flush=True)
    # The known recipe with the same number of steps.
    output = root / "detect" / "known"
    _, seconds = train_detection(model, train_data, output, sizes, max_steps=summary["steps"], **KNOWN_RECIPE)
    rows["known"] = {**detection_scores(str(output), test_data, output / "eval"), "train_seconds": seconds}
    print("detect known", json.dumps(rows["known"]), flush=True)
    second_train, second_test = detection_data(root, sizes, sizes.second_source)
    output = root / "detect" / "visiontune-second-set"
    _, seconds = train_detection(model, second_train, output, sizes)
    rows["visiontune, second set"] = {**detection_scores(str(output), second_test, output / "eval"),
                                      "data": sizes.second_source, "train_seconds": seconds}
    print("detect visiontune, second set", json.dumps(rows["visiontune, second set"]), flush=True)
    return {**rows, "sizes": asdict(sizes)}


def run_textured(root: Path, args, sizes: Sizes) -> dict:
    """The detection defaults on textured canvases of another source, beside the dedicated detector."""
    model = aligned_model(root, args)
    train_data, test_data = textured_data(root, sizes)
    output = root / "textured" / "visiontune"
    summary, seconds = train_detection(model, train_data, output, sizes)
    rows = {"visiontune": {**detection_scores(str(output), test_data, output / "eval"), "steps": summary["steps"],
                           "train_seconds": seconds, "data": sizes.textured_source}}
    print("textured visiontune", json.dumps(rows["visiontune"]), flush=True)
    rows["dedicated detector"] = dedicated_detector_scores(train_data, test_data, root / "textured" / "detector", sizes)
    print("textured dedicated detector", json.dumps(rows["dedicated detector"]), flush=True)
    return {**rows, "sizes": asdict(sizes)}


def run_imbalance(root: Path, args, sizes: Sizes) -> dict:
    """Class balancing on a long-tailed training set: the defaults against --balance none, AP per class."""
    model = aligned_model(root, args)
    train_data, test_data = detection_data(root, sizes, long_tailed=True)
    annotations = json.loads(train_data["instances"].read_text())["annotations"]
    rare_id = list(sizes.detect_classes).index(sizes.rare_class) + 1
    rows = {"training objects": {"rare class": sizes.rare_class,
                                 "rare": sum(a["category_id"] == rare_id for a in annotations),
                                 "others": sum(a["category_id"] != rare_id for a in annotations)}}
    for name, options in (("balanced (default)", {}), ("not balanced", {"balance": "none"})):
        output = root / "imbalance" / name.split(" ")[0]
        _, seconds = train_detection(model, train_data, output, sizes, **options)
        rows[name] = {**detection_scores(str(output), test_data, output / "eval", extra=("per_class_AP",)),
                      "train_seconds": seconds}
        print("imbalance", name, json.dumps(rows[name]), flush=True)
    return rows


def default_detection_run(root: Path, sizes: Sizes) -> tuple[Path, dict] | None:
    """The detect section's run with default settings at these sizes (its folder and its row: metrics and
    training seconds), when it finished."""
    results_file, output = root / "results.json", root / "detect" / "visiontune"
    detect = (json.loads(results_file.read_text()) if results_file.is_file() else {}).get("detect", {})
    same_sizes = detect.get("sizes") == json.loads(json.dumps(asdict(sizes)))
    row = detect.get("visiontune")
    return (output, row) if same_sizes and row and (output / "summary.json").is_file() else None


def run_kept(root: Path, args, sizes: Sizes) -> dict:
    """Captions after a detection fine-tune, with self-replay at a few shares (0 = --no-keep-skills)."""
    model = aligned_model(root, args)
    image_size = json.loads((Path(model) / "config.json").read_text())["image_size"]
    _, caption_test = caption_data(root, sizes, image_size)
    train_data, test_data = detection_data(root, sizes)
    rows = {"aligned (before)": caption_scores(model, caption_test, root / "kept" / "before")}
    for share in REPLAY_SHARES:
        output = root / "kept" / f"detect-replay-{share}"
        reused = share == DEFAULT_SHARE and default_detection_run(root, sizes)
        if reused:  # the detect section trained and scored these very settings on these canvases
            output, row = reused
            detection, seconds = {k: row[k] for k in DETECT_REPORTED if k in row}, row["train_seconds"]
        else:
            _, seconds = train_detection(model, train_data, output, sizes, keep_skills=share > 0,
                                         replay_share=share or None)
            detection = detection_scores(str(output), test_data, output / "eval")
        rows[f"after detection, replay share {share}"] = {
            **caption_scores(str(output), caption_test, output / "captions", task_routing=False),
            **{f"detect_{k}": v for k, v in detection.items()}, "train_seconds": seconds}
        if share == DEFAULT_SHARE:  # as a user asks the run for captions: its base answers (task routing)
            rows[f"after detection, replay share {share}, captions asked of the run"] = caption_scores(
                str(output), caption_test, output / "captions-routed")
    for name, row in rows.items():
        print("kept", name, json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--output", default="runs/bench-real-weights")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quickstart", default=None, help="reuse this quickstart run (its align/ and quickstart.json)")
    parser.add_argument("--full", action="store_true", help="GPU sizes")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the sections run")
    args = parser.parse_args()
    root = Path(args.output)
    root.mkdir(parents=True, exist_ok=True)
    sizes = FULL if args.full else SMOKE if args.smoke else Sizes()
    results_file = root / "results.json"
    runners = {"classify": lambda: run_classify(root, args), "generality": lambda: run_generality(root, args, sizes),
               "caption": lambda: run_caption(root, args, sizes), "detect": lambda: run_detect(root, args, sizes),
               "textured": lambda: run_textured(root, args, sizes),
               "imbalance": lambda: run_imbalance(root, args, sizes),
               "kept": lambda: run_kept(root, args, sizes)}
    for section in args.only:
        result, seconds = timed(runners[section])
        # Re-read before writing: sections of an earlier (or concurrent) run stay in the file.
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
        results.update({section: result, section + "_seconds": seconds, "hardware": hardware()})
        results_file.write_text(json.dumps(results, indent=2))
        print(section, json.dumps(result), f"({seconds / 60:.1f} min)", flush=True)
    print(f"results: {results_file}")


if __name__ == "__main__":
    main()
