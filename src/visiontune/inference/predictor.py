"""`Predictor`: a loaded model + processor + task; batched generation over images, and the task's answers.

Generation is batched (greedy/beam/sampling). What an answer is (a caption, a class with probabilities, boxes)
is the task's business: `results` hands each batch of images to `task.results(predictor, images)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.images import ImageLoadError, describe_image, expand_image_inputs, load_image
from ..models.feature_cache import FeatureCache
from ..models.prompt_encoding import VLMCollator
from ..models.vision_cache import IMAGE_KEYS, pixel_unit_keys
from ..models.vlm import end_token_ids

FEATURE_MEMORY_BYTES = 512 * 2**20  # the most recent images' vision features kept while predicting


class Predictor:
    def __init__(self, model, processor, task, batch_size: int = 8, max_new_tokens: int | None = None,
                 mode: str | None = None, top_k: int = 5, length_normalise: bool = False, **generation):
        """`mode`: one of the task's `prediction_modes` (default: its first); `top_k` and `length_normalise`
        are options of modes that rank answers (classify's score mode)."""
        self.model, self.processor, self.task = model, processor, task
        self.batch_size, self.max_new_tokens, self.top_k = batch_size, max_new_tokens or task.max_new_tokens, top_k
        self.length_normalise = length_normalise
        self.mode = mode or task.prediction_modes[0]
        if self.mode not in task.prediction_modes:
            raise ValueError(f"--mode {self.mode!r} does not apply to --task {task.name}; its modes: "
                             f"{', '.join(task.prediction_modes)}")
        self.generation = {k: v for k, v in generation.items() if v is not None}
        if not self.generation.get("do_sample"):
            self.generation.pop("temperature", None)
            self.generation.pop("top_p", None)
        self.collator = VLMCollator(processor, with_labels=False)
        self.cache: dict[str, Any] = {}  # what a task keeps between batches (e.g. tokenized class answers)
        # One vision forward per image, whatever the number of prompts about it (per-class detection queries)
        self.features = FeatureCache.for_model(model, log=lambda *_: None, for_generation=True,
                                               memory_bytes=FEATURE_MEMORY_BYTES)

    @torch.inference_mode()
    def generate(self, images: list, messages: list[list[dict]], with_scores: bool = False) -> dict:
        """Replies to one prompt per image (an image may be a list of images). `texts` are stripped. With
        `with_scores`: `tokens` (each reply's token ids up to and including its end token) and `log_probs`
        (each of those tokens' log-probability)."""
        batch = self.collator.encode_prompts(images, messages)
        device = next(self.model.parameters()).device
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        if self.features is not None and "pixel_values" in batch:
            batch = self.features.apply(self.model, {**batch, IMAGE_KEYS: pixel_unit_keys(batch["pixel_values"])})
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
        return self.task.results(self, images)

    def iter_results(self, items: list[Any], load: Callable[[Any], Any], skip_bad_images: bool = False,
                     progress: bool = True, log=print) -> Iterator[tuple[Any, dict]]:
        """(item, result) for every item, `batch_size` items at a time. `load(item)` gives what the task's
        `results` takes for it (an image; a record, for tasks whose prompt comes from the data)."""
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
