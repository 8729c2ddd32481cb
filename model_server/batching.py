"""Opportunistic micro-batching: requests that arrive while a batch runs share the next one.

One consumer task takes everything queued (up to `max_rows`), runs the predictor once in
a worker thread, and hands each request its slice. An idle server adds no waiting; a busy
one amortises the model's per-call overhead. A failing batch is retried request by
request, so one bad request cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]
PredictFn = Callable[[list[Row]], list[Row]]


class MicroBatcher:
    """Serialises calls to `predict` through one worker thread, batching what is queued."""

    def __init__(self, predict: PredictFn, max_rows: int = 256) -> None:
        self.predict = predict
        self.max_rows = max_rows
        self.queue: asyncio.Queue[tuple[list[Row], asyncio.Future[list[Row]]]] = asyncio.Queue()
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
        self.queue.put_nowait((rows, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0][0])
            while size < self.max_rows and not self.queue.empty():
                item = self.queue.get_nowait()
                batch.append(item)
                size += len(item[0])
            outcomes = await loop.run_in_executor(self.executor, self._predict_batch, [rows for rows, _ in batch])
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # the request was cancelled (client went away)
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

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
