"""Micro-batching with a latency budget: requests that queue up behind a running batch share the next one.

One consumer task takes everything queued (up to `max_rows`), runs the predictor once in
a worker thread, and hands each request its slice. A request that finds the consumer idle
runs at once (a lone request never waits for company). Requests that queued up while a
batch ran may wait a little longer for more to arrive, until the batch holds `max_rows`
or its oldest request has waited `budget_seconds` (0: take only what is queued, never
wait). A failing batch is retried request by request, so one bad request cannot fail its
neighbours. `on_batch` hears the rows of every predictor call (the batch-size metric).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

Row = dict[str, Any]
PredictFn = Callable[[list[Row]], list[Row]]


class _Pending(NamedTuple):
    rows: list[Row]
    future: asyncio.Future[list[Row]]
    queued_at: float  # time.monotonic()


class MicroBatcher:
    """Serialises calls to `predict` through one worker thread, batching what is queued."""

    def __init__(
        self,
        predict: PredictFn,
        max_rows: int = 256,
        budget_seconds: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.predict = predict
        self.max_rows = max_rows
        self.budget_seconds = budget_seconds
        self.on_batch = on_batch
        self.pending: collections.deque[_Pending] = collections.deque()
        self.arrived = asyncio.Event()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict")
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.executor.shutdown(wait=True)

    async def submit(self, rows: list[Row]) -> list[Row]:
        """Predict `rows`; raises what the predictor raised for these rows."""
        future: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
        self.pending.append(_Pending(rows, future, time.monotonic()))
        self.arrived.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        behind = False  # whether the queued requests arrived while a batch ran
        while True:
            if not self.pending:
                self.arrived.clear()
                await self.arrived.wait()
            batch, size = self._take([], 0)
            if behind and self.budget_seconds > 0:
                batch, size = await self._fill(batch, size, batch[0].queued_at + self.budget_seconds)
            if self.on_batch is not None:
                self.on_batch(size)
            outcomes = await loop.run_in_executor(self.executor, self._predict_batch, [p.rows for p in batch])
            for pending, outcome in zip(batch, outcomes, strict=True):
                if pending.future.done():  # the request was cancelled (client went away)
                    continue
                if isinstance(outcome, BaseException):
                    pending.future.set_exception(outcome)
                else:
                    pending.future.set_result(outcome)
            behind = bool(self.pending)

    def _take(self, batch: list[_Pending], size: int) -> tuple[list[_Pending], int]:
        """Move queued requests into `batch` while it holds fewer than `max_rows`."""
        while self.pending and (not batch or size < self.max_rows):
            item = self.pending.popleft()
            batch.append(item)
            size += len(item.rows)
        return batch, size

    async def _fill(self, batch: list[_Pending], size: int, deadline: float) -> tuple[list[_Pending], int]:
        """Wait for more requests until the batch is full or `deadline` (monotonic) passes."""
        while size < self.max_rows:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except TimeoutError:
                break
            batch, size = self._take(batch, size)
        return batch, size

    def _predict_batch(self, batch: list[list[Row]]) -> list[list[Row] | Exception]:
        """Runs in the worker thread: each request's output rows, or its exception."""
        if len(batch) > 1:
            try:
                outputs = self.predict([row for rows in batch for row in rows])
            except Exception:  # retried one by one below, to find the request at fault
                pass
            else:
                ends = list(itertools.accumulate(len(rows) for rows in batch))
                return [outputs[end - len(rows) : end] for rows, end in zip(batch, ends, strict=True)]
        outcomes: list[list[Row] | Exception] = []
        for rows in batch:
            try:
                outcomes.append(self.predict(rows))
            except Exception as err:  # handed to the waiting request
                outcomes.append(err)
        return outcomes
