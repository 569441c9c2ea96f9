"""Training callbacks: throughput and peak memory, the progress bar with images/s, curves at the end."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback


def peak_memory_bytes() -> dict:
    if torch.cuda.is_available():
        return {"device": "cuda", "peak_bytes": int(torch.cuda.max_memory_allocated())}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"device": "cpu", "peak_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}


class ThroughputCallback(TrainerCallback):
    """Counts samples and non-padding tokens trained on, and each optimizer step's loss and learning rate (every
    step, whatever --logging-steps says), for the run's summary and curves. Under several processes the counts
    are summed over them, and the rates are over the whole run's wall time."""

    def __init__(self, output_dir: str | Path):
        self.output_dir = Path(output_dir)
        self.samples = 0
        self.tokens = 0
        self.seconds = 0.0
        self.steps: list[dict] = []  # {"step", "loss", "learning_rate"} per optimizer step
        self._losses: list[float] = []  # the current step's micro-batch losses
        self._logging_steps = 1
        self._started = None

    def count_batch(self, batch: dict) -> None:
        self.samples += int(batch["input_ids"].shape[0])
        self.tokens += int(batch["attention_mask"].sum())

    def count_loss(self, loss: torch.Tensor) -> None:
        """A micro-batch's loss, as the trainer scales it for the optimizer step (its parts sum to the step's)."""
        self._losses.append(loss.detach())

    def on_train_begin(self, args, state, control, **kwargs):
        self._logging_steps = max(1, int(args.logging_steps)) if args.logging_steps >= 1 else 1
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
        if self._losses:
            rate = lr_scheduler.get_last_lr()[0] if lr_scheduler is not None else None
            loss = float(torch.stack(self._losses).float().sum())  # one device sync a step
            self.steps.append({"step": state.global_step, "loss": loss, "learning_rate": rate})
        self._losses = []

    def _global(self, *values: float) -> list[float]:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return list(values)
        summed = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(summed)
        return summed.tolist()

    def summary(self, state) -> dict:
        """The run's counts and rates; call it on every process (the counts are summed over them)."""
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = self.seconds or (time.perf_counter() - self._started if self._started else 0.0)
        samples, tokens = (int(v) for v in self._global(self.samples, self.tokens))
        last = [entry["loss"] for entry in self.steps[-self._logging_steps:]]  # the last logging window
        evals = [e["eval_loss"] for e in state.log_history if "eval_loss" in e]
        seconds = max(seconds, 1e-9)
        return {"steps": state.global_step, "samples": samples, "tokens": tokens,
                "train_seconds": round(seconds, 3), "samples_per_second": round(samples / seconds, 3),
                "tokens_per_second": round(tokens / seconds, 1),
                "final_train_loss": round(sum(last) / len(last), 4) if last else None,
                "best_eval_loss": min(evals) if evals else None, **peak_memory_bytes()}

    def on_train_end(self, args, state, control, **kwargs):
        self.seconds = time.perf_counter() - self._started if self._started else 0.0


class ImagesProgressCallback(ProgressCallback):
    """Transformers' progress bar (steps, elapsed, time left), with the images per second trained on so far."""

    def __init__(self, throughput: ThroughputCallback):
        super().__init__()
        self.throughput = throughput

    def on_step_end(self, args, state, control, **kwargs):
        super().on_step_end(args, state, control, **kwargs)
        started = self.throughput._started
        if self.training_bar is not None and started is not None:
            rate = self.throughput.samples / max(time.perf_counter() - started, 1e-9)
            self.training_bar.set_postfix_str(f"{rate:.1f} images/s", refresh=False)
