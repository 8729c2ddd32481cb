"""Comparing two revisions' answers to the same inputs: the canary analysis's `Comparison`.

After the load, each of the first N distinct request bodies is sent once to the target and
once to the baseline, one after the other over keep-alive connections (httpx; the endpoints
of each side in turn). Owns what "a different answer" means: `same_prediction` (pure)
compares `prediction` values with a numeric tolerance, `answers_differ` (pure) compares
outcomes; `compare_answers` is the only code here that does I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import cycle, islice
from typing import Any

import httpx

from modeldeploy.contract.rollout import Comparison
from modeldeploy.loadtest.engine import Endpoint

POLICY_REJECTED = "PolicyRejected"
CHANGING_ACTIONS = frozenset({"override", "clamp"})
_ABSENT = object()  # a 2xx answer without a prediction (not JSON, or another API's shape)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same_prediction(a: Any, b: Any, tolerance: float) -> bool:
    """Whether two decoded JSON values are the same prediction.

    Objects need the same keys and arrays the same length, compared item by item; numbers
    (not booleans) are the same within `tolerance`, absolutely or relatively; anything else
    (strings, booleans, null) must be equal and of the same type.
    """
    if _is_number(a) and _is_number(b):
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_prediction(a[key], b[key], tolerance) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_prediction(x, y, tolerance) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class Answer:
    """One side's answer to one input: its status and decoded body, or None for both on a transport error."""

    status: int | None
    body: Any = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def _results(self) -> list[dict[str, Any]]:
        """The result objects: the body for one input, each item of `predictions` for a batch."""
        if not isinstance(self.body, dict):
            return []
        items = self.body["predictions"] if "predictions" in self.body else [self.body]
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    def prediction(self) -> Any:
        """The `prediction` of a single answer, the list of them of a batch answer."""
        if not isinstance(self.body, dict):
            return _ABSENT
        if "predictions" in self.body:
            return [item.get("prediction") for item in self._results()]
        return self.body.get("prediction", _ABSENT)

    @property
    def rejected(self) -> bool:
        """A policy rejected the input (HTTP 422, type PolicyRejected)."""
        return self.status == 422 and isinstance(self.body, dict) and self.body.get("type") == POLICY_REJECTED

    @property
    def overridden(self) -> bool:
        """A policy overrode or clamped the prediction (of any row of a batch)."""
        return self.status == 200 and any(
            isinstance(applied, dict) and applied.get("action") in CHANGING_ACTIONS
            for item in self._results()
            for applied in item.get("policies") or []
        )


def answers_differ(target: Answer, baseline: Answer, tolerance: float) -> bool:
    """Whether two answers to the same input differ.

    A transport error on either side is a difference; so is a different outcome (one 2xx and
    the other not, or different error statuses), or, both 200, different predictions.
    """
    if target.status is None or baseline.status is None:
        return True
    if target.ok != baseline.ok:
        return True
    if not target.ok:
        return target.status != baseline.status
    if target.status == 200 and baseline.status == 200:
        a, b = target.prediction(), baseline.prediction()
        if a is _ABSENT or b is _ABSENT:
            return a is not b
        return not same_prediction(a, b, tolerance)
    return False


def inputs_to_compare(bodies: Sequence[bytes], count: int) -> list[bytes]:
    """The first `count` distinct bodies, cycling through them when there are fewer."""
    return list(islice(cycle(dict.fromkeys(bodies)), count))


def _ask(client: httpx.Client, path: str, body: bytes) -> Answer:
    try:
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    except httpx.TransportError:
        return Answer(None)
    try:
        return Answer(response.status_code, response.json())
    except ValueError:
        return Answer(response.status_code)


def _clients(stack: ExitStack, endpoints: Sequence[Endpoint], timeout: float) -> Iterator[httpx.Client]:
    """The endpoints' keep-alive clients, round-robin, forever."""
    return cycle([stack.enter_context(httpx.Client(base_url=e.url, timeout=timeout)) for e in endpoints])


def compare_answers(
    target: Sequence[Endpoint],
    baseline: Sequence[Endpoint],
    path: str,
    bodies: Sequence[bytes],
    count: int,
    timeout: float,
    tolerance: float,
) -> Comparison:
    """Send `count` inputs (see `inputs_to_compare`) once to each side, one at a time, and count the differences.

    `rejected` and `overridden` count the target's answers.
    """
    changed = rejected = overridden = 0
    inputs = inputs_to_compare(bodies, count)
    with ExitStack() as stack:
        targets, baselines = _clients(stack, target, timeout), _clients(stack, baseline, timeout)
        for body in inputs:
            mine, theirs = _ask(next(targets), path, body), _ask(next(baselines), path, body)
            changed += answers_differ(mine, theirs, tolerance)
            rejected += mine.rejected
            overridden += mine.overridden
    return Comparison(compared=len(inputs), changed=changed, rejected=rejected, overridden=overridden)
