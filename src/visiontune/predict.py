"""Batched generation: images (files, URLs, folders, PIL) -> parsed task predictions (+ JSONL)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .config import PredictConfig, build_config
from .data.images import ImageLoadError, describe_image, expand_image_inputs, load_image
from .models.vlm import end_token_ids, load_for_inference
from .tasks.base import task_from_metadata, task_options
from .training.collator import VLMCollator

PREDICTION_MODES = ("generate", "score")


class Predictor:
    """A loaded model + processor + task. Generation is batched (greedy/beam/sampling); classification
    can instead score every class (`mode="score"`, the default for classify)."""

    def __init__(self, model, processor, task, batch_size: int = 8, max_new_tokens: int | None = None,
                 mode: str | None = None,
                 top_k: int = 5, length_normalise: bool = False, **generation):
        self.model, self.processor, self.task = model, processor, task
        self.batch_size, self.max_new_tokens, self.top_k = batch_size, max_new_tokens or task.max_new_tokens, top_k
        self.mode = mode or ("score" if task.name == "classify" else "generate")
        if self.mode not in PREDICTION_MODES:
            raise ValueError(f"unknown --mode {self.mode!r}; choose generate or score")
        if self.mode == "score" and task.name != "classify":
            raise ValueError(f"--mode score ranks class names; it applies to --task classify, not {task.name}")
        self.generation = {k: v for k, v in generation.items() if v is not None}
        if not self.generation.get("do_sample"):
            self.generation.pop("temperature", None)
            self.generation.pop("top_p", None)
        self.collator = VLMCollator(processor, with_labels=False)
        self.scorer = None
        if self.mode == "score":
            from .inference.class_scores import ClassScorer

            self.scorer = ClassScorer(model, processor, task, length_normalise=length_normalise)

    @classmethod
    def from_pretrained(cls, path: str, task: str | None = None, dtype: str = "auto", log=print,
                        task_options: dict | None = None, **kwargs) -> Predictor:
        """`task_options` (prompt, system_prompt, classes…) override what the run folder's visiontune.json says."""
        model, processor, metadata = load_for_inference(path, dtype=dtype, log=log)
        return cls(model, processor, task_from_metadata(metadata, task, **(task_options or {})), **kwargs)

    @torch.inference_mode()
    def generate(self, images: list, messages: list[list[dict]], with_scores: bool = False) -> dict:
        """Replies to one prompt per image. `texts` are stripped. With `with_scores`: `tokens` (each reply's
        token ids up to and including its end token) and `log_probs` (each of those tokens' log-probability)."""
        batch = self.collator.encode_prompts(images, messages)
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        output = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, return_dict_in_generate=True,
                                     output_scores=with_scores, **self.generation)
        new_tokens = output.sequences[:, batch["input_ids"].shape[1]:]
        texts = [t.strip() for t in self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
        if not with_scores:
            return {"texts": texts}
        steps = self.model.compute_transition_scores(output.sequences, output.scores,
                                                     getattr(output, "beam_indices", None), normalize_logits=True)
        # Tokens after a row's end of sequence are padding; only the reply itself (end token included) counts.
        ended = torch.isin(new_tokens, torch.tensor(sorted(end_token_ids(self.model)), device=new_tokens.device))
        lengths = torch.where(ended.any(dim=1), ended.int().argmax(dim=1) + 1, new_tokens.shape[1]).tolist()
        steps = steps.float().cpu()
        return {"texts": texts, "tokens": [new_tokens[i, :n].tolist() for i, n in enumerate(lengths)],
                "log_probs": [steps[i, :n].tolist() for i, n in enumerate(lengths)]}

    def generate_texts(self, images: list, with_log_probs: bool = False):
        """Replies to the task's prompt; with `with_log_probs`, also each reply's summed token log-probability."""
        generated = self.generate(images, [self.task.messages() for _ in images], with_scores=with_log_probs)
        if not with_log_probs:
            return generated["texts"]
        return generated["texts"], [sum(values) for values in generated["log_probs"]]

    def results(self, images: list) -> list[dict]:
        """The task-level answer for each image (see README "Prediction output")."""
        if self.task.name == "detect":
            from .inference.box_detection import detect_boxes

            return detect_boxes(self, images)
        if self.task.name != "classify":
            return [{"prediction": self.task.parse(text), "text": text} for text in self.generate_texts(images)]
        if self.mode == "score":
            texts = self.generate_texts(images) if self.task.reasoning else [None] * len(images)
            return self.scorer.results(images, texts, self.top_k)
        texts, log_probs = self.generate_texts(images, with_log_probs=True)
        rows = []
        for text, log_prob in zip(texts, log_probs):
            parsed = self.task.parse_full(text)
            # The probability of the whole reply as generated: a confidence, not a distribution over classes.
            rows.append({"label": parsed.label, "confidence": math.exp(log_prob), "match": parsed.rule,
                         "text": text})
        return rows

    def iter_results(self, items: list[Any], load: Callable[[Any], Any], skip_bad_images: bool = False,
                     progress: bool = True, log=print) -> Iterator[tuple[Any, dict]]:
        """(item, result) for every item, `batch_size` images at a time."""
        skipped = 0
        for start in tqdm(range(0, len(items), self.batch_size), desc=self.mode, disable=not progress,
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
                yield from zip(chunk, self.results(images))
        if skipped:
            log(f"skipped {skipped} images that could not be loaded (--skip-bad-images)")

    def predict(self, inputs: list[Any], skip_bad_images: bool = False, base_dir=None, progress: bool = True,
                log=print) -> list[dict]:
        return [{"image": describe_image(reference), **result}
                for reference, result in self.iter_results(expand_image_inputs(inputs),
                                                           lambda reference: load_image(reference, base_dir),
                                                           skip_bad_images, progress, log)]


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def predict(config: PredictConfig | None = None, log=print, **overrides) -> list[dict]:
    """Run a model or run folder on images/URLs/folders; one result row per image; JSONL when `output` is set."""
    config = config or build_config(PredictConfig, overrides)
    if not config.images:
        raise ValueError("no images: pass --images FILE|URL|FOLDER [...]")
    images = [config.images] if isinstance(config.images, (str, Path)) else config.images  # predict(images="x.jpg")
    predictor = Predictor.from_pretrained(
        config.model, task=config.task, task_options=task_options(config), dtype=config.dtype, log=log,
        batch_size=config.batch_size, max_new_tokens=config.max_new_tokens, mode=config.mode, top_k=config.top_k,
        length_normalise=config.length_normalise, num_beams=config.num_beams, do_sample=config.do_sample,
        temperature=config.temperature, top_p=config.top_p)
    results = predictor.predict(images, skip_bad_images=config.skip_bad_images, log=log)
    if config.output:
        log(f"wrote {len(results)} predictions to {write_jsonl(results, config.output)}")
    if config.draw:
        if predictor.task.name != "detect":
            raise ValueError("--draw writes images with their boxes; it applies to --task detect")
        log(f"drew {len(results)} images under {draw_predictions(results, predictor.task, config.draw)}")
    return results


def draw_predictions(results: list[dict], task, folder: str | Path) -> Path:
    """Each predicted image with its boxes (one colour per class, label and score) as `<folder>/<name>.png`."""
    from .report.boxes import draw_boxes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for index, row in enumerate(results):
        stem = Path(str(row["image"])).stem if isinstance(row["image"], str) else f"image_{index:05d}"
        name = stem if stem not in used else f"{stem}_{index}"
        used.add(name)
        image = load_image(row["image"]) if isinstance(row["image"], str) and not row["image"].startswith("<") else None
        if image is not None:
            draw_boxes(image, row["boxes"], classes=task.classes, with_labels=True).save(folder / f"{name}.png")
    return folder
