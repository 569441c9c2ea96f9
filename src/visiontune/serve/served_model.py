"""The model behind the server, whatever the run: a VLM run or base model (caption, classify, detect, chat), a
composed VLM, an ONNX or GGUF export (torch-free runtimes), or a dedicated detector (its folder or its .onnx file).

`results(images)` gives exactly the rows `predict` gives (without the "image" key); `chat(images, messages,
limits)` answers OpenAI-style conversations (VLMs only). With adapters, one base serves several LoRA runs by
name (each with its own task), and the base's own answers as `base`.
"""

from __future__ import annotations

from pathlib import Path

from ..detector.commands import load_detector
from ..detector.config import CONFIG_FILE
from ..runtime.exports import export_root
from .intake import RequestError
from .replies import Reply


def model_name(path: str) -> str:
    """What the server calls its model: a local folder's or file's name (its path stays private; an export's
    `onnx/` folder is called by its export's name), a hub id as is."""
    if not Path(path).exists():
        return path
    return (export_root(path) or Path(path)).resolve().name


class ServedModel:
    def __init__(self, path: str, batch_size: int = 8, device: str = "auto", log=print,
                 adapters: dict[str, str] | None = None):
        """`adapters` {name: LoRA run over `path`}: the base loaded once with every adapter on it; a request
        names the one it wants (`model`), `base` the base alone; the first adapter answers requests that do not."""
        self.path, self.name = path, model_name(path)
        self.predictor = self.detect = None
        self.predictors: dict = {}
        self.threshold = None
        if path.endswith(".onnx") or (Path(path) / CONFIG_FILE).is_file():
            self.detect, self.classes, self.threshold = load_detector(path, device)
            self.task, self.mode = "detect", "dedicated detector"
            return
        from ..api.predict import load_adapter_predictors, load_predictor

        if adapters:
            self.predictors = load_adapter_predictors(path, adapters, batch_size=batch_size, log=log)
            self.name = next(iter(adapters))
        else:
            self.predictors = {self.name: load_predictor(path, batch_size=batch_size, log=log)}
        self.predictor = self.predictors[self.name]
        self.task, self.mode = self.predictor.task.name, self.predictor.mode
        self.classes = list(getattr(self.predictor.task, "classes", None) or [])
        self.threshold = getattr(self.predictor.task, "score_threshold", None)

    @property
    def can_chat(self) -> bool:
        return self.predictor is not None

    @property
    def names(self) -> list[str]:
        return list(self.predictors) or [self.name]

    def pick(self, name: str | None):
        """The predictor a request names; a server of one model answers whatever name a client sends."""
        if len(self.predictors) <= 1 or name is None:
            return self.predictor
        if name not in self.predictors:
            raise RequestError(404, f"no model {name!r} here; this server has {', '.join(self.predictors)}")
        return self.predictors[name]

    def describe(self) -> dict:
        return {"model": self.name, "task": self.task, "mode": self.mode, "classes": self.classes,
                "chat": self.can_chat, "threshold": self.threshold, "models": self.names}

    def results(self, images: list, threshold: float | None = None, model: str | None = None) -> list[dict]:
        """Rows as `predict` gives them; boxes scored below `threshold` (default: the run's) left out."""
        if self.detect is not None:
            threshold = self.threshold if threshold is None else threshold
            rows = self.detect(images, threshold=threshold)
            return [{"width": image.width, "height": image.height, **row} for image, row in zip(images, rows)]
        predictor = self.pick(model)
        threshold = getattr(predictor.task, "score_threshold", None) if threshold is None else threshold
        rows = predictor.results(images)
        if threshold is not None:
            rows = [{**row, "boxes": [b for b in row["boxes"] if b.get("score", 1.0) >= threshold]}
                    if isinstance(row.get("boxes"), list) else row for row in rows]
        return rows

    def chat(self, images: list, messages: list[list[dict]], limits: list[int], sampling=None,
             stops: list[list[str]] | None = None, sinks: list | None = None, model: str | None = None) -> list[dict]:
        """One reply per conversation, each with its own token limit and stop strings, in one batch generated
        to the longest limit; each row: text, completion token count, and why it stopped. `sampling`: greedy when
        None (inference/protocol.py's `Sampling`); `sinks[row]` receives the row's text as it is generated."""
        if self.predictor is None:
            raise RequestError(400, "this server runs a dedicated detector: use POST /v1/predict, not chat completions")
        predictor = self.pick(model)
        replies = [Reply(predictor.token_pieces, predictor.end_ids, limit, (stops or [None] * len(limits))[row],
                         (sinks or [None] * len(limits))[row]) for row, limit in enumerate(limits)]
        predictor.generate(images, messages, max_new_tokens=max(limits), sampling=sampling,
                           on_token=lambda row, token: replies[row].add(token))
        return [reply.result() for reply in replies]
