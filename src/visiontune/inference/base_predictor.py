"""What every predictor shares, torch-free: the task, the prediction mode, and batching over images.

`Predictor` (PyTorch, `predictor.py`) and the ONNX runtime's predictor (`visiontune.runtime`) add the model
calls of the predictor contract (`protocol.py`): `generate`, `token_pieces`, `answer_tokens`, `score_answers`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from tqdm.auto import tqdm

from ..data.images import ImageLoadError, describe_image, expand_image_inputs, load_image


class BasePredictor:
    def __init__(self, task, batch_size: int = 8, max_new_tokens: int | None = None, mode: str | None = None):
        """`mode`: one of the task's `prediction_modes` (default: its first)."""
        self.task = task
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens or task.max_new_tokens
        self.mode = mode or task.prediction_modes[0]
        if self.mode not in task.prediction_modes:
            raise ValueError(f"--mode {self.mode!r} does not apply to --task {task.name}; its modes: "
                             f"{', '.join(task.prediction_modes)}")
        self.cache: dict[str, Any] = {}  # what a task keeps between batches (e.g. tokenized class answers)

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
