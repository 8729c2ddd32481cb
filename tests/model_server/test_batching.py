"""MicroBatcher with a fake predictor: batch composition, the latency budget, and per-request retries.

A gate (threading.Event) holds the first batch in the predictor, so requests queue up behind
it deterministically; timing assertions only bound waits from below by the budget and from
above by several seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from model_server.batching import MicroBatcher, Row

pytestmark = pytest.mark.anyio


class FakeModel:
    """Records each call's rows; the first call waits for `gate`; a row with `bad` fails its call."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()

    def predict(self, rows: list[Row]) -> list[Row]:
        if not self.calls:
            self.entered.set()
            assert self.gate.wait(10)
        self.calls.append([row["x"] for row in rows])
        if any(row.get("bad") for row in rows):
            raise ValueError("bad row")
        return [{"y": row["x"] * 2} for row in rows]


async def started(fake: FakeModel, **options: Any) -> tuple[MicroBatcher, list[int]]:
    sizes: list[int] = []
    batcher = MicroBatcher(fake.predict, on_batch=sizes.append, **options)
    batcher.start()
    return batcher, sizes


async def hold_first_batch(batcher: MicroBatcher, fake: FakeModel) -> asyncio.Task[list[Row]]:
    first = asyncio.create_task(batcher.submit([{"x": 0}]))
    while not fake.entered.is_set():
        await asyncio.sleep(0.005)
    return first


async def test_a_lone_request_does_not_wait_for_company() -> None:
    fake = FakeModel()
    fake.gate.set()
    batcher, sizes = await started(fake, budget_seconds=5.0)
    began = time.monotonic()
    assert await batcher.submit([{"x": 1}]) == [{"y": 2}]
    assert time.monotonic() - began < 1.0  # far below the 5 s budget
    await batcher.stop()
    assert sizes == [1]


async def test_requests_queued_behind_a_batch_wait_for_more_within_the_budget() -> None:
    fake = FakeModel()
    batcher, sizes = await started(fake, budget_seconds=1.0)
    first = await hold_first_batch(batcher, fake)
    queued = [asyncio.create_task(batcher.submit([{"x": x}])) for x in (1, 2)]
    await asyncio.sleep(0.05)
    fake.gate.set()  # the next batch may now wait up to 1 s after request 1 queued
    await asyncio.sleep(0.1)
    late = asyncio.create_task(batcher.submit([{"x": 3}]))
    assert await first == [{"y": 0}]
    assert [await task for task in (*queued, late)] == [[{"y": 2}], [{"y": 4}], [{"y": 6}]]
    await batcher.stop()
    assert fake.calls == [[0], [1, 2, 3]]
    assert sizes == [1, 3]


async def test_the_wait_never_exceeds_the_budget() -> None:
    fake = FakeModel()
    budget = 0.3
    batcher, _ = await started(fake, budget_seconds=budget)
    first = await hold_first_batch(batcher, fake)
    queued_at = time.monotonic()
    behind = asyncio.create_task(batcher.submit([{"x": 1}]))
    await asyncio.sleep(0.01)
    fake.gate.set()
    await first
    assert await behind == [{"y": 2}]
    waited = time.monotonic() - queued_at
    assert budget - 0.05 <= waited < budget + 5.0  # waited for company, then went alone
    await batcher.stop()
    assert fake.calls == [[0], [1]]


async def test_a_full_batch_runs_without_waiting() -> None:
    fake = FakeModel()
    batcher, sizes = await started(fake, budget_seconds=10.0, max_rows=2)
    first = await hold_first_batch(batcher, fake)
    began = time.monotonic()
    queued = [asyncio.create_task(batcher.submit([{"x": x}])) for x in (1, 2, 3)]
    await asyncio.sleep(0.01)
    fake.gate.set()
    await first
    await asyncio.gather(*queued[:2])
    assert time.monotonic() - began < 5.0  # not the 10 s budget
    queued[2].cancel()
    await batcher.stop()
    assert fake.calls[:2] == [[0], [1, 2]]
    assert sizes[:2] == [1, 2]


async def test_budget_zero_takes_only_what_is_queued() -> None:
    fake = FakeModel()
    batcher, _ = await started(fake, budget_seconds=0.0)
    first = await hold_first_batch(batcher, fake)
    queued = [asyncio.create_task(batcher.submit([{"x": x}])) for x in (1, 2)]
    await asyncio.sleep(0.01)
    fake.gate.set()
    await first
    await asyncio.gather(*queued)
    assert await batcher.submit([{"x": 3}]) == [{"y": 6}]
    await batcher.stop()
    assert fake.calls == [[0], [1, 2], [3]]


async def test_a_failing_batch_is_retried_request_by_request() -> None:
    fake = FakeModel()
    batcher, _ = await started(fake, budget_seconds=0.5)
    first = await hold_first_batch(batcher, fake)
    good = asyncio.create_task(batcher.submit([{"x": 1}]))
    bad = asyncio.create_task(batcher.submit([{"x": 2, "bad": True}]))
    await asyncio.sleep(0.01)
    fake.gate.set()
    await first
    assert await good == [{"y": 2}]
    with pytest.raises(ValueError, match="bad row"):
        await bad
    await batcher.stop()
    assert fake.calls == [[0], [1, 2], [1], [2]]
