"""`visiontune serve` under load: dynamic batching against one request at a time, side by side, on loopback.

Each side starts its own server on the same model (`--max-batch 1` is one request at a time; the other uses
`--max-batch`), then `--clients` concurrent httpx clients post images to /v1/predict for `--seconds`. Reports
requests/s, p50/p99 latency, errors, the mean batch size (from /metrics) and the server's memory before/after.
    visiontune tiny-model --family smolvlm --output /tmp/tiny-smolvlm
    python benchmarks/serve_load.py --model /tmp/tiny-smolvlm --clients 32 --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _start(model: str, port: int, max_batch: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "visiontune", "serve", "--model", model, "--port", str(port),
               "--max-batch", str(max_batch), "--max-wait-ms", "10"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _images() -> list[bytes]:
    import random

    from visiontune.data.builtin.shapes import draw_shape

    images = []
    for seed, (shape, colour) in enumerate([("circle", "red"), ("square", "blue"), ("triangle", "green"),
                                            ("circle", "yellow"), ("square", "red"), ("triangle", "blue")]):
        buffer = io.BytesIO()
        draw_shape(shape, colour, "white", size=96, rng=random.Random(seed)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


async def _load(url: str, clients: int, seconds: float, images: list[bytes]) -> dict:
    latencies, errors = [], 0
    stop = time.perf_counter() + seconds

    async def client(http: httpx.AsyncClient, index: int) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            response = await http.post(f"{url}/v1/predict",
                                       files={"file": ("x.png", images[index % len(images)], "image/png")})
            latencies.append(time.perf_counter() - started)
            errors += response.status_code != 200
            index += clients

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http, i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(latencies), "errors": errors, "requests_per_second": round(len(latencies) / elapsed, 2),
            "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)}


def _mean_batch(url: str) -> float:
    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(("visiontune_batch_size_sum", "visiontune_batch_size_count")):
            values[line.split()[0]] = float(line.split()[1])
    return round(values["visiontune_batch_size_sum"] / max(1.0, values["visiontune_batch_size_count"]), 2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    images = _images()
    results = {}
    for side, max_batch in (("one request at a time", 1), (f"dynamic batching (max {args.max_batch})", args.max_batch)):
        process = _start(args.model, args.port, max_batch)
        url = f"http://127.0.0.1:{args.port}"
        try:
            asyncio.run(_load(url, args.clients, 3, images))  # warm-up
            before = _rss(process.pid)
            result = asyncio.run(_load(url, args.clients, args.seconds, images))
            result.update(mean_batch=_mean_batch(url), rss_mb_before=round(before / 2**20),
                          rss_mb_after=round(_rss(process.pid) / 2**20))
        finally:
            process.terminate()
            process.wait(timeout=30)
        results[side] = result
        print(side, json.dumps(result), flush=True)
    one, batched = results.values()
    print(json.dumps({"model": args.model, "clients": args.clients, "seconds": args.seconds, **results,
                      "throughput_ratio": round(batched["requests_per_second"] / one["requests_per_second"], 2)},
                     indent=1))


if __name__ == "__main__":
    main()
