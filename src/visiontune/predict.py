"""Batched generation: images (files, URLs, folders, PIL) -> parsed task predictions (+ JSONL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm.auto import tqdm

from .config import PredictConfig, build_config
from .data.images import ImageLoadError, describe_image, is_url, load_image
from .models.vlm import load_for_inference
from .tasks.base import task_from_metadata
from .training.collator import VLMCollator

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def expand_image_inputs(inputs: list[Any]) -> list[Any]:
    """Folders become their image files (sorted, recursive); files, URLs and PIL images pass through."""
    expanded: list[Any] = []
    for item in inputs:
        if isinstance(item, (str, Path)) and not is_url(str(item)) and Path(item).is_dir():
            files = sorted(p for p in Path(item).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise ImageLoadError(f"{item}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            expanded.extend(str(p) for p in files)
        else:
            expanded.append(item)
    return expanded


class Predictor:
    """A loaded model + processor + task; `generate` runs batched greedy/beam/sampled decoding."""

    def __init__(self, model, processor, task, batch_size: int = 8, max_new_tokens: int = 64, **generation):
        self.model, self.processor, self.task = model, processor, task
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.generation = {k: v for k, v in generation.items() if v is not None}
        if not self.generation.get("do_sample"):
            self.generation.pop("temperature", None)
            self.generation.pop("top_p", None)
        self.collator = VLMCollator(processor, with_labels=False)

    @classmethod
    def from_pretrained(cls, path: str, task: str | None = None, prompt: str | None = None,
                        system_prompt: str | None = None, dtype: str = "auto", log=print, **kwargs) -> "Predictor":
        model, processor, metadata = load_for_inference(path, dtype=dtype, log=log)
        return cls(model, processor, task_from_metadata(metadata, task, prompt, system_prompt), **kwargs)

    @torch.inference_mode()
    def generate_texts(self, images: list) -> list[str]:
        messages = [self.task.messages() for _ in images]
        batch = self.collator.encode_prompts(images, messages)
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        output = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, **self.generation)
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        return self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def iter_texts(self, items: list[Any], load: Callable[[Any], Any], skip_bad_images: bool = False,
                   progress: bool = True, log=print) -> Iterator[tuple[Any, str]]:
        """(item, generated text) for every item, `batch_size` images per `generate` call."""
        skipped = 0
        for start in tqdm(range(0, len(items), self.batch_size), desc="generate", disable=not progress,
                          unit="batch"):
            chunk, images = [], []
            for item in items[start:start + self.batch_size]:
                try:
                    images.append(load(item))
                    chunk.append(item)
                except ImageLoadError:
                    if not skip_bad_images:
                        raise
                    skipped += 1
            if images:
                yield from zip(chunk, self.generate_texts(images))
        if skipped:
            log(f"skipped {skipped} images that could not be loaded (--skip-bad-images)")

    def predict(self, inputs: list[Any], skip_bad_images: bool = False, base_dir=None, progress: bool = True,
                log=print) -> list[dict]:
        return [{"image": describe_image(reference), "prediction": self.task.parse(text), "text": text}
                for reference, text in self.iter_texts(expand_image_inputs(inputs),
                                                       lambda reference: load_image(reference, base_dir),
                                                       skip_bad_images, progress, log)]


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def predict(config: PredictConfig | None = None, log=print, **overrides) -> list[dict]:
    """Generate for images/URLs/folders with a model or run folder; writes JSONL when `output` is set."""
    config = config or build_config(PredictConfig, overrides)
    if not config.images:
        raise ValueError("no images: pass --images FILE|URL|FOLDER [...]")
    images = [config.images] if isinstance(config.images, (str, Path)) else config.images  # predict(images="x.jpg")
    predictor = Predictor.from_pretrained(
        config.model, task=config.task, prompt=config.prompt, system_prompt=config.system_prompt, dtype=config.dtype,
        log=log, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens, num_beams=config.num_beams,
        do_sample=config.do_sample, temperature=config.temperature, top_p=config.top_p)
    results = predictor.predict(images, skip_bad_images=config.skip_bad_images, log=log)
    if config.output:
        log(f"wrote {len(results)} predictions to {write_jsonl(results, config.output)}")
    return results
