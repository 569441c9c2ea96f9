"""`visiontune serve` measured on loopback, one of three ways (`--measure`):

- load (default): dynamic batching against one request at a time, side by side. Each side starts its own
  server on the same model (`--max-batch 1` is one request at a time; the other uses `--max-batch`), then
  `--clients` concurrent httpx clients post images to /v1/predict for `--seconds`. Reports requests/s,
  p50/p99 latency, errors, the mean batch size (from /metrics) and the server's memory before/after.
- streaming: one chat request at a time with `stream=true` and `max_tokens` 64: the time to the first text
  chunk against the time to the whole reply (median of `--repeats`).
- adapters: one server with every `--adapter NAME=RUN` over `--model` against one server per run, the
  resident memory of each after a request to every model it serves.

    visiontune tiny-model --family smolvlm --output /tmp/tiny-smolvlm
    python benchmarks/serve_load.py --model /tmp/tiny-smolvlm --clients 32 --seconds 30
    python benchmarks/serve_load.py --measure streaming --model runs/quickstart/composed  # talks on for 64 tokens
    python benchmarks/serve_load.py --measure adapters --model BASE --adapter a=RUN_A --adapter b=RUN_B
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _start(model: str, port: int, max_batch: int, *more: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "visiontune", "serve", "--model", model, "--port", str(port),
               "--max-batch", str(max_batch), "--max-wait-ms", "10", *more]
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


def _measure_load(args, images: list[bytes]) -> None:
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


def _streamed_reply(url: str, image: bytes, max_tokens: int) -> tuple[float, float, int]:
    """(seconds to the first text chunk, seconds to the end, chunks) of one streamed chat request."""
    data_url = "data:image/png;base64," + base64.b64encode(image).decode()
    body = {"stream": True, "max_tokens": max_tokens, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": "Describe this image."}]}]}
    started, first, chunks = time.perf_counter(), None, 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if json.loads(line[6:])["choices"][0]["delta"].get("content"):
                first = first if first is not None else time.perf_counter() - started
                chunks += 1
    return first, time.perf_counter() - started, chunks


def _measure_streaming(args, images: list[bytes]) -> None:
    process = _start(args.model, args.port, 1)
    url = f"http://127.0.0.1:{args.port}"
    try:
        _streamed_reply(url, images[0], args.max_tokens)  # warm-up
        runs = [_streamed_reply(url, images[i % len(images)], args.max_tokens) for i in range(args.repeats)]
    finally:
        process.terminate()
        process.wait(timeout=30)
    first, total = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    print(json.dumps({"model": args.model, "max_tokens": args.max_tokens, "repeats": args.repeats,
                      "chunks": [r[2] for r in runs], "first_chunk_ms": round(1000 * first, 1),
                      "whole_reply_ms": round(1000 * total, 1), "first_over_whole": round(first / total, 3)},
                     indent=1))


def _rss_after_requests(model: str, port: int, names: list[str | None], image: bytes, *more: str) -> int:
    """The server's resident memory after one /v1/predict to each of `names` (None: the default model)."""
    process = _start(model, port, 1, *more)
    try:
        for name in names:
            query = f"?model={name}" if name else ""
            response = httpx.post(f"http://127.0.0.1:{port}/v1/predict{query}",
                                  files={"file": ("x.png", image, "image/png")}, timeout=600)
            response.raise_for_status()
        return _rss(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _measure_adapters(args, images: list[bytes]) -> None:
    adapters = dict(item.split("=", 1) for item in args.adapter)
    flags = [flag for name, run in adapters.items() for flag in ("--adapter", f"{name}={run}")]
    together = _rss_after_requests(args.model, args.port, list(adapters), images[0], *flags)
    alone = {name: _rss_after_requests(run, args.port, [None], images[0]) for name, run in adapters.items()}
    print(json.dumps({"model": args.model, "adapters": adapters, "one_server_mb": round(together / 2**20),
                      "one_server_per_run_mb": {k: round(v / 2**20) for k, v in alone.items()},
                      "ratio_to_the_sum": round(together / sum(alone.values()), 3)}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--measure", default="load", choices=["load", "streaming", "adapters"])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64, help="streaming: tokens per reply")
    parser.add_argument("--repeats", type=int, default=5, help="streaming: requests measured")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=RUN", help="adapters: the runs")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    measure = {"load": _measure_load, "streaming": _measure_streaming, "adapters": _measure_adapters}[args.measure]
    measure(args, _images())


if __name__ == "__main__":
    main()
