"""The model behind the server, whatever the run: a VLM run or base model (caption, classify, detect, chat), a
composed VLM, an ONNX export (torch-free runtime), or a dedicated detector (its folder or its .onnx file).

`results(images)` gives exactly the rows `predict` gives (without the "image" key); `chat(images, messages,
max_tokens)` answers OpenAI-style conversations (VLMs only).
"""

from __future__ import annotations

from pathlib import Path

from ..detector.commands import load_detector
from ..detector.config import CONFIG_FILE
from .intake import RequestError
from .replies import Reply


def model_name(path: str) -> str:
    """What the server calls its model: a local folder's or file's name (its path stays private), a hub id as is."""
    return Path(path).name if Path(path).exists() else path


class ServedModel:
    def __init__(self, path: str, batch_size: int = 8, device: str = "auto", log=print):
        self.path, self.name = path, model_name(path)
        self.predictor = self.detect = None
        self.threshold = None
        if path.endswith(".onnx") or (Path(path) / CONFIG_FILE).is_file():
            self.detect, self.classes, self.threshold = load_detector(path, device)
            self.task, self.mode = "detect", "dedicated detector"
        else:
            from ..api.predict import load_predictor

            self.predictor = load_predictor(path, batch_size=batch_size, log=log)
            self.task, self.mode = self.predictor.task.name, self.predictor.mode
            self.classes = list(getattr(self.predictor.task, "classes", None) or [])
            self.threshold = getattr(self.predictor.task, "score_threshold", None)

    @property
    def can_chat(self) -> bool:
        return self.predictor is not None

    def describe(self) -> dict:
        return {"model": self.name, "task": self.task, "mode": self.mode, "classes": self.classes,
                "chat": self.can_chat, "threshold": self.threshold}

    def results(self, images: list, threshold: float | None = None) -> list[dict]:
        """Rows as `predict` gives them; boxes scored below `threshold` (default: the run's) left out."""
        threshold = self.threshold if threshold is None else threshold
        if self.detect is not None:
            rows = self.detect(images, threshold=threshold)
            return [{"width": image.width, "height": image.height, **row} for image, row in zip(images, rows)]
        rows = self.predictor.results(images)
        if threshold is not None:
            rows = [{**row, "boxes": [b for b in row["boxes"] if b.get("score", 1.0) >= threshold]}
                    if isinstance(row.get("boxes"), list) else row for row in rows]
        return rows

    def chat(self, images: list, messages: list[list[dict]], limits: list[int], sampling=None,
             stops: list[list[str]] | None = None, sinks: list | None = None) -> list[dict]:
        """One reply per conversation, each with its own token limit and stop strings, in one batch generated
        to the longest limit; each row: text, completion token count, and why it stopped. `sampling`: greedy when
        None (inference/protocol.py's `Sampling`); `sinks[row]` receives the row's text as it is generated."""
        if self.predictor is None:
            raise RequestError(400, "this server runs a dedicated detector: use POST /v1/predict, not chat completions")
        replies = [Reply(self.predictor.token_pieces, self.predictor.end_ids, limit, (stops or [None] * len(limits))[row],
                         (sinks or [None] * len(limits))[row]) for row, limit in enumerate(limits)]
        self.predictor.generate(images, messages, max_new_tokens=max(limits), sampling=sampling,
                                on_token=lambda row, token: replies[row].add(token))
        return [reply.result() for reply in replies]
