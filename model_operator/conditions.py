"""Kubernetes-style status conditions as a pure merge; no API calls, no clock reads.

Condition types and reasons are CamelCase constants so users (and tests) can match on them.
"""

from __future__ import annotations

from typing import Any

Condition = dict[str, Any]

PARAMETERS_VERIFIED = "ParametersVerified"
AVAILABLE = "Available"
PROGRESSING = "Progressing"
READY = "Ready"

TYPES = (PARAMETERS_VERIFIED, AVAILABLE, PROGRESSING, READY)


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: str,
    observed_generation: int | None = None,
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
        A new list, in `TYPES` order first, then any other types as found.
    """
    previous = find(conditions, type_)
    unchanged = previous is not None and previous.get("status") == status
    condition: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": previous.get("lastTransitionTime", now) if previous and unchanged else now,
    }
    if observed_generation is not None:
        condition["observedGeneration"] = observed_generation
    merged = {c["type"]: c for c in conditions if c.get("type") != type_}
    merged[type_] = condition
    known = [merged.pop(t) for t in TYPES if t in merged]
    return known + list(merged.values())


def find(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of `type_`, or None."""
    return next((c for c in conditions if c.get("type") == type_), None)


def transitions(old: list[Condition], new: list[Condition]) -> list[Condition]:
    """Conditions in `new` whose status or reason differs from `old` (what deserves an event)."""
    changed = []
    for condition in new:
        before = find(old, condition["type"])
        if before is None or (before.get("status"), before.get("reason")) != (condition["status"], condition["reason"]):
            changed.append(condition)
    return changed
