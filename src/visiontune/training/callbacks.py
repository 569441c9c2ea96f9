"""Training callbacks: throughput and peak memory, curves at the end."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


def peak_memory_bytes() -> dict:
    if torch.cuda.is_available():
        return {"device": "cuda", "peak_bytes": int(torch.cuda.max_memory_allocated())}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"device": "cpu", "peak_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}


class ThroughputCallback(TrainerCallback):
    """Counts samples and non-padding tokens actually trained on; writes summary.json at the end."""

    def __init__(self, output_dir: str | Path):
        self.output_dir = Path(output_dir)
        self.samples = 0
        self.tokens = 0
        self.seconds = 0.0
        self._step_start = None

    def count_batch(self, batch: dict) -> None:
        self.samples += int(batch["input_ids"].shape[0])
        self.tokens += int(batch["attention_mask"].sum())

    def on_step_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._step_start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if self._step_start is not None:
            self.seconds += time.perf_counter() - self._step_start

    def summary(self, state) -> dict:
        seconds = max(self.seconds, 1e-9)
        losses = [e["loss"] for e in state.log_history if "loss" in e]
        evals = [e["eval_loss"] for e in state.log_history if "eval_loss" in e]
        return {"steps": state.global_step, "samples": self.samples, "tokens": self.tokens,
                "train_seconds": round(self.seconds, 3), "samples_per_second": round(self.samples / seconds, 3),
                "tokens_per_second": round(self.tokens / seconds, 1), "final_train_loss": losses[-1] if losses else None,
                "best_eval_loss": min(evals) if evals else None, **peak_memory_bytes()}

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "summary.json").write_text(json.dumps(self.summary(state), indent=2))
