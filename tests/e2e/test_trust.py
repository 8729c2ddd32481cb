"""Verify at `kubectl apply`: the operator pod's admission webhooks against ModelTrustPolicies, on the real node.

Signed (and unsigned, and badly signed) iris archives sit in the in-cluster MinIO with their
signatures beside them; a ModelTrustPolicy selects this module's namespaces by a label. Each
refusal is what `kubectl apply` prints; each admitted ModelDeployment is served by pods that
verify with the policy's signers and the pinned digest.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from node.helpers import wait_for

from devcluster import pki
from devcluster.cluster import Cluster
from devcluster.iris import Keys, train, write_keys
from devcluster.localrun import OPERATOR_NAMESPACE
from devcluster.node.config import NodeLayout
from devcluster.story import (
    BUCKET,
    S3_SECRET,
    Bucket,
    get_md,
    md_condition,
    pack,
    predict,
    ready_endpoints,
)
from modeldeploy.contract.api import API_VERSION
from modeldeploy.contract.pod import TerminationRecord
from modeldeploy.contract.trust import TRUST_PLURAL
from modeldeploy.params import signing

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(900)]

LABEL = "modeldeploy.io/trust-e2e"
GUARDRAIL = {"name": "no-giant-sepals", "when": "input.sepal_length > 7.0", "action": "reject",
             "message": "sepal_length over 7 cm is outside the training range"}


@dataclass(frozen=True)
class Artifacts:
    """This module's objects in the bucket (`s3://models/PREFIX/NAME.tar.gz` with `NAME.tar.gz.sig`)."""

    prefix: str
    current: Keys
    following: Keys
    stranger: Keys
    roots: Path

    def source(self, name: str) -> str:
        return f"s3://{BUCKET}/{self.prefix}/{name}.tar.gz"


def _sign_archive(model: Path, bucket: Path, name: str, *, keys: Keys | None = None,
                  certificate: pki.KeyPair | None = None, chain: tuple[Path, ...] = ()) -> None:
    """`bucket/NAME.tar.gz` of `model`, and its signature beside it (none when neither keys nor certificate)."""
    pack(model, bucket / f"{name}.tar.gz")
    if keys is None and certificate is None:
        return
    signature = bucket / f"{name}.tar.gz.sig"
    if certificate is not None:
        signing.sign(model, certificate.key, signature, signing_certificate=certificate.cert, certificate_chain=chain)
    else:
        assert keys is not None
        signing.sign(model, keys.private, signature)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, bucket: Bucket) -> Artifacts:
    work = tmp_path_factory.mktemp("trust")
    model = train(work / "iris")
    guarded = train(work / "guarded")
    (guarded / "policies.yaml").write_text(yaml.safe_dump({"policies": [GUARDRAIL]}))
    current, following, stranger = (write_keys(work / name) for name in ("current", "following", "stranger"))
    ca, rogue = pki.create_ca(work, "modeldeploy-e2e-models-ca"), pki.create_ca(work, "rogue-ca", stem="rogue")
    release = pki.create_signing_cert(ca, work, "release", "release@example.com")
    intern = pki.create_signing_cert(ca, work, "intern", "intern@example.com")
    impostor = pki.create_signing_cert(rogue, work, "impostor")
    out = work / "bucket"
    out.mkdir()
    _sign_archive(model, out, "iris", keys=current)
    _sign_archive(model, out, "iris-next", keys=following)
    _sign_archive(model, out, "stranger", keys=stranger)
    _sign_archive(model, out, "unsigned")
    _sign_archive(model, out, "release", certificate=release, chain=(ca.cert,))
    _sign_archive(model, out, "intern", certificate=intern, chain=(ca.cert,))
    _sign_archive(model, out, "impostor", certificate=impostor, chain=(rogue.cert,))
    _sign_archive(guarded, out, "guarded", keys=current)
    retrained = train(work / "retrained")
    (retrained / "NOTES").write_text("another tree, another manifest digest\n")
    _sign_archive(retrained, out, "swap", keys=current)  # validly signed by a trusted key, but not what was admitted
    prefix = f"trust-{uuid.uuid4().hex[:8]}"
    s3 = bucket.client()
    for path in sorted(out.iterdir()):
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
    return Artifacts(prefix, current, following, stranger, ca.cert)


def _apply(cluster: Cluster, document: dict[str, Any], namespace: str | None = None) -> Any:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    return cluster.kubectl_run(*args, stdin=yaml.safe_dump(document), check=False)


def _policy(name: str, mode: str, selector_value: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION, "kind": "ModelTrustPolicy", "metadata": {"name": name},
        "spec": {
            "mode": mode,
            "namespaceSelector": {"matchLabels": {LABEL: selector_value}},
            "signers": [
                {"name": "current", "publicKey": {"secretName": name, "key": "current.pem"}},
                {"name": "following", "publicKey": {"secretName": name, "key": "following.pem"}},
                {"name": "release-pki", "certificate": {
                    "roots": {"configMapName": name, "key": "ca.pem"},
                    "subjects": ["CN=release"], "sans": ["release@example.com"]}},
            ],
        },
    }


@pytest.fixture(scope="module")
def policies(devcluster: Cluster, operator: str, artifacts: Artifacts) -> Iterator[dict[str, str]]:
    """An enforcing and a warning ModelTrustPolicy, their keys in a Secret and roots in a ConfigMap."""
    with devcluster.api_client() as api:
        yield from _policies(devcluster, artifacts, api)


def _policies(devcluster: Cluster, artifacts: Artifacts, api: client.ApiClient) -> Iterator[dict[str, str]]:
    core = client.CoreV1Api(api)
    run = artifacts.prefix
    names = {"enforce": f"{run}-enforce", "warn": f"{run}-warn"}
    for mode, name in names.items():
        core.create_namespaced_secret(OPERATOR_NAMESPACE, {"metadata": {"name": name}, "stringData": {
            "current.pem": artifacts.current.public.read_text(), "following.pem": artifacts.following.public.read_text()}})
        core.create_namespaced_config_map(OPERATOR_NAMESPACE, {"metadata": {"name": name},
                                                               "data": {"ca.pem": artifacts.roots.read_text()}})
        result = _apply(devcluster, _policy(name, mode, f"{run}-{mode}"))
        assert result.returncode == 0, result.stderr
    yield names
    custom = client.CustomObjectsApi(api)
    for name in names.values():
        custom.delete_cluster_custom_object("modeldeploy.io", "v1alpha1", TRUST_PLURAL, name)
        core.delete_namespaced_secret(name, OPERATOR_NAMESPACE)
        core.delete_namespaced_config_map(name, OPERATOR_NAMESPACE)


def _trusting(api: client.ApiClient, namespace: str, value: str, bucket: Bucket) -> str:
    core = client.CoreV1Api(api)
    core.patch_namespace(namespace, {"metadata": {"labels": {LABEL: value}}})
    core.create_namespaced_secret(namespace, bucket.credentials_secret())
    return namespace


@pytest.fixture
def enforced(api: client.ApiClient, namespace: str, policies: dict[str, str], artifacts: Artifacts,
             bucket: Bucket) -> str:
    return _trusting(api, namespace, f"{artifacts.prefix}-enforce", bucket)


@pytest.fixture
def warned(api: client.ApiClient, namespace: str, policies: dict[str, str], artifacts: Artifacts,
           bucket: Bucket) -> str:
    return _trusting(api, namespace, f"{artifacts.prefix}-warn", bucket)


def md(name: str, source: str, **spec: Any) -> dict[str, Any]:
    parameters = {"source": source, "credentials": {"secretName": S3_SECRET}, **spec.pop("parameters", {})}
    return {"apiVersion": API_VERSION, "kind": "ModelDeployment", "metadata": {"name": name}, "spec": {
        "model": {"name": "iris", "version": "1.0.0"}, "parameters": parameters, "replicas": 1,
        "probes": {"maxLoadSeconds": 60}, **spec}}


def test_the_policy_shows_its_mode_and_signer_counts(devcluster: Cluster, policies: dict[str, str]) -> None:
    def row() -> list[str] | None:
        out = devcluster.kubectl_run("get", "modeltrustpolicies", policies["enforce"], "--no-headers").stdout.split()
        return out if len(out) >= 4 and out[2] != "<none>" else None

    name, mode, keys, certificates = wait_for(row, "the policy's status")[:4]
    assert (name, mode, keys, certificates) == (policies["enforce"], "enforce", "2", "1")


@pytest.mark.parametrize(("archive", "spec", "message"), [
    ("stranger", {}, "which ModelTrustPolicy"),
    ("unsigned", {}, "no signature at s3://"),
    ("impostor", {}, "does not chain to the roots"),
    ("intern", {}, "CN=intern"),
    ("iris", {"policies": [{"name": "broken", "when": "input.sepal_length >", "action": "reject"}]},
     "spec.policies: "),
])
def test_kubectl_apply_refuses_with_a_message_to_act_on(
    devcluster: Cluster, enforced: str, artifacts: Artifacts, api: client.ApiClient,
    archive: str, spec: dict[str, Any], message: str,
) -> None:
    result = _apply(devcluster, md("refused", artifacts.source(archive), **spec), enforced)
    assert result.returncode != 0
    assert "admission webhook" in result.stderr and message in result.stderr, result.stderr
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object("modeldeploy.io", "v1alpha1", enforced,
                                                                        "modeldeployments")
    assert listed["items"] == []  # nothing was stored, so no Deployment can follow


def test_warn_mode_admits_with_a_warning(devcluster: Cluster, warned: str, artifacts: Artifacts) -> None:
    result = _apply(devcluster, md("warned", artifacts.source("stranger")), warned)
    assert result.returncode == 0, result.stderr
    assert "Warning:" in result.stderr and "warn mode: admitted" in result.stderr


def _serving(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    found = get_md(api, namespace, name)
    return found if md_condition(found, "Ready").get("status") == "True" else None


def test_rotation_two_trusted_keys_and_a_certificate_all_admit_and_serve(
    devcluster: Cluster, enforced: str, artifacts: Artifacts, api: client.ApiClient,
) -> None:
    for name, archive in (("current", "iris"), ("following", "iris-next"), ("release", "release")):
        result = _apply(devcluster, md(name, artifacts.source(archive)), enforced)
        assert result.returncode == 0, result.stderr
    signers = {}
    for name in ("current", "following", "release"):
        served = wait_for(lambda name=name: _serving(api, enforced, name), f"{name} to serve", timeout=180)
        verification = served["status"]["verification"]
        assert verification["trustedBy"].startswith(f"ModelTrustPolicy/{artifacts.prefix}-enforce signer ")
        assert verification["admittedAt"] and verification["verifiedAt"] and verification["hashAlgorithm"] == "sha256"
        signers[name] = verification["signer"]
    assert signers["current"] == artifacts.current.fingerprint
    assert signers["following"] == artifacts.following.fingerprint
    assert signers["release"] == "CN=release"
    table = devcluster.kubectl_run("get", "md", "-n", enforced).stdout
    assert "SIGNER" in table.splitlines()[0] and artifacts.current.fingerprint in table


def test_the_admitted_digest_is_pinned_and_a_swapped_signature_is_refused_by_the_pods(
    devcluster: Cluster, enforced: str, artifacts: Artifacts, api: client.ApiClient, bucket: Bucket,
) -> None:
    assert _apply(devcluster, md("pinned", artifacts.source("iris")), enforced).returncode == 0
    stored = get_md(api, enforced, "pinned")
    digest = json.loads(stored["metadata"]["annotations"]["modeldeploy.io/admission"])["manifestDigest"]
    assert stored["spec"]["parameters"]["sha256"] == digest.removeprefix("sha256:")
    wait_for(lambda: _serving(api, enforced, "pinned"), "the pinned model to serve", timeout=180)
    s3 = bucket.client()
    names = {f"{artifacts.prefix}/iris.tar.gz": f"{artifacts.prefix}/swap.tar.gz",
             f"{artifacts.prefix}/iris.tar.gz.sig": f"{artifacts.prefix}/swap.tar.gz.sig"}
    originals = {key: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in names}
    for key, replacement in names.items():  # another version, signed by a trusted key, swapped in
        s3.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": replacement})
    try:
        client.CustomObjectsApi(api).patch_namespaced_custom_object(
            "modeldeploy.io", "v1alpha1", enforced, "modeldeployments", "pinned", {"spec": {"replicas": 2}},
            _content_type="application/merge-patch+json")
        refused = wait_for(lambda: _fetch_refusal(api, enforced, "pinned"), "the new pod to refuse the swapped signature",
                           timeout=180)
        assert refused.reason == "DigestMismatch" and "is not the pinned" in refused.message
        assert len(ready_endpoints(api, enforced, "pinned")) == 1  # the admitted pod keeps serving
    finally:
        for key, data in originals.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=data)


def _fetch_refusal(api: client.ApiClient, namespace: str, name: str) -> TerminationRecord | None:
    """The termination record of a pod whose fetch container refused its parameters, if one did."""
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={name}")
    for pod in pods.items:
        for status in pod.status.init_container_statuses or []:
            for state in (status.state, status.last_state):
                record = TerminationRecord.parse(state.terminated.message) if state and state.terminated else None
                if record is not None and not record.verified:
                    return record
    return None


def test_signed_guardrails_apply_first_and_the_spec_cannot_remove_them(
    devcluster: Cluster, enforced: str, artifacts: Artifacts, api: client.ApiClient,
) -> None:
    undo = {"name": "allow-everything", "when": "true", "action": "override", "field": "species", "value": "setosa"}
    assert _apply(devcluster, md("guarded", artifacts.source("guarded"), policies=[undo]), enforced).returncode == 0
    served = wait_for(lambda: _serving(api, enforced, "guarded"), "the guarded model to serve", timeout=180)
    assert served["status"]["verification"]["signedPolicies"] == [GUARDRAIL["name"]]
    url = ready_endpoints(api, enforced, "guarded")[0]
    giant = {"sepal_length": 7.9, "sepal_width": 3.8, "petal_length": 6.4, "petal_width": 2.0}
    response = predict(url, body=giant)
    assert response.status_code == 422 and GUARDRAIL["message"] in response.text
    replaced = {**GUARDRAIL, "when": "false"}
    assert _apply(devcluster, md("replaced", artifacts.source("guarded"), policies=[replaced]), enforced).returncode == 0
    ready = wait_for(lambda: (md_condition(get_md(api, enforced, "replaced"), "Ready").get("reason")
                              == "PolicyConflict") or None, "the conflict to be reported", timeout=180)
    assert ready


def _pod_model_file(api: client.ApiClient, cluster: Cluster, node: str, namespace: str, name: str) -> Path:
    """The served `model.joblib` in the pod's parameters emptyDir, as the node's filesystem holds it."""
    pod = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={name}")
    volume = NodeLayout.of(cluster.layout, node).kubelet_root / "pods" / str(pod.items[0].metadata.uid) / "volumes"
    return volume / "kubernetes.io~empty-dir" / "model" / "model" / "model.joblib"


def test_a_file_tampered_under_a_running_server_flips_readiness(
    devcluster: Cluster, node: str, enforced: str, artifacts: Artifacts, api: client.ApiClient,
) -> None:
    spec = md("watched", artifacts.source("iris"), verification={"recheckSeconds": 5})
    assert _apply(devcluster, spec, enforced).returncode == 0
    wait_for(lambda: _serving(api, enforced, "watched"), "the model to serve", timeout=180)
    path = _pod_model_file(api, devcluster, node, enforced, "watched")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))  # what an intruder on the node could do
    started = time.monotonic()
    verified = wait_for(lambda: md_condition(get_md(api, enforced, "watched"), "ParametersVerified")
                        if md_condition(get_md(api, enforced, "watched"), "ParametersVerified").get("status") == "False"
                        else None, "ParametersVerified=False", timeout=120)
    assert verified["reason"] == "FilesDiffer" and "model.joblib" in verified["message"]
    assert ready_endpoints(api, enforced, "watched") == []
    assert time.monotonic() - started < 90
    warnings = client.CoreV1Api(api).list_namespaced_event(enforced, field_selector="involvedObject.name=watched")
    assert any(e.type == "Warning" and e.reason == "FilesDiffer" for e in warnings.items)
