"""What local-peak decoding (`peaks.py`) costs next to the forward pass, side by side on the same outputs.

One forward pass of a fresh detector (weights do not change the cost) on random pixels, then the decoding
(`Detector.top_detections`) timed with the peaks (the default window) and with the plain top-k
(`peak_window` 0). Printed: milliseconds per batch for the forward pass and both decodings, and the peaks'
share of the whole. On a GPU pass --device cuda --bf16 --batch 32.

    python benchmarks/detector_peak_cost.py [--backbone dinov2-small] [--size 640] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from visiontune.models.detector.model import Detector


def milliseconds(step, device: torch.device, repeats: int) -> float:
    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeats * 1000


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="dinov2-small", help="hub id, folder or zoo name")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--forward-repeats", type=int, default=1)
    parser.add_argument("--decode-repeats", type=int, default=20)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device(args.device)
    detector = Detector.create([f"class{i}" for i in range(args.classes)], backbone=args.backbone,
                               log=lambda *_: None).to(device).eval()
    pixels = torch.rand(args.batch, 3, args.size, args.size, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
        outputs = detector(pixels)
        forward = milliseconds(lambda: detector(pixels), device, args.forward_repeats)
        window = detector.config.peak_window
        peaks = milliseconds(lambda: detector.top_detections(outputs, peak_window=window), device, args.decode_repeats)
        plain = milliseconds(lambda: detector.top_detections(outputs, peak_window=0), device, args.decode_repeats)
    row = {"device": str(device), "bf16": args.bf16, "batch": args.batch, "size": args.size,
           "positions": outputs["logits"].shape[1], "forward_ms": round(forward, 2),
           f"decode_peaks{window}_ms": round(peaks, 3), "decode_plain_ms": round(plain, 3),
           "peaks_share_of_total": round((peaks - plain) / (forward + plain), 5)}
    print(json.dumps(row))


if __name__ == "__main__":
    main()
