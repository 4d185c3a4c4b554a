"""GreedyBatcher: no wait for a lone request, batches that grow under load, errors and cancellation per batch."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from ray_sbir.serving.batching import GreedyBatcher


def test_a_lone_request_runs_at_once_alone():
    calls = []

    def fn(items):
        calls.append(list(items))
        return [x * 2 for x in items]

    async def main():
        b = GreedyBatcher(fn, max_batch_size=8)
        t0 = time.perf_counter()
        out = [await b(i) for i in range(5)]  # one after another: never batched, never delayed
        return out, time.perf_counter() - t0, b.stats()

    out, wall, stats = asyncio.run(main())
    assert out == [0, 2, 4, 6, 8]
    assert calls == [[0], [1], [2], [3], [4]]
    assert stats == {"batches": 5, "items": 5, "max_batch": 1, "queued": 0}
    assert wall < 1.0  # no batch timer (each call is a thread hop, milliseconds)


def test_requests_arriving_during_a_batch_go_together_up_to_the_limit():
    release = threading.Event()
    calls = []

    def fn(items):
        if not calls:
            release.wait(10)  # the first batch blocks until the others have queued
        calls.append(list(items))
        return [f"r{x}" for x in items]

    async def main():
        b = GreedyBatcher(fn, max_batch_size=4)
        first = asyncio.create_task(b(0))
        await asyncio.sleep(0.05)
        rest = [asyncio.create_task(b(i)) for i in range(1, 10)]
        await asyncio.sleep(0.05)
        release.set()
        return await first, await asyncio.gather(*rest), b.stats()

    first, rest, stats = asyncio.run(main())
    assert first == "r0" and rest == [f"r{i}" for i in range(1, 10)]  # each caller gets its own result
    assert calls == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]
    assert stats["max_batch"] == 4 and stats["items"] == 10 and stats["batches"] == 4


def test_an_error_reaches_the_callers_of_its_batch_only():
    def fn(items):
        if "bad" in items:
            raise ValueError("bad item in batch")
        return [x.upper() for x in items]

    async def main():
        b = GreedyBatcher(fn, max_batch_size=2)
        with pytest.raises(ValueError, match="bad item"):
            await b("bad")
        assert await b("ok") == "OK"  # the batcher keeps working
        wrong = GreedyBatcher(lambda items: [], max_batch_size=2)
        with pytest.raises(RuntimeError, match="0 results for 1 items"):
            await wrong("x")

    asyncio.run(main())


def test_a_cancelled_caller_does_not_disturb_the_others():
    release = threading.Event()
    seen = []

    def fn(items):
        if not seen:
            release.wait(10)
        seen.append(list(items))
        return list(items)

    async def main():
        b = GreedyBatcher(fn, max_batch_size=8)
        first = asyncio.create_task(b("a"))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(b("gone"))
        kept = asyncio.create_task(b("kept"))
        await asyncio.sleep(0.05)
        gone.cancel()  # e.g. the HTTP client disconnected while queued
        release.set()
        return await first, await kept

    assert asyncio.run(main()) == ("a", "kept")
    assert seen == [["a"], ["kept"]]  # the cancelled item was never computed


def test_max_batch_size_is_checked():
    with pytest.raises(ValueError, match="max_batch_size"):
        GreedyBatcher(lambda x: x, max_batch_size=0)
