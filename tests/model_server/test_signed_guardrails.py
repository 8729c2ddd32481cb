"""Signed guardrails: the tree's policies.yaml runs first, and the spec's policies cannot remove or weaken it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_support import app_client

from modeldeploy.contract.pod import SIGNED_POLICIES

pytestmark = pytest.mark.anyio

PREDICT = "/api/models/pricing/prediction"
CHEAP = {"age": 40, "smoker": False, "cost": 100.0}  # price 70
SMOKER = {"age": 70, "smoker": True, "cost": 100.0}
NO_OLD_SMOKERS = {"name": "no-old-smokers", "when": "input.smoker && input.age > 60", "action": "reject",
                  "message": "outside the signed training range"}
CAP = {"name": "cap", "when": "prediction.price > 100.0", "action": "clamp", "max": 100.0}
GOUGE = {"name": "gouge", "action": "override", "value": 5000.0}


async def load_failure(client: httpx.AsyncClient) -> dict[str, Any]:
    """The model status of a server whose load failed (probes 503, status with reason and error)."""
    assert (await client.get("/api/health/ready")).status_code == 503
    health = await client.get("/api/health")
    assert health.status_code == 503
    status: dict[str, Any] = health.json()["model"]
    return status


async def test_a_signed_reject_fires_and_says_it_is_signed(pricing_dir: Callable[..., Path]) -> None:
    async with app_client(pricing_dir(signed_policies=[NO_OLD_SMOKERS]), policies=[GOUGE]) as client:
        response = await client.post(PREDICT, json=SMOKER)
        assert response.status_code == 422
        assert response.json() == {"type": "PolicyRejected", "messages": [NO_OLD_SMOKERS["message"]],
                                   "error": NO_OLD_SMOKERS["message"], "policy": "no-old-smokers", "source": "signed"}
        metadata = (await client.get("/api/models/pricing/metadata")).json()
        listed = [{"name": "no-old-smokers", "source": "signed", "action": "reject"},
                  {"name": "gouge", "source": "spec", "action": "override"}]
        assert metadata["policies"] == listed
        assert (await client.get("/v2/models/pricing")).json()["parameters"]["policies"] == listed
        text = (await client.get("/metrics")).text
        assert ('modeldeploy_policy_hits_total{action="reject",model="pricing",policy="no-old-smokers",'
                'source="signed"} 1.0') in text


async def test_a_spec_override_after_a_signed_clamp_is_clamped_again(pricing_dir: Callable[..., Path]) -> None:
    async with app_client(pricing_dir(signed_policies=[CAP]), policies=[GOUGE]) as client:
        body = (await client.post(PREDICT, json=CHEAP)).json()
        assert body["prediction"] == {"price": 100.0}
        assert [(p["policy"], p["source"], p["original"], p["value"]) for p in body["policies"]] == [
            ("gouge", "spec", 70.0, 5000.0),
            ("cap", "signed", 5000.0, 100.0),
        ]


async def test_a_spec_override_cannot_undo_a_signed_reject_on_the_prediction(
    pricing_dir: Callable[..., Path],
) -> None:
    no_gouging = {"name": "no-gouging", "when": "prediction.price > 1000.0", "action": "reject"}
    async with app_client(pricing_dir(signed_policies=[no_gouging]), policies=[GOUGE]) as client:
        response = await client.post(PREDICT, json=CHEAP)
        assert response.status_code == 422
        assert (response.json()["policy"], response.json()["source"]) == ("no-gouging", "signed")


async def test_signed_policies_are_not_applied_twice_when_the_spec_changes_nothing(
    pricing_dir: Callable[..., Path],
) -> None:
    floor = {"name": "floor", "when": "prediction.price < 0.0", "action": "clamp", "min": 0.0}
    async with app_client(pricing_dir(signed_policies=[{**CAP, "when": "true"}]), policies=[floor]) as client:
        body = (await client.post(PREDICT, json=CHEAP)).json()
        assert [(p["policy"], p["source"]) for p in body["policies"]] == [("cap", "signed")]


async def test_a_spec_policy_with_a_signed_name_is_refused_at_load(pricing_dir: Callable[..., Path]) -> None:
    weakened = {**NO_OLD_SMOKERS, "when": "false"}
    async with app_client(pricing_dir(signed_policies=[NO_OLD_SMOKERS]), policies=[weakened]) as client:
        status = await load_failure(client)
        assert status["reason"] == "PolicyConflict"
        assert "'no-old-smokers'" in status["error"] and "signed guardrails cannot be removed or replaced" in status[
            "error"]
        assert (await client.post(PREDICT, json=SMOKER)).status_code == 503


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("policies: [{name: no-action}]", "action"),
        ("- not a mapping", "policies"),
        ("policies: [{name: p, when: 'input.age >', action: reject}]", "invalid CEL"),
        ("policies: [{name: p, action: clamp, field: nope, max: 1}]", "not an output"),
    ],
)
async def test_a_malformed_signed_policies_file_keeps_the_model_from_loading(
    pricing_dir: Callable[..., Path], document: str, problem: str,
) -> None:
    async with app_client(pricing_dir(signed_policies=document)) as client:
        status = await load_failure(client)
        assert status["reason"] == "SignedPoliciesInvalid"
        assert SIGNED_POLICIES in status["error"] and problem in status["error"]


async def test_a_policies_file_added_after_signing_is_refused_by_verification(
    pricing_dir: Callable[..., Path],
) -> None:
    model_dir = pricing_dir()
    (model_dir / SIGNED_POLICIES).write_text("policies: [{name: allow, action: override, value: 0.0}]\n")
    async with app_client(model_dir) as client:
        status = await load_failure(client)
        assert status["reason"] == "FilesDiffer"
        assert f"extra {SIGNED_POLICIES}" in status["error"]
