"""Greedy dynamic batching for asyncio servers (plain asyncio; no Ray).

``@serve.batch`` waits up to ``batch_wait_timeout_s`` for a batch to fill, so a lone request pays the timeout.
:class:`GreedyBatcher` never waits: a request that finds the worker idle runs at once, alone; requests that
arrive while a batch is running queue up and go together as the next batch. Under light load that is
single-request latency, under heavy load the batches grow by themselves to ``max_batch_size``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Generic, Sequence, TypeVar

__all__ = ["GreedyBatcher"]

In = TypeVar("In")
Out = TypeVar("Out")


class GreedyBatcher(Generic[In, Out]):
    """``await batcher(item)`` -> ``fn([..., item, ...])[i]``, with ``fn`` run in a worker thread on batches.

    ``fn`` takes a list of items and returns a sequence of as many results, in order. One batch runs at a
    time per batcher (one model / index per replica: running two at once would only split the same cores).
    An exception from ``fn`` is raised to every caller of that batch; a caller that gives up (cancelled)
    leaves the others unaffected.
    """

    def __init__(self, fn: Callable[[list[In]], Sequence[Out]], max_batch_size: int = 16):
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self._pending: list[tuple[In, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self.batches = 0
        self.items = 0
        self.max_seen_batch = 0

    async def __call__(self, item: In) -> Out:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch_size]
            del self._pending[: len(batch)]
            batch = [(item, f) for item, f in batch if not f.done()]  # callers that were cancelled while queued
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            except Exception as e:  # noqa: BLE001 - handed to the callers of this batch
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.batches += 1
            self.items += len(batch)
            self.max_seen_batch = max(self.max_seen_batch, len(batch))
            for (_, f), result in zip(batch, results):
                if not f.done():
                    f.set_result(result)

    def stats(self) -> dict[str, Any]:
        return {"batches": self.batches, "items": self.items, "max_batch": self.max_seen_batch,
                "queued": len(self._pending)}
