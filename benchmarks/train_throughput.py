"""Training throughput: `visiontune train` vs the common SmolVLM fine-tuning recipe, side by side.

Baseline (the way the widespread notebook does it): HF Trainer with its own model loss, a collator
that renders prompt+answer with the chat template, right-pads, and masks only padding and image
tokens (so the loss also covers the prompt), SmolVLM at longest edge 1536 with splitting, LoRA r=2 on
the language model's projections, gradient checkpointing, batch 2. visiontune: same model, same data,
same image resolution, its own defaults for the rest (answer-only loss with logits only at answer
positions, left padding, no checkpointing) at --batch-size.

A third side, `visiontune-uncached`, is visiontune with `--no-feature-cache`: what the frozen-vision feature
cache buys once images repeat (`--epochs 2` or more).

Each side runs in its own process so peak memory is its own. Prints one JSON line per side and the ratios.
    python benchmarks/train_throughput.py --model /tmp/tiny-smolvlm --steps 20          # CPU, tiny model
    # the quickstart's shapes: its aligned composed model, classify on 400 Fashion-MNIST images, 2 epochs
    python benchmarks/train_throughput.py --model runs/quickstart/align --task classify \
        --data zoo:fashion-mnist --count 400 --epochs 2 --batch 8 --baseline-batch 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def make_data(folder: Path, count: int) -> Path:
    from visiontune.data.builtin.shapes import write_shapes_dataset

    return write_shapes_dataset(folder, count=count, size=384)["jsonl"]


def _examples(data: str, task_name: str, count: int):
    """(task, [(record, example)]) of `count` records of `data` for the task."""
    from visiontune.data.loading import DataSpec
    from visiontune.tasks import get_task, task_class

    records, from_data = task_class(task_name).load_records(DataSpec(path=str(data), max_samples=count,
                                                                     split="train" if data.startswith("zoo:") else None),
                                                            log=lambda *_: None)
    task = get_task(task_name, **from_data)
    return task, [(record, example) for record in records for example in task.training_examples(record)]


def run_baseline(model_path: str, data: str, steps: int, batch_size: int, image_size: int | None, task_name: str,
                 count: int, epochs: float) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

    import visiontune.models  # noqa: F401 (registers composed VLMs with the Auto classes)

    processor = AutoProcessor.from_pretrained(model_path)
    if image_size:
        processor.image_processor.size = {"longest_edge": image_size}
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=8, lora_dropout=0.1,
                                             target_modules=["down_proj", "o_proj", "k_proj", "q_proj", "gate_proj",
                                                             "up_proj", "v_proj"], init_lora_weights="gaussian"))
    _, items = _examples(data, task_name, count)
    image_token_id = processor.tokenizer.convert_tokens_to_ids(getattr(processor, "image_token", "<image>"))

    def collate(batch_items):
        texts, images = [], []
        for record, example in batch_items:
            messages = example.messages + [{"role": "assistant", "content": [{"type": "text", "text": example.target}]}]
            texts.append(processor.apply_chat_template(messages).strip())
            images.append([record.load_image()])
        batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
        labels = batch["input_ids"].clone()
        labels[labels == processor.tokenizer.pad_token_id] = -100
        labels[labels == image_token_id] = -100
        batch["labels"] = labels
        return batch

    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch_size, max_steps=steps,
                             num_train_epochs=epochs,
                             gradient_checkpointing=True, learning_rate=1e-4, report_to=[], save_strategy="no",
                             remove_unused_columns=False, bf16=dtype == torch.bfloat16, logging_steps=10**6,
                             use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=items, data_collator=collate)
    metrics = trainer.train().metrics
    return {"samples_per_second": metrics["train_samples_per_second"], "seconds": metrics["train_runtime"]}


def run_trl(model_path: str, data: str, steps: int, batch_size: int, image_size: int | None, task_name: str,
            count: int, epochs: float) -> dict:
    """TRL's SFTTrainer at its documented VLM settings: conversational `messages` + `images` rows, LoRA r=2,
    gradient checkpointing, bf16 on a GPU. Needs trl (and datasets) installed."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    import visiontune.models  # noqa: F401 (registers composed VLMs with the Auto classes)

    processor = AutoProcessor.from_pretrained(model_path)
    if image_size:
        processor.image_processor.size = {"longest_edge": image_size}
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype, attn_implementation="sdpa")
    _, items = _examples(data, task_name, count)
    rows = [{"messages": example.messages + [{"role": "assistant", "content": [{"type": "text", "text": example.target}]}],
             "images": [record.load_image()]} for record, example in items]
    dataset = datasets.Dataset.from_list(rows)
    args = SFTConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch_size, max_steps=steps,
                     num_train_epochs=epochs, gradient_checkpointing=True, bf16=dtype == torch.bfloat16,
                     learning_rate=1e-4, report_to=[], save_strategy="no", logging_steps=10**6, max_length=None,
                     use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor,
                         peft_config=LoraConfig(r=2, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear"))
    metrics = trainer.train().metrics
    return {"samples_per_second": metrics["train_samples_per_second"], "seconds": metrics["train_runtime"]}


def run_visiontune(model_path: str, data: str, steps: int, batch_size: int, image_size: int | None, task_name: str,
                   count: int, epochs: float, feature_cache: bool = True) -> dict:
    from visiontune.api.train import train

    summary = train(task=task_name, model=model_path, data=str(data), output=tempfile.mkdtemp(), max_steps=steps,
                    epochs=epochs, max_samples=count, split="train" if str(data).startswith("zoo:") else None,
                    batch_size=batch_size, image_size=image_size, lora_r=2, report_to="none", num_workers=0,
                    preflight=False, save_steps=10**6, feature_cache=feature_cache, probe_start=False,
                    log=lambda *_: None)
    # Trainer's own train_samples_per_second, measured the same way as the baseline's.
    return {"samples_per_second": summary["trainer_samples_per_second"], "tokens_per_second": summary["tokens_per_second"],
            "final_train_loss": summary["final_train_loss"], "mfu": summary.get("mfu"),
            "feature_cache": summary.get("feature_cache")}


def peak_memory() -> dict:
    from visiontune.training.callbacks import peak_memory_bytes

    return peak_memory_bytes()


SIDES = ("baseline", "visiontune-uncached", "visiontune")
OPTIONAL_SIDES = ("trl",)  # measured with --trl; a failure is reported, not fatal


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="model folder (e.g. from `visiontune tiny-model`)")
    parser.add_argument("--task", default="caption")
    parser.add_argument("--data", help="training data (default: 64 generated shape captions)")
    parser.add_argument("--count", type=int, default=64, help="training images")
    parser.add_argument("--steps", type=int, default=-1, help="max steps (default: --epochs)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=None, help="SmolVLM longest edge (e.g. 1536)")
    parser.add_argument("--baseline-batch", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--side", choices=SIDES + OPTIONAL_SIDES)
    parser.add_argument("--trl", action="store_true", help="also TRL's SFTTrainer (batch --trl-batch)")
    parser.add_argument("--trl-batch", type=int, default=4)
    parser.add_argument("--json", help="write every side's result here")
    args = parser.parse_args()
    if args.side:
        batch = {"baseline": args.baseline_batch, "trl": args.trl_batch}.get(args.side, args.batch)
        common = (args.model, args.data, args.steps, batch, args.image_size, args.task, args.count, args.epochs)
        if args.side in ("baseline", "trl"):
            result = (run_baseline if args.side == "baseline" else run_trl)(*common)
        else:
            result = run_visiontune(*common, feature_cache=args.side == "visiontune")
        print("RESULT " + json.dumps({"side": args.side, "batch": batch, **result, **peak_memory()}))
        return
    data = args.data or str(make_data(Path(tempfile.mkdtemp()), count=args.count))
    results = {}
    for side in SIDES + (OPTIONAL_SIDES if args.trl else ()):
        command = [sys.executable, __file__, "--side", side, "--model", args.model, "--data", data, "--task", args.task,
                   "--count", str(args.count), "--steps", str(args.steps), "--epochs", str(args.epochs),
                   "--baseline-batch", str(args.baseline_batch), "--batch", str(args.batch),
                   "--trl-batch", str(args.trl_batch)]
        if args.image_size:
            command += ["--image-size", str(args.image_size)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            if side in OPTIONAL_SIDES:
                results[side] = {"side": side, "error": done.stderr.strip().splitlines()[-1:] or ["no output"]}
                print(json.dumps(results[side]))
                continue
            raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
        results[side] = json.loads(line[7:])
        print(json.dumps(results[side]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    speed = {side: results[side]["samples_per_second"] for side in SIDES}
    print(f"samples/s: visiontune {speed['visiontune']:.2f} = {speed['visiontune'] / speed['baseline']:.2f}x the "
          f"baseline and {speed['visiontune'] / speed['visiontune-uncached']:.2f}x visiontune without the feature "
          f"cache; peak memory {results['visiontune']['peak_bytes'] / results['baseline']['peak_bytes']:.2f}x the "
          f"baseline's")


if __name__ == "__main__":
    main()
