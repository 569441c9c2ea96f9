"""Fold a LoRA adapter into its base model, save model + processor, and verify the result.

Verification: (1) the merged model's logits equal the adapter model's on a sample batch, within a
printed tolerance; (2) the saved folder loads with plain `AutoModelForImageTextToText.from_pretrained`
in a fresh Python process that never imports visiontune (composed VLMs through the code files saved beside
their weights, `trust_remote_code=True`), and gives the same logits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from PIL import Image

from ..models.prompt_encoding import VLMCollator
from ..models.run_base import read_run_metadata
from ..models.vlm import MODEL_CONFIG_KEY, base_model_of, is_adapter_folder, load_base_model, load_processor
from ..tasks import routes_other_tasks, task_from_metadata

_RELOAD_SCRIPT = r"""
import sys, torch
from transformers import AutoModelForImageTextToText
batch = torch.load(sys.argv[2])
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], dtype=torch.float32, trust_remote_code=True).eval()
with torch.inference_mode():
    logits = model(**batch).logits
torch.save(logits, sys.argv[3])
assert not any(name.startswith("visiontune") for name in sys.modules)
"""


def sample_images() -> list:
    """Two fixed images of different sizes: a gradient and a checkerboard."""
    gradient = Image.fromarray((torch.linspace(0, 255, 96).repeat(64, 1)).to(torch.uint8).numpy()).convert("RGB")
    checker = Image.fromarray(((torch.arange(64)[:, None] // 8 + torch.arange(80)[None] // 8) % 2 * 255)
                              .to(torch.uint8).numpy()).convert("RGB")
    return [gradient, checker]


def sample_batch(processor, task) -> dict:
    """`sample_images` with the task's prompt."""
    collator = VLMCollator(processor, with_labels=False)
    return dict(collator.encode_prompts(sample_images(), [task.messages(), task.messages()]))


def merge_checked(model, batch: dict, tolerance: float, log=print) -> tuple:
    """Fold a peft model's adapter in: (merged model, its logits on `batch`, max |logit difference| from the
    adapter model). Past `tolerance` it raises instead (before anything is saved)."""
    with torch.inference_mode():
        adapter_logits = model(**batch).logits
    merged = model.merge_and_unload().eval()
    with torch.inference_mode():
        merged_logits = merged(**batch).logits
    difference = float((adapter_logits - merged_logits).abs().max())
    log(f"merged vs adapter logits: max |difference| {difference:.2e} (tolerance {tolerance:.0e})")
    if difference > tolerance:
        raise RuntimeError(f"merged model differs from the adapter model by {difference:.3e} > {tolerance:.0e}; "
                           f"nothing was saved")
    return merged, merged_logits, difference


def note_merged_tasks(metadata: dict, log=print) -> None:
    """Say what merging changes for a run's other tasks: the LoRA run answers them with its base (task
    routing); merged weights answer every task as the fine-tune left them."""
    if routes_other_tasks(metadata.get("task")):
        log(f"note: merged, the weights answer every task as the {metadata['task']} fine-tune left them; the LoRA "
            f"run itself answers other tasks with its base (task routing), so keep the run for those")


def merge(adapter: str, output: str, tolerance: float = 1e-3, verify_reload: bool = True, log=print) -> dict:
    if not is_adapter_folder(adapter):
        raise ValueError(f"{adapter}: no adapter_config.json; merge takes a LoRA run folder (train --method lora)")
    from peft import PeftModel

    metadata = read_run_metadata(adapter)
    if metadata.get("method") == "qlora":
        log("note: a QLoRA adapter is merged into the full-precision base model (the 4-bit base is not saved)")
    note_merged_tasks(metadata, log)
    processor = load_processor(adapter)
    task = task_from_metadata(metadata)
    # fp32 for the check: the comparison then measures merging, not rounding.
    base = load_base_model(base_model_of(adapter), torch.float32, config_overrides=metadata.get(MODEL_CONFIG_KEY))
    model = PeftModel.from_pretrained(base, adapter).eval()
    batch = sample_batch(processor, task)
    merged, merged_logits, difference = merge_checked(model, batch, tolerance, log)
    report = {"adapter": adapter, "output": output, "max_abs_logit_difference": difference, "tolerance": tolerance}
    output_path = Path(output)
    merged.save_pretrained(output_path)
    processor.save_pretrained(output_path)
    (output_path / "visiontune.json").write_text(json.dumps({**metadata, "merged_from": adapter,
                                                             "base_model": str(output_path)}, indent=2))
    if verify_reload:
        with tempfile.TemporaryDirectory() as scratch:
            batch_file, logits_file = Path(scratch) / "batch.pt", Path(scratch) / "logits.pt"
            torch.save(batch, batch_file)
            done = subprocess.run([sys.executable, "-c", _RELOAD_SCRIPT, str(output_path), str(batch_file),
                                   str(logits_file)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"{output}: plain transformers could not load the merged model:\n{done.stderr[-2000:]}")
            reloaded = torch.load(logits_file)
        reload_difference = float((reloaded - merged_logits).abs().max())
        report["reload_max_abs_logit_difference"] = reload_difference
        log(f"plain-transformers reload (visiontune not imported): max |difference| {reload_difference:.2e}")
        if reload_difference > tolerance:
            raise RuntimeError(f"{output}: reloaded merged model differs by {reload_difference:.3e}")
    (output_path / "merge_report.json").write_text(json.dumps(report, indent=2))
    log(f"saved merged model to {output}")
    return report
