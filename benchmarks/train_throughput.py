"""Training throughput: `visiontune train` vs the common SmolVLM fine-tuning recipe, side by side.

Baseline (the way the widespread notebook does it): HF Trainer with its own model loss, a collator
that renders prompt+answer with the chat template, right-pads, and masks only padding and image
tokens (so the loss also covers the prompt), SmolVLM at longest edge 1536 with splitting, LoRA r=2 on
the language model's projections, gradient checkpointing, batch 2. visiontune: same model, same data,
same image resolution, its own defaults for the rest (answer-only loss with logits only at answer
positions, left padding, no checkpointing) at --batch-size.

Each side runs in its own process so peak memory is its own. Prints one JSON line per side and the ratio.
    python benchmarks/train_throughput.py --model /tmp/tiny-smolvlm --steps 20          # CPU, tiny model
    (GPU: not run yet; it needs a SmolVLM-256M-architecture folder built from config, not written yet)
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


def run_baseline(model_path: str, data: Path, steps: int, batch_size: int, image_size: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

    from visiontune.data.loading import DataSpec, load_caption_records

    processor = AutoProcessor.from_pretrained(model_path)
    processor.image_processor.size = {"longest_edge": image_size}
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype, attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=2, lora_alpha=8, lora_dropout=0.1,
                                             target_modules=["down_proj", "o_proj", "k_proj", "q_proj", "gate_proj",
                                                             "up_proj", "v_proj"], init_lora_weights="gaussian"))
    records = load_caption_records(DataSpec(path=str(data)))
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<image>")

    def collate(examples):
        texts, images = [], []
        for record in examples:
            messages = [{"role": "user", "content": [{"type": "text", "text": "Describe this image in one sentence."},
                                                     {"type": "image"}]},
                        {"role": "assistant", "content": [{"type": "text", "text": record.captions[0]}]}]
            texts.append(processor.apply_chat_template(messages).strip())
            images.append([record.load_image()])
        batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
        labels = batch["input_ids"].clone()
        labels[labels == processor.tokenizer.pad_token_id] = -100
        labels[labels == image_token_id] = -100
        batch["labels"] = labels
        return batch

    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=batch_size, max_steps=steps,
                             gradient_checkpointing=True, learning_rate=1e-4, report_to=[], save_strategy="no",
                             remove_unused_columns=False, bf16=dtype == torch.bfloat16, logging_steps=10**6,
                             use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=records, data_collator=collate)
    metrics = trainer.train().metrics
    return {"samples_per_second": metrics["train_samples_per_second"], "seconds": metrics["train_runtime"]}


def run_visiontune(model_path: str, data: Path, steps: int, batch_size: int, image_size: int) -> dict:
    from visiontune.api.train import train

    summary = train(model=model_path, data=str(data), output=tempfile.mkdtemp(), max_steps=steps,
                    batch_size=batch_size, image_size=image_size, lora_r=2, report_to="none", num_workers=0,
                    preflight=False, save_steps=10**6, log=lambda *_: None)
    # Trainer's own train_samples_per_second, measured the same way as the baseline's.
    return {"samples_per_second": summary["trainer_samples_per_second"], "tokens_per_second": summary["tokens_per_second"]}


def peak_memory() -> dict:
    from visiontune.training.callbacks import peak_memory_bytes

    return peak_memory_bytes()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="model folder (e.g. from `visiontune tiny-model`)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=1536)
    parser.add_argument("--baseline-batch", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--side", choices=["baseline", "visiontune"])
    parser.add_argument("--data")
    args = parser.parse_args()
    if args.side:
        runner = run_baseline if args.side == "baseline" else run_visiontune
        batch = args.baseline_batch if args.side == "baseline" else args.batch
        result = runner(args.model, Path(args.data), args.steps, batch, args.image_size)
        print("RESULT " + json.dumps({"side": args.side, "batch": batch, **result, **peak_memory()}))
        return
    data = make_data(Path(tempfile.mkdtemp()), count=64)
    results = {}
    for side in ("baseline", "visiontune"):
        done = subprocess.run([sys.executable, __file__, "--side", side, "--model", args.model, "--data", str(data),
                               "--steps", str(args.steps), "--image-size", str(args.image_size),
                               "--baseline-batch", str(args.baseline_batch), "--batch", str(args.batch)],
                              capture_output=True, text=True, check=False)
        line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
        results[side] = json.loads(line[7:])
        print(json.dumps(results[side]))
    ratio = results["visiontune"]["samples_per_second"] / results["baseline"]["samples_per_second"]
    memory = results["visiontune"]["peak_bytes"] / results["baseline"]["peak_bytes"]
    print(f"samples/s ratio visiontune/baseline: {ratio:.2f}x; peak memory ratio {memory:.2f}x")


if __name__ == "__main__":
    main()
