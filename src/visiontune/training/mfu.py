"""Model FLOPs utilisation: the FLOPs a training step does, counted by `torch.utils.flop_counter` on one batch
after training (forward + backward as training runs it, feature cache included; per token), times the run's
tokens per second, over the matmul peak measured on the same device in the same run (fp32 sgemm on a CPU,
bf16 on a GPU). Counting after training, with its own random generator for the peak, leaves the run itself
untouched. Throughput alone does not say how far from the hardware a run is; this does."""

from __future__ import annotations

import time

import torch


def matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype | None = None, seconds: float = 0.5) -> dict:
    """The best FLOP/s of square matmuls on this device (n = 1024 on a CPU, 8192 on a GPU)."""
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    n = 8192 if device.type == "cuda" else 1024
    generator = torch.Generator(device).manual_seed(0)  # its own: measuring must not move training's random state
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    best, deadline = 0.0, time.perf_counter() + seconds
    while True:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 4 * 2 * n ** 3 / (time.perf_counter() - start))
        if time.perf_counter() > deadline:
            break
    return {"flops_per_second": best, "dtype": str(dtype).replace("torch.", ""), "size": n}


def flops_per_token(model, batch: dict, loss_fn) -> float:
    """Forward + backward FLOPs of `loss_fn(model, batch)` per non-padding token; gradients are cleared after."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = loss_fn(model, batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / max(int(batch["attention_mask"].sum()), 1)


def mfu_summary(flops_per_token: float | None, tokens_per_second: float, peak: dict | None) -> dict:
    if flops_per_token is None or peak is None:
        return {}
    achieved = flops_per_token * tokens_per_second
    return {"flops_per_token": round(flops_per_token), "achieved_flops_per_second": round(achieved),
            "matmul_peak_flops_per_second": round(peak["flops_per_second"]), "matmul_peak_dtype": peak["dtype"],
            "mfu": round(achieved / peak["flops_per_second"], 4)}
