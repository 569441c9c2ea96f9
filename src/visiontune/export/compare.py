"""An export's variants scored beside the PyTorch model they came from, on the same evaluation data."""

from __future__ import annotations


def compare_metrics(sides: dict[str, tuple[str, str]], data: str, split: str | None, count: int, log) -> dict:
    """{side: the task's metrics} for each side's (model path, dtype): the PyTorch run and each exported variant."""
    from ..api.evaluate import evaluate
    from ..config import EvalConfig

    results = {}
    for side, (path, dtype) in sides.items():
        metrics = evaluate(EvalConfig(model=path, data=data, split=split, max_samples=count, dtype=dtype),
                           log=lambda *_: None)
        results[side] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        log(f"{side}: " + ", ".join(f"{k} {v:.4f}" for k, v in results[side].items() if isinstance(v, float)))
    return results
