"""Kubernetes-style status conditions as a pure merge; no API calls, no clock reads.

Condition types live in the contract (`modeldeploy.contract.status`), reasons in
`modeldeploy.contract.reasons`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from modeldeploy.contract.status import CONDITION_TYPES, Condition, ConditionStatus, find


def parse_conditions(stored: Iterable[Mapping[str, Any]]) -> list[Condition]:
    """The conditions of a stored status; entries that are not conditions (hand-edited) are dropped."""
    conditions = []
    for entry in stored:
        try:
            conditions.append(Condition.model_validate(entry))
        except ValidationError:
            continue
    return conditions


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: str,
    observed_generation: int,
) -> list[Condition]:
    """Return `conditions` with `type_` set, keeping `lastTransitionTime` if the status is unchanged.

    Args:
        conditions: the current conditions (not modified).
        type_: the condition type, e.g. `Ready`.
        status: "True", "False" or "Unknown".
        reason: a CamelCase reason.
        message: one human-readable line.
        now: an RFC 3339 timestamp used when the status changes.
        observed_generation: the spec generation the condition describes.

    Returns:
        A new list, in `CONDITION_TYPES` order first, then any other types as found.
    """
    previous = find(conditions, type_)
    unchanged = previous is not None and previous.status == status
    condition = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=previous.last_transition_time if previous and unchanged else now,
        observed_generation=observed_generation,
    )
    merged = {c.type: c for c in conditions if c.type != type_}
    merged[type_] = condition
    known = [merged.pop(t) for t in CONDITION_TYPES if t in merged]
    return known + list(merged.values())


def transitions(old: list[Condition], new: list[Condition]) -> list[Condition]:
    """Conditions in `new` whose status or reason differs from `old` (what deserves an event)."""
    changed = []
    for condition in new:
        before = find(old, condition.type)
        if before is None or (before.status, before.reason) != (condition.status, condition.reason):
            changed.append(condition)
    return changed
