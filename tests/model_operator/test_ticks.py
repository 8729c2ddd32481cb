"""The operator's own tick (no kopf timers, so no finalizers): what is due, who may act, what is forgotten."""

from __future__ import annotations

import datetime
from typing import Any, cast

from model_operator.handlers import RESYNC_SECONDS, State, due, leads

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def body(phase: str | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"uid": "u1", **({"deletionTimestamp": "2026-12-02T12:00:00Z"} if deleting else {})}
    status = {"rollout": {"canaryRevision": "abc", "phase": phase}} if phase else {}
    return {"metadata": meta, "status": status}


def test_a_canary_in_progress_is_due_at_every_tick() -> None:
    assert due(body("Analyzing"), last_reconciled=100.0, now=101.0)
    assert due(body("Progressing"), last_reconciled=100.0, now=101.0)
    assert not due(body("Promoted"), last_reconciled=100.0, now=101.0)


def test_a_quiet_object_is_resynced_only_after_the_resync_period() -> None:
    assert due(body(), last_reconciled=None, now=5.0), "never reconciled by this process"
    assert not due(body(), last_reconciled=100.0, now=100.0 + RESYNC_SECONDS - 1)
    assert due(body(), last_reconciled=100.0, now=100.0 + RESYNC_SECONDS)


def test_an_object_being_deleted_is_never_due() -> None:
    assert not due(body("Analyzing", deleting=True), last_reconciled=None, now=0.0)


def peer(priority: int, seconds_ago: int = 1, lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime,
            "lastseen": (NOW - datetime.timedelta(seconds=seconds_ago)).isoformat()}


def test_the_peer_with_the_highest_priority_leads_as_kopf_decides() -> None:
    peering = {"status": {"a": peer(10), "b": peer(20)}}
    assert leads(peering, 20, NOW)
    assert not leads(peering, 10, NOW)


def test_equal_priorities_all_pause_and_dead_peers_do_not_count() -> None:
    assert not leads({"status": {"a": peer(20), "b": peer(20)}}, 20, NOW)
    assert leads({"status": {"a": peer(10), "b": peer(30, seconds_ago=120)}}, 10, NOW), "b's lifetime is over"


def test_a_peering_without_peers_yet_lets_us_act() -> None:
    assert leads(None, 5, NOW)
    assert leads({"status": {}}, 5, NOW)


def child(name: str, owner: str, controller: bool = True) -> dict[str, Any]:
    refs = [{"uid": owner, "controller": controller, "kind": "ModelDeployment", "name": "iris"}]
    return {"kind": "Deployment", "metadata": {"name": name, "namespace": "ml", "ownerReferences": refs}}


def test_a_deleted_model_deployment_is_forgotten_and_no_other() -> None:
    state = State(kube=cast(Any, None), server_image=None, namespace="modeldeploy-system")
    for uid, name in (("gone", "a"), ("kept", "b")):
        state.applied[uid][("Deployment", name)] = (f"child-{name}", "1")
        state.reconciled_at[uid] = 1.0
        state.statuses[uid] = {"observedGeneration": 1}
        state.rollouts[uid] = (None, [])
        state.locks[uid]
    assert state.written(child("a", "gone")) == ("child-a", "1")
    state.forget("gone")
    assert state.written(child("a", "gone")) is None
    assert state.written(child("b", "kept")) == ("child-b", "1")
    for kept in (state.applied, state.reconciled_at, state.statuses, state.rollouts, state.locks):
        assert set(kept) == {"kept"}


def test_a_child_is_known_only_through_its_controlling_owner() -> None:
    state = State(kube=cast(Any, None), server_image=None, namespace="modeldeploy-system")
    state.applied["u1"][("Deployment", "iris")] = ("d1", "2")
    assert state.written(child("iris", "u1")) == ("d1", "2")
    assert state.written(child("iris", "u1", controller=False)) is None
    assert state.written(child("iris", "u2")) is None
    assert state.written({"kind": "Deployment", "metadata": {"name": "iris"}}) is None
    assert set(state.applied) == {"u1"}, "a lookup adds no owner"
