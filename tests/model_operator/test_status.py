"""Status from a Deployment and its pods, with termination messages written by the real fetch code."""

from __future__ import annotations

import json
from typing import Any

from model_operator.conditions import parse_conditions
from model_operator.render import ObjectRef, render_deployment
from model_operator.status import (
    compute_status,
    fingerprint,
    fetch_result,
    reports_fetch,
    stopped_being_ready,
    spec_error_status,
    status_changed,
)
from modeldeploy.contract.api import SPEC_HASH_ANNOTATION
from modeldeploy.contract.pod import ReadinessReport, TerminationRecord
from modeldeploy.contract.spec import parse_spec
from modeldeploy.params.errors import VerificationError
from modeldeploy.params.fetch import termination_record
from modeldeploy.params.signing import VerifiedModel

REF = ObjectRef("iris", "ml")
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:10:00Z"
SPEC = parse_spec({
    "model": {"name": "iris", "version": "1.0.0"},
    "parameters": {"source": "s3://models/iris/", "publicKey": {"secretName": "k"}},
    "replicas": 2,
})
GOOD = termination_record(
    "s3://models/iris/", VerifiedModel("sha256:" + "1" * 64, "sha256:" + "2" * 64, {"model.joblib": "3" * 64}), None,
).line()
BAD = termination_record(
    "s3://models/iris/", VerificationError("FilesDiffer", "model.joblib differs from the signed manifest", ["model.joblib"]),
    "sha256:" + "1" * 64,
).line()


def deployment(replicas: int = 2, ready: int = 2, updated: int = 2, available: int = 2, total: int | None = None,
               conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    rendered = render_deployment(SPEC, REF, "img:1")
    rendered["metadata"]["generation"] = 4
    rendered["spec"]["replicas"] = replicas
    rendered["status"] = {
        "observedGeneration": 4, "replicas": replicas if total is None else total, "readyReplicas": ready,
        "updatedReplicas": updated, "availableReplicas": available,
        "conditions": conditions if conditions is not None else [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "ok"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable", "message": "done"},
        ],
    }
    return rendered


def current_hash() -> str:
    return deployment()["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]


def pod(init_status: dict[str, Any] | None, spec_hash: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {"annotations": {SPEC_HASH_ANNOTATION: spec_hash or current_hash()}},
        "status": {"initContainerStatuses": [{"name": "fetch", **init_status}] if init_status else []},
    }


def terminated(message: str, code: int = 0) -> dict[str, Any]:
    return {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "message": message,
            "finishedAt": "2026-01-01T00:00:03Z"}


def test_termination_message_of_the_fetch_command_parses() -> None:
    result = TerminationRecord.parse(GOOD + "\n")
    assert result is not None and result.verified is True and result.reason == "SignatureValid"
    assert TerminationRecord.parse("panic: something") is None
    assert TerminationRecord.parse(None) is None


def test_verified_when_a_current_pod_fetched_successfully() -> None:
    result = fetch_result([pod({"state": {"terminated": terminated(GOOD)}})], current_hash())
    assert (result.status, result.reason) == ("True", "SignatureValid")
    assert result.record is not None and result.record.key_fingerprint == "sha256:" + "1" * 64
    assert result.record.manifest_digest == "sha256:" + "2" * 64
    assert result.verified_at == "2026-01-01T00:00:03Z"


def test_failed_verification_reports_reason_and_files_from_the_last_attempt() -> None:
    crashing = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": terminated(BAD, 1)}}
    result = fetch_result([pod(crashing)], current_hash())
    assert (result.status, result.reason) == ("False", "FilesDiffer")
    assert "model.joblib differs" in result.message
    assert result.record is not None and result.record.failed_files == ("model.joblib",)


def test_pods_of_an_older_version_do_not_count() -> None:
    old = pod({"state": {"terminated": terminated(GOOD)}}, spec_hash="0" * 16)
    assert fetch_result([old], current_hash()).status == "Unknown"


def test_fetch_crash_without_a_result_is_a_failure() -> None:
    result = fetch_result([pod({"state": {"terminated": terminated("", 137)}})], current_hash())
    assert (result.status, result.reason) == ("False", "FetchFailed")
    assert "137" in result.message


def test_pending_pod_is_unknown_with_the_waiting_reason() -> None:
    result = fetch_result([pod({"state": {"waiting": {"reason": "ImagePullBackOff"}}})], current_hash())
    assert (result.status, result.reason) == ("Unknown", "Pending")
    assert "ImagePullBackOff" in result.message
    assert fetch_result([pod(None)], current_hash()).reason == "Pending"
    assert fetch_result([], current_hash()).reason == "NoPods"


def status(dep: dict[str, Any], pods: list[dict[str, Any]], old: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return compute_status(SPEC, REF, 7, parse_conditions(old or []), dep, pods, NOW).patch()


def conditions(result: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in result["conditions"]}


def test_ready_when_rolled_out_available_and_verified() -> None:
    result = status(deployment(), [pod({"state": {"terminated": terminated(GOOD)}})])
    assert conditions(result) == {
        "ParametersVerified": ("True", "SignatureValid"),
        "Available": ("True", "MinimumReplicasAvailable"),
        "Progressing": ("False", "RolloutComplete"),
        "Ready": ("True", "Serving"),
    }
    assert result["observedGeneration"] == 7
    assert result["ready"] == "2/2"
    assert result["endpoint"] == "http://iris.ml.svc:80"
    assert result["selector"] == "app.kubernetes.io/name=model-server,app.kubernetes.io/instance=iris"
    assert result["verification"]["manifestDigest"] == "sha256:" + "2" * 64


def test_bad_new_version_says_why_while_old_pods_keep_serving() -> None:
    dep = deployment(ready=2, updated=1, available=2, total=3)
    failing = {"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": terminated(BAD, 1)}}
    old_serving = pod({"state": {"terminated": terminated(GOOD)}}, spec_hash="0" * 16)
    result = status(dep, [old_serving, old_serving, pod(failing)])
    assert conditions(result)["ParametersVerified"] == ("False", "FilesDiffer")
    assert conditions(result)["Progressing"] == ("True", "RolloutProgressing")
    assert conditions(result)["Available"] == ("True", "MinimumReplicasAvailable")
    ready = next(c for c in result["conditions"] if c["type"] == "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "FilesDiffer")
    assert "model.joblib differs" in ready["message"]
    evidence = {k: v for k, v in result["verification"].items() if v is not None}
    assert evidence == {"keyFingerprint": "sha256:" + "1" * 64, "failedFiles": ["model.joblib"]}


def test_new_deployment_without_pods_is_progressing() -> None:
    result = status(deployment(ready=0, updated=0, available=0, total=0, conditions=[]), [])
    assert conditions(result) == {
        "ParametersVerified": ("Unknown", "NoPods"),
        "Available": ("Unknown", "Pending"),
        "Progressing": ("True", "RolloutProgressing"),
        "Ready": ("False", "RolloutProgressing"),
    }
    assert result["ready"] == "0/2"


def test_progress_deadline_exceeded_is_reported() -> None:
    stuck = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]
    result = status(deployment(updated=1, conditions=stuck), [])
    assert conditions(result)["Progressing"] == ("False", "ProgressDeadlineExceeded")


def test_recomputing_an_unchanged_state_changes_nothing() -> None:
    pods = [pod({"state": {"terminated": terminated(GOOD)}})]
    first = status(deployment(), pods)
    again = compute_status(SPEC, REF, 7, parse_conditions(first["conditions"]), deployment(), pods, LATER).patch()
    assert again == first


def test_spec_error_sets_ready_false_spec_invalid() -> None:
    result = spec_error_status(3, [], "spec.image is not set", NOW).patch()
    assert set(result) == {"observedGeneration", "conditions"}  # the rest of the stored status stays
    assert result["observedGeneration"] == 3
    assert conditions(result) == {"Ready": ("False", "SpecInvalid")}


def test_status_unchanged_when_only_deleted_keys_differ() -> None:
    pods = [pod({"state": {"terminated": terminated(BAD, 1)}})]
    new = compute_status(SPEC, REF, 7, [], deployment(), pods, NOW)
    stored = json.loads(json.dumps(new.patch()))
    stored["verification"] = {k: v for k, v in stored["verification"].items() if v is not None}
    assert not status_changed(stored, new)
    assert status_changed(None, new)
    assert status_changed({**stored, "readyReplicas": 1}, new)
    assert status_changed({**stored, "verification": {**stored["verification"], "keyFingerprint": "sha256:old"}}, new)


def test_fingerprint_ignores_status_only_updates() -> None:
    dep = {"metadata": {"uid": "u1", "generation": 3, "resourceVersion": "10"}}
    assert fingerprint(dep) == fingerprint({"metadata": {**dep["metadata"], "resourceVersion": "11"}})
    assert fingerprint(dep) != fingerprint({"metadata": {**dep["metadata"], "generation": 4}})
    assert fingerprint(dep) != fingerprint({"metadata": {**dep["metadata"], "uid": "u2"}})
    config_map = {"metadata": {"uid": "u3", "resourceVersion": "5"}}
    assert fingerprint(config_map) != fingerprint({"metadata": {"uid": "u3", "resourceVersion": "6"}})


def test_only_pods_whose_fetch_container_reports_need_a_status_refresh() -> None:
    assert not reports_fetch(pod(None))
    assert not reports_fetch(pod({"state": {"waiting": {"reason": "PodInitializing"}}}))
    assert not reports_fetch(pod({"state": {"running": {}}}))
    assert reports_fetch(pod({"state": {"terminated": terminated(GOOD)}}))
    assert reports_fetch(pod({"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": {"terminated": terminated(BAD, 1)}}))
    assert reports_fetch(pod({"state": {"waiting": {"reason": "ImagePullBackOff"}}}))


def test_a_record_cut_at_the_kubernetes_limit_keeps_its_reason() -> None:
    record = '{"verified":false,"reason":"FilesDiffer","message":"' + "x" * 5000 + '"}'
    result = TerminationRecord.parse(record[:4096])
    assert result is not None and (result.verified, result.reason) == (False, "FilesDiffer")
    failed = fetch_result([pod({"state": {"terminated": terminated(record[:4096], 1)}})], current_hash())
    assert failed.reason == "FilesDiffer"


def test_a_spec_policy_named_like_a_signed_guardrail_is_a_policy_conflict() -> None:
    record = TerminationRecord(verified=True, reason="SignatureValid", signedPolicies=("no-giant-sepals",)).line()
    spec = parse_spec({**SPEC.model_dump(by_alias=True, exclude_unset=True),
                       "policies": [{"name": "no-giant-sepals", "when": "false", "action": "reject"}]})
    result = compute_status(spec, REF, 7, [], deployment(), [pod({"state": {"terminated": terminated(record)}})], NOW)
    ready = next(c for c in result.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "PolicyConflict")
    assert "no-giant-sepals" in ready.message
    assert result.verification is not None and result.verification.signed_policies == ["no-giant-sepals"]


def test_a_server_that_finds_its_files_changed_turns_parameters_verified_false() -> None:
    serving = pod({"state": {"terminated": terminated(GOOD)}})
    serving["metadata"]["name"] = "iris-abc"
    serving["status"].update(podIP="10.88.0.7", containerStatuses=[
        {"name": "server", "started": True, "ready": False, "state": {"running": {}}}])
    assert stopped_being_ready(serving)
    report = ReadinessReport(ready=False, reason="FilesDiffer", message="model.joblib changed after it was verified",
                             failedFiles=("model.joblib",))
    result = compute_status(SPEC, REF, 7, [], deployment(ready=1), [serving], NOW, reports={"iris-abc": report})
    verified = next(c for c in result.conditions if c.type == "ParametersVerified")
    assert (verified.status, verified.reason) == ("False", "FilesDiffer")
    assert "iris-abc" in verified.message and "model.joblib" in verified.message
    assert result.verification is not None and result.verification.failed_files == ["model.joblib"]
    starting = {**serving, "status": {**serving["status"], "containerStatuses": [
        {"name": "server", "started": False, "ready": False, "state": {"running": {}}}]}}
    assert not stopped_being_ready(starting)
