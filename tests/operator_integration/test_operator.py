"""The operator as a separate process, under its own ServiceAccount, against the real control plane.

The install manifests (`kubectl apply -k manifests/`) provide the CRD and the least-privilege
ClusterRole; the operator runs as `modeldeploy operator` with a kubeconfig for the
`modeldeploy-operator` ServiceAccount, so every call it makes passes real RBAC. There is no
kubelet for its pods (the node is cordoned for the module, and the in-cluster operator scaled to
zero): pods stay Pending, and where a test needs the fetch init container's result it writes the
pod status as the kubelet would, with a termination message produced by the real fetch code.
Garbage collection, the Deployment controller and admission are the real ones.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from node.helpers import wait_for

from devcluster.localrun import (
    OPERATOR_NAMESPACE,
    OPERATOR_SERVICE_ACCOUNT,
    OperatorProcess,
    install,
    restore,
)
from modeldeploy.contract.api import GROUP, PLURAL, VERSION
from modeldeploy.contract.pod import TerminationRecord
from modeldeploy.params.errors import VerificationError
from modeldeploy.params.fetch import termination_record
from modeldeploy.params.signing import VerifiedModel

SERVER_IMAGE = "modeldeploy-server:test"
FINGERPRINT = "sha256:" + "ab" * 32

# Each module that starts a cluster-wide operator (this one, tests/e2e) owns the cluster while it
# runs: one pytest session runs them one after the other; concurrent sessions need separate
# clusters ($MODELDEPLOY_DEVCLUSTER_DIR), or two operators with different settings fight.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def operator(devcluster: Any, cordoned: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The install manifests applied, and the operator running under its ServiceAccount."""
    install(devcluster)
    runner = OperatorProcess(
        devcluster.kubeconfig_for_service_account(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT),
        tmp_path_factory.mktemp("operator") / "operator.log",
        SERVER_IMAGE,
    )
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
        restore(devcluster)
        denied = [r for r in runner.records() if "is forbidden: User" in r.get("message", "")]
        assert not denied, f"the operator hit RBAC denials: {denied[:3]}"


def model_deployment(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"name": "iris", "version": "1.0.0"},
            "parameters": {"source": "s3://models/iris/1.0.0/", "publicKey": {"secretName": "iris-key"}},
            **spec,
        },
    }


def create(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def get_md(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def patch_spec(api: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": spec}, _content_type="application/merge-patch+json",
    )


def deployment(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    found = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    return api.sanitize_for_serialization(found)


def condition(md: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in md.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def events(api: client.ApiClient, namespace: str, name: str) -> list[client.CoreV1Event]:
    listed = client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [e for e in listed.items if e.involved_object.kind == "ModelDeployment"]


def test_create_makes_owned_children_with_the_pod_contract(operator: OperatorProcess, api: client.ApiClient, namespace: str) -> None:
    # The real PodSecurity admission rejects pods that are not "restricted" in this namespace.
    client.CoreV1Api(api).patch_namespace(namespace, {"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    md = create(api, namespace, model_deployment("iris", replicas=2, policies=[
        {"name": "no-tiny", "when": "input.sepal_length < 1.0", "action": "reject", "message": "too small"},
    ]))
    uid = md["metadata"]["uid"]
    dep = wait_for(lambda: deployment(api, namespace, "iris"), "the Deployment")
    service = client.CoreV1Api(api).read_namespaced_service("iris", namespace)
    config_map = client.CoreV1Api(api).read_namespaced_config_map("iris-config", namespace)
    pdb = wait_for(lambda: client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("iris", namespace), "the PDB")

    for meta in (dep["metadata"], api.sanitize_for_serialization(service.metadata),
                 api.sanitize_for_serialization(config_map.metadata), api.sanitize_for_serialization(pdb.metadata)):
        assert meta["ownerReferences"] == [{
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "name": "iris", "uid": uid,
            "controller": True, "blockOwnerDeletion": True,
        }]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "modeldeploy"
        assert any(f["manager"] == "modeldeploy-operator" and f["operation"] == "Apply" for f in meta["managedFields"])

    pod = dep["spec"]["template"]["spec"]
    init, server = pod["initContainers"][0], pod["containers"][0]
    assert init["command"][:3] == ["modeldeploy", "fetch", "s3://models/iris/1.0.0/"]
    assert "--public-key" in init["command"] and "/etc/modeldeploy/keys/public.pem" in init["command"]
    assert init["image"] == server["image"] == SERVER_IMAGE
    assert server["startupProbe"]["httpGet"]["path"] == "/api/health/startup"
    assert server["startupProbe"]["failureThreshold"] * server["startupProbe"]["periodSeconds"] >= 120
    assert server["readinessProbe"]["httpGet"]["path"] == "/api/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/api/health"
    for container in (init, server):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert dep["spec"]["replicas"] == 2
    assert "no-tiny" in config_map.data["server.yaml"]
    assert service.spec.ports[0].port == 80
    wait_for(lambda: len(pod_names(api, namespace)) == 2, "two pods admitted under the restricted level")
    assert wait_for(lambda: any(e.reason == "Applied" for e in events(api, namespace, "iris")), "an Applied event")


def test_spec_change_rolls_out_and_replicas_do_not(operator: OperatorProcess, api: client.ApiClient, namespace: str) -> None:
    create(api, namespace, model_deployment("iris"))

    def spec_hash() -> str:
        return deployment(api, namespace, "iris")["spec"]["template"]["metadata"]["annotations"]["modeldeploy.io/spec-hash"]

    first = wait_for(spec_hash, "the first rollout")
    patch_spec(api, namespace, "iris", {"policies": [{"name": "clamp", "when": "true", "action": "clamp", "min": 0.0}]})
    second = wait_for(lambda: spec_hash() != first and spec_hash(), "a new spec hash after a policy change")
    wait_for(lambda: "clamp" in client.CoreV1Api(api).read_namespaced_config_map("iris-config", namespace).data["server.yaml"],
             "the policy in server.yaml")

    patch_spec(api, namespace, "iris", {"replicas": 3})
    wait_for(lambda: deployment(api, namespace, "iris")["spec"]["replicas"] == 3, "3 replicas")
    assert spec_hash() == second
    wait_for(lambda: get_md(api, namespace, "iris").get("status", {}).get("observedGeneration") == 3,
             "status.observedGeneration 3")


def test_deleted_or_edited_child_is_put_back(operator: OperatorProcess, api: client.ApiClient, namespace: str) -> None:
    create(api, namespace, model_deployment("iris", replicas=2))
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    old_uid = wait_for(lambda: deployment(api, namespace, "iris"), "the Deployment")["metadata"]["uid"]
    wait_for(lambda: client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("iris", namespace), "the PDB")

    apps.delete_namespaced_deployment("iris", namespace)
    recreated = wait_for(
        lambda: (d := deployment(api, namespace, "iris"))["metadata"]["uid"] != old_uid and d, "a recreated Deployment",
    )
    assert recreated["metadata"]["ownerReferences"][0]["kind"] == "ModelDeployment"

    core.delete_namespaced_config_map("iris-config", namespace)
    wait_for(lambda: core.read_namespaced_config_map("iris-config", namespace), "a recreated ConfigMap")
    client.PolicyV1Api(api).delete_namespaced_pod_disruption_budget("iris", namespace)
    wait_for(lambda: client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("iris", namespace), "a recreated PDB")

    core.patch_namespaced_service("iris", namespace, {"spec": {"ports": [{"name": "http", "port": 9999, "targetPort": "http"}]}},
                                  _content_type="application/merge-patch+json")
    # The hand-made port entry clashes with the operator's (same name): apply alone cannot fix that.
    wait_for(lambda: [p.port for p in core.read_namespaced_service("iris", namespace).spec.ports] == [80], "port 80 restored")
    apps.patch_namespaced_deployment("iris", namespace, {"spec": {"strategy": {"rollingUpdate": {"maxUnavailable": 1}}}})
    wait_for(lambda: deployment(api, namespace, "iris")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0,
             "maxUnavailable 0 restored")
    assert wait_for(lambda: sum(e.reason == "DriftRepaired" for e in events(api, namespace, "iris")) >= 1,
                    "DriftRepaired events")


def test_autoscaling_adds_an_hpa_and_removing_it_deletes_the_hpa(
    operator: OperatorProcess, api: client.ApiClient, namespace: str,
) -> None:
    create(api, namespace, model_deployment("iris", autoscaling={"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 60}))
    hpas = client.AutoscalingV2Api(api)
    hpa = wait_for(lambda: hpas.read_namespaced_horizontal_pod_autoscaler("iris", namespace), "the HPA")
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (2, 5)
    assert hpa.spec.scale_target_ref.name == "iris"
    dep = deployment(api, namespace, "iris")
    owned = [f for f in dep["metadata"]["managedFields"] if f["manager"] == "modeldeploy-operator"]
    assert all("f:replicas" not in json.dumps(f["fieldsV1"].get("f:spec", {})) for f in owned), "replicas left to the HPA"

    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "iris", {"spec": {"autoscaling": None, "replicas": 1}},
        _content_type="application/merge-patch+json",
    )

    def gone(read: Callable[[], Any]) -> bool:
        try:
            read()
        except ApiException as err:
            return err.status == 404
        return False

    wait_for(lambda: gone(lambda: hpas.read_namespaced_horizontal_pod_autoscaler("iris", namespace)), "the HPA deleted")
    wait_for(lambda: gone(lambda: client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("iris", namespace)),
             "the PDB deleted below two replicas")
    wait_for(lambda: deployment(api, namespace, "iris")["spec"]["replicas"] == 1, "1 replica")


INVALID = [
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2, "targetCPUUtilization": 50}},
     "autoscaling.minReplicas must be <= autoscaling.maxReplicas"),
    ({"policies": [{"name": "p", "when": "true", "action": "clamp"}]}, "a clamp policy needs min and/or max"),
    ({"policies": [{"name": "p", "when": "true", "action": "explode"}]}, 'Unsupported value: "explode"'),
    ({"parameters": {"source": "ftp://x", "publicKey": {"secretName": "k"}}},
     "source must be an s3://, https://, http:// or file:/// URI"),
    ({"replicas": -1}, "spec.replicas: Invalid value: -1"),
]


@pytest.mark.parametrize(("spec", "message"), INVALID, ids=[m for _, m in INVALID])
def test_invalid_specs_are_rejected_with_a_readable_message(
    devcluster: Any, operator: OperatorProcess, namespace: str, spec: dict[str, Any], message: str, tmp_path: Path,
) -> None:
    manifest = tmp_path / "md.json"
    manifest.write_text(json.dumps(model_deployment("bad", **spec)))
    result = devcluster.kubectl_run("-n", namespace, "apply", "-f", str(manifest), check=False)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert result.stderr.startswith('The ModelDeployment "bad" is invalid:'), result.stderr


def test_a_spec_the_schema_admits_but_the_server_would_refuse_is_refused_by_the_validating_webhook(
    operator: OperatorProcess, api: client.ApiClient, namespace: str,
) -> None:
    # An override-to-null that also has an expression: CEL in the CRD cannot see the untyped `value`;
    # the operator's validating webhook parses the spec with the contract's types and says why.
    policy = {"name": "p", "when": "true", "action": "override", "value": None, "expression": "1.0"}
    with pytest.raises(ApiException) as refused:
        create(api, namespace, model_deployment("iris", policies=[policy]))
    assert refused.value.status == 422
    message = json.loads(refused.value.body)["message"]
    assert 'admission webhook "validate.modeldeployments.modeldeploy.io" denied the request' in message
    assert "an override policy needs exactly one of value or expression" in message
    assert client.AppsV1Api(api).list_namespaced_deployment(namespace).items == []


def pod_names(api: client.ApiClient, namespace: str) -> list[str]:
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector="app.kubernetes.io/instance=iris")
    return [p.metadata.name for p in pods.items]


def report_fetch(api: client.ApiClient, namespace: str, pod: str, record: TerminationRecord, exit_code: int) -> None:
    """Write the pod status the kubelet would after the fetch init container exits."""
    terminated = {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                  "message": record.line(), "startedAt": "2026-01-01T00:00:00Z",
                  "finishedAt": "2026-01-01T00:00:05Z"}
    state = {"terminated": terminated} if exit_code == 0 else {"waiting": {"reason": "CrashLoopBackOff"}}
    last = {} if exit_code == 0 else {"terminated": terminated}
    client.CoreV1Api(api).patch_namespaced_pod_status(pod, namespace, {"status": {"initContainerStatuses": [{
        "name": "fetch", "image": SERVER_IMAGE, "imageID": "", "ready": exit_code == 0,
        "restartCount": 0 if exit_code == 0 else 2, "state": state, "lastState": last,
    }]}})


def get_md_columns(devcluster: Any, namespace: str) -> dict[str, str]:
    """`kubectl get md`'s one row by column, cut at the header's offsets (an empty cell stays a column)."""
    header, row = devcluster.kubectl_run("-n", namespace, "get", "md").stdout.splitlines()[:2]
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    cells = [row[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(header.split(), cells, strict=True))


def test_status_conditions_and_printer_columns(
    devcluster: Any, operator: OperatorProcess, api: client.ApiClient, namespace: str,
) -> None:
    create(api, namespace, model_deployment("iris", replicas=2))
    md = wait_for(lambda: (m := get_md(api, namespace, "iris")).get("status", {}).get("conditions") and m, "status")
    assert md["status"]["observedGeneration"] == 1
    assert md["status"]["endpoint"] == f"http://iris.{namespace}.svc:80"
    assert condition(md, "Ready")["status"] == "False"
    assert condition(md, "Progressing")["status"] == "True"
    pods = wait_for(lambda: len(names := pod_names(api, namespace)) == 2 and names, "two Pending pods")
    columns = wait_for(lambda: (c := get_md_columns(devcluster, namespace)).get("VERIFIED") and c, "kubectl get md")
    assert list(columns) == ["NAME", "MODEL", "VERSION", "READY", "VERIFIED", "SIGNER", "STATUS", "ROLLOUT", "AGE"]
    assert (columns["NAME"], columns["MODEL"], columns["VERSION"], columns["READY"]) == ("iris", "iris", "1.0.0", "0/2")
    assert columns["VERIFIED"] == "Unknown"
    assert columns["ROLLOUT"] == "Progressing"  # RollingUpdate: Promoted once every pod runs the spec

    bad = termination_record("s3://models/iris/1.0.0/", VerificationError(
        "KeyMismatch", "the signature was made with a different key", []), FINGERPRINT)
    report_fetch(api, namespace, pods[0], bad, exit_code=1)
    md = wait_for(lambda: (m := get_md(api, namespace, "iris")) and condition(m, "ParametersVerified")["status"] == "False" and m,
                  "ParametersVerified=False")
    assert condition(md, "ParametersVerified")["reason"] == "KeyMismatch"
    assert (condition(md, "Ready")["status"], condition(md, "Ready")["reason"]) == ("False", "KeyMismatch")
    assert get_md_columns(devcluster, namespace)["VERIFIED"] == "False"
    assert wait_for(lambda: [e for e in events(api, namespace, "iris") if e.reason == "KeyMismatch" and e.type == "Warning"],
                    "a KeyMismatch warning event")

    good = termination_record("s3://models/iris/1.0.0/", VerifiedModel(
        FINGERPRINT, "sha256:" + "cd" * 32, {"m": "0"}, signer=FINGERPRINT), None)
    report_fetch(api, namespace, pods[1], good, exit_code=0)
    md = wait_for(lambda: (m := get_md(api, namespace, "iris")) and condition(m, "ParametersVerified")["status"] == "True" and m,
                  "ParametersVerified=True")
    assert md["status"]["verification"]["keyFingerprint"] == FINGERPRINT
    assert md["status"]["verification"]["manifestDigest"] == "sha256:" + "cd" * 32
    assert get_md_columns(devcluster, namespace)["VERIFIED"] == "True"
    columns = wait_for(lambda: (c := get_md_columns(devcluster, namespace))["SIGNER"] == FINGERPRINT and c,
                       "the SIGNER column")
    assert columns["SIGNER"] == FINGERPRINT


def test_restarting_the_operator_changes_nothing(operator: OperatorProcess, api: client.ApiClient, namespace: str) -> None:
    create(api, namespace, model_deployment("iris", replicas=2))
    wait_for(lambda: get_md(api, namespace, "iris").get("status", {}).get("conditions"), "status")
    wait_for(lambda: len(pod_names(api, namespace)) == 2, "the pods")

    def ours() -> dict[str, Any]:
        """Each child's generation and the operator's field-manager entries (their time moves on any write)."""
        core, policy = client.CoreV1Api(api), client.PolicyV1Api(api)
        metas = {
            "deployment": client.AppsV1Api(api).read_namespaced_deployment("iris", namespace).metadata,
            "service": core.read_namespaced_service("iris", namespace).metadata,
            "configmap": core.read_namespaced_config_map("iris-config", namespace).metadata,
            "pdb": policy.read_namespaced_pod_disruption_budget("iris", namespace).metadata,
        }
        return {
            kind: (meta.generation, [api.sanitize_for_serialization(f) for f in meta.managed_fields
                                     if f.manager == "modeldeploy-operator"])
            for kind, meta in metas.items()
        }

    def reconciles() -> int:
        return sum(r.get("object", {}).get("namespace") == namespace and r.get("message", "").startswith("Reconciled in")
                   for r in operator.records())

    before, count = ours(), reconciles()
    operator.stop()
    time.sleep(1.5)  # managedFields times have one-second resolution
    operator.start()
    wait_for(lambda: reconciles() > count, "the restarted operator to reconcile the object")
    assert ours() == before


def test_delete_removes_everything(operator: OperatorProcess, api: client.ApiClient, namespace: str) -> None:
    create(api, namespace, model_deployment("iris", replicas=2))
    wait_for(lambda: client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("iris", namespace), "the PDB")
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")
    selector = "app.kubernetes.io/instance=iris"
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)

    def everything_gone() -> bool:
        return not any([
            apps.list_namespaced_deployment(namespace, label_selector=selector).items,
            apps.list_namespaced_replica_set(namespace, label_selector=selector).items,
            core.list_namespaced_service(namespace, label_selector=selector).items,
            core.list_namespaced_config_map(namespace, label_selector=selector).items,
            policy.list_namespaced_pod_disruption_budget(namespace, label_selector=selector).items,
            core.list_namespaced_pod(namespace, label_selector=selector).items,
        ])

    wait_for(everything_gone, "the garbage collector to remove every child")


def test_no_finalizer_so_a_model_deployment_deleted_while_no_operator_runs_is_gone_with_its_children(
        operator: OperatorProcess, api: client.ApiClient, namespace: str) -> None:
    create(api, namespace, model_deployment("iris"))
    wait_for(lambda: get_md(api, namespace, "iris").get("status", {}).get("conditions"), "status")
    assert not get_md(api, namespace, "iris")["metadata"].get("finalizers"), "nothing to clean up: children are owned"
    operator.stop()
    try:
        client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "iris")

        def gone() -> bool:
            names = [md["metadata"]["name"] for md in client.CustomObjectsApi(api).list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL)["items"]]
            deployments = client.AppsV1Api(api).list_namespaced_deployment(namespace).items
            return not names and not deployments

        wait_for(gone, "the ModelDeployment and, through the garbage collector, its Deployment", timeout=30)
    finally:
        operator.start()


def test_operator_identity_is_least_privilege(devcluster: Any, operator: OperatorProcess) -> None:
    identity = f"--as=system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
    allowed = ["patch deployments.apps", "create services", "patch modeldeployments.modeldeploy.io/status",
               "watch pods", "create events", "get secrets", "list modeltrustpolicies.modeldeploy.io",
               "create jobs.batch", "delete deployments.apps"]  # analysis Jobs; a canary once promoted or rolled back
    # admission reads a ModelDeployment's key and credentials Secrets by name: it can never enumerate them
    denied = ["list secrets", "watch secrets", "update deployments.apps", "create pods", "patch jobs.batch",
              "delete modeldeployments.modeldeploy.io", "create clusterroles.rbac.authorization.k8s.io"]
    for verb_resource in allowed:
        result = devcluster.kubectl_run("auth", "can-i", *verb_resource.split(), identity, "-A", check=False)
        assert result.stdout.strip() == "yes", verb_resource
    for verb_resource in denied:
        result = devcluster.kubectl_run("auth", "can-i", *verb_resource.split(), identity, "-A", check=False)
        assert result.stdout.strip() == "no", verb_resource
