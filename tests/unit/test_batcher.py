"""The dynamic batcher's policy with a stand-in model: no server, no session, no sleeps (the stand-in blocks on
an event, so requests queue while it is busy)."""

import asyncio
import threading

import numpy as np
import pytest

from cnnkit.serve.batching import Batcher, BatchFailed


class Model:
    """Returns each image's first pixel as its one logit; records every batch; can be held busy."""

    def __init__(self):
        self.batches: list[int] = []
        self.release = threading.Event()
        self.release.set()
        self.busy = threading.Event()
        self.fail_at: int | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.busy.set()
        self.release.wait(10)
        self.batches.append(len(x))
        if self.fail_at is not None and len(self.batches) == self.fail_at:
            raise RuntimeError("boom")
        return x.reshape(len(x), -1)[:, :1].astype(np.float32)


def images(*values: int) -> np.ndarray:
    return np.array(values, np.uint8).reshape(-1, 1, 1, 1)


def run(coro):
    return asyncio.run(coro)


async def _while_busy(model: Model, batcher: Batcher, requests: list[np.ndarray]):
    """Hold the model busy on a first request, queue `requests` meanwhile, then let it go."""
    model.release.clear()
    model.busy.clear()
    first = asyncio.ensure_future(batcher.submit(images(0)))
    await asyncio.get_running_loop().run_in_executor(None, model.busy.wait, 10)
    rest = [asyncio.ensure_future(batcher.submit(r)) for r in requests]
    while batcher.queue.qsize() < len(requests):  # every request is queued (the loop has had its turn)
        await asyncio.sleep(0)
    model.release.set()
    return await first, await asyncio.gather(*rest, return_exceptions=True)


def test_requests_queued_while_the_model_is_busy_run_together_in_order():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=8, max_delay_ms=0)
        batcher.start()
        out = await _while_busy(model, batcher, [images(1, 2), images(3), images(4, 5, 6)])
        await batcher.stop()
        return out

    first, rest = run(main())
    assert model.batches == [1, 6]  # the queued three became one call
    assert [r.ravel().tolist() for r in rest] == [[1, 2], [3], [4, 5, 6]]  # each caller its own rows
    assert first.ravel().tolist() == [0]


def test_a_batch_never_exceeds_max_batch_and_a_large_request_runs_alone():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=4, max_delay_ms=0)
        batcher.start()
        out = await _while_busy(model, batcher, [images(1, 2, 3), images(4, 5), images(*range(6))])
        await batcher.stop()
        return out

    _, rest = run(main())
    assert model.batches == [1, 3, 2, 6]  # 3+2 > 4: split in arrival order; 6 > 4 is never cut
    assert rest[2].ravel().tolist() == list(range(6))


def test_a_failed_call_fails_only_its_own_requests():
    model = Model()
    model.fail_at = 2

    async def main():
        batcher = Batcher(model, max_batch=2, max_delay_ms=0)
        batcher.start()
        out = await _while_busy(model, batcher, [images(1, 2), images(3, 4)])
        await batcher.stop()
        return out

    _, (failed, ok) = run(main())
    assert isinstance(failed, BatchFailed) and "boom" in str(failed)
    assert ok.ravel().tolist() == [3, 4]


def test_an_idle_batcher_with_no_delay_runs_a_lone_request_at_once():
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=64, max_delay_ms=0)
        batcher.start()
        out = await batcher.submit(images(7))
        await batcher.stop()
        return out

    assert run(main()).ravel().tolist() == [7] and model.batches == [1]


def test_a_lone_request_never_waits_out_the_delay():
    """At one client there is nobody to wait for: with a 60 s max delay, lone requests still run at once (the
    batcher's delay applies only while calls carry several requests)."""
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=64, max_delay_ms=60_000)
        batcher.start()
        outs = [await asyncio.wait_for(batcher.submit(images(i)), timeout=10) for i in range(3)]
        await batcher.stop()
        return outs

    assert [o.item() for o in run(main())] == [0, 1, 2] and model.batches == [1, 1, 1]


@pytest.mark.parametrize("max_batch", [1, 3])
def test_stop_finishes_what_is_queued(max_batch):
    model = Model()

    async def main():
        batcher = Batcher(model, max_batch=max_batch, max_delay_ms=0)
        batcher.start()
        futures = [asyncio.ensure_future(batcher.submit(images(i))) for i in range(5)]
        await asyncio.sleep(0)
        await batcher.stop()
        return [f.result().item() for f in futures]

    assert run(main()) == [0, 1, 2, 3, 4] and sum(model.batches) == 5


class Gate:
    """A stand-in engine that counts the batches running in it at once and holds each until released."""

    def __init__(self):
        self.running = self.most = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        self.entered.release()
        self.release.wait(10)
        with self.lock:
            self.running -= 1
        return x.reshape(len(x), -1)[:, :1].astype(np.float32)


@pytest.mark.parametrize("in_flight", [1, 2])
def test_an_engine_that_takes_batches_in_flight_gets_that_many_at_once_and_no_more(in_flight):
    engine = Gate()

    async def main():
        batcher = Batcher(engine, max_batch=1, max_delay_ms=0, in_flight=in_flight)
        batcher.start()
        calls = [asyncio.ensure_future(batcher.submit(images(i))) for i in range(5)]
        loop = asyncio.get_running_loop()
        for _ in range(in_flight):  # as many batches as the engine takes reach it while none is done
            assert await loop.run_in_executor(None, engine.entered.acquire, True, 10)
        await asyncio.sleep(0.05)
        running = engine.running
        engine.release.set()
        out = await asyncio.gather(*calls)
        await batcher.stop()
        return running, out

    running, out = run(main())
    assert running == in_flight and engine.most == in_flight  # never more in the engine than it takes
    assert [o.ravel().tolist() for o in out] == [[float(i)] for i in range(5)]  # each caller its own rows
