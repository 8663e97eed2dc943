"""Dynamic batching: concurrent requests are queued and run together, each caller gets its own rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


class BatchFailed(RuntimeError):
    """The model failed on the batch this request was part of."""


@dataclass(kw_only=True)
class _Item:
    images: np.ndarray
    future: asyncio.Future[np.ndarray]


class Batcher:
    """Runs queued image batches together, up to `max_batch` images, in one model call.

    It never waits for nobody: a request that finds the model idle and alone runs at once; what arrives while the
    model is busy queues and runs together in the next call. Only while calls carry several requests (others are
    arriving) does a batch wait, at most `max_delay_ms`, for more. `infer` runs in worker threads so the event loop
    keeps accepting requests meanwhile: one at a time, or up to `in_flight` batches at once for an engine that runs
    several together (OpenVINO's THROUGHPUT mode); a batch is formed only when a worker can take it. One request
    larger than `max_batch` runs as a batch of its own (it is never split or reordered).
    """

    def __init__(
        self,
        infer: Callable[[np.ndarray], np.ndarray],
        max_batch: int = 64,
        max_delay_ms: float = 2.0,
        on_batch: Callable[[int, float], None] | None = None,
        *,
        in_flight: int = 1,
    ):
        self.infer = infer
        self.max_batch = max(1, int(max_batch))
        self.max_delay = max(0.0, max_delay_ms) / 1000.0
        self.on_batch = on_batch
        self.queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self.in_flight = max(1, int(in_flight))
        self._pool = ThreadPoolExecutor(max_workers=self.in_flight, thread_name_prefix="cnnkit-infer")
        self._slots = asyncio.Semaphore(self.in_flight)  # batches the workers may still take
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.queued_images = 0
        self._last_requests = 0  # requests in the last model call: more than one means others are arriving

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish everything already queued, then stop."""
        if self._task is not None:
            await self.queue.put(None)
            await self._task
            self._task = None
        self._pool.shutdown(wait=True)

    async def submit(self, images: np.ndarray) -> np.ndarray:
        fut = asyncio.get_running_loop().create_future()
        self.queued_images += len(images)
        await self.queue.put(_Item(images=images, future=fut))
        result: np.ndarray = await fut
        return result

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        pending: _Item | None = None
        stopping = False
        while not stopping:
            await self._slots.acquire()  # a batch is formed when a worker can run it: what arrives meanwhile joins
            first = pending or await self.queue.get()
            pending = None
            if first is None:
                self._slots.release()
                break
            items, count = [first], len(first.images)
            linger = self.max_delay if self._last_requests > 1 else 0.0  # wait for company only under load
            deadline = loop.time() + linger
            while count < self.max_batch:
                try:
                    nxt = (
                        self.queue.get_nowait()
                        if linger == 0
                        else await asyncio.wait_for(self.queue.get(), timeout=max(0.0, deadline - loop.time()))
                    )
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if nxt is None:
                    stopping = True
                    break
                if count + len(nxt.images) > self.max_batch:
                    pending = nxt  # starts the next batch; keeps arrival order
                    break
                items.append(nxt)
                count += len(nxt.images)
            self._last_requests = len(items)
            self._dispatch(loop, items, count)
        if pending is not None:
            await self._slots.acquire()
            self._dispatch(loop, [pending], len(pending.images))
        await asyncio.gather(*self._running)

    def _dispatch(self, loop: asyncio.AbstractEventLoop, items: list[_Item], count: int) -> None:
        """Run the batch in a worker; its slot is freed when it is done."""
        task = loop.create_task(self._run(loop, items, count))
        self._running.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._running.discard(t)
            self._slots.release()

        task.add_done_callback(done)

    async def _run(self, loop: asyncio.AbstractEventLoop, items: list[_Item], count: int) -> None:
        self.queued_images -= count
        batch = items[0].images if len(items) == 1 else np.concatenate([i.images for i in items])
        t0 = time.perf_counter()
        try:
            out = await loop.run_in_executor(self._pool, self.infer, batch)
        except Exception as exc:  # only this batch's callers see the failure
            for it in items:
                if not it.future.done():
                    it.future.set_exception(BatchFailed(f"inference failed: {exc}"))
            return
        if self.on_batch:
            self.on_batch(count, time.perf_counter() - t0)
        start = 0
        for it in items:
            n = len(it.images)
            if not it.future.done():
                it.future.set_result(out[start : start + n])
            start += n
