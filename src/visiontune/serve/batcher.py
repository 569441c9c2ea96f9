"""Dynamic batching: concurrent requests wait up to `max_wait_ms` for company, then run as one batch of at most
`max_batch` on the one model copy (a single worker thread, so the model is never called concurrently).

Requests are grouped by a key (prediction rows at one threshold, chat replies drawn one way: greedy or one
sampling setting), since only requests of one key can share a forward pass.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Pending:
    key: Hashable
    item: Any
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    def __init__(self, run: Callable[[Hashable, list], list], max_batch: int = 8, max_wait_ms: float = 10.0,
                 on_batch: Callable[[int], None] | None = None):
        """`run(key, items)` returns one result per item, in order; it runs on the worker thread."""
        self.run, self.max_batch, self.max_wait = run, max(1, max_batch), max_wait_ms / 1000
        self.on_batch = on_batch or (lambda size: None)
        self.queue: asyncio.Queue[_Pending] | None = None
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="visiontune-model")
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.worker.shutdown(wait=False, cancel_futures=True)

    async def submit(self, key: Hashable, item: Any) -> Any:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(key, item, future))
        return await future

    async def _loop(self) -> None:
        held: list[_Pending] = []  # requests of another key than the batch being gathered
        while True:
            first = held.pop(0) if held else await self.queue.get()
            batch, deadline = [first], first.queued + self.max_wait
            while len(batch) < self.max_batch:
                same = next((p for p in held if p.key == first.key), None)
                if same is not None:
                    held.remove(same)
                    batch.append(same)
                    continue
                try:  # whatever is already waiting joins at once, even past the deadline
                    pending = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        pending = await asyncio.wait_for(self.queue.get(), remaining)
                    except TimeoutError:
                        break
                (batch if pending.key == first.key else held).append(pending)
            await self._run(first.key, batch)

    async def _run(self, key: Hashable, batch: list[_Pending]) -> None:
        self.on_batch(len(batch))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.worker, self.run, key, [p.item for p in batch])
        except Exception as error:  # noqa: BLE001 (one bad batch fails its own requests, never the server)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)
            return
        for pending, result in zip(batch, results):
            if not pending.future.done():
                pending.future.set_result(result)
