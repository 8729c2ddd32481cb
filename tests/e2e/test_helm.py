"""The operator installed with Helm (charts/modeldeploy) on the real node: the rendered chart passes
the API server's dry run; a previous chart version installed in place of the kustomize install
serves two ModelDeployments, ``helm upgrade`` rolls the operator and no model pod; ``helm
uninstall`` removes the operator and leaves the CRDs, the ModelDeployments and their pods.

The module swaps the kustomize install for the release and puts the kustomize install back
afterwards (``install_operator``), so the other modules find the cluster as they expect it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from node.helpers import wait_for

from devcluster import images
from devcluster.cluster import Cluster
from devcluster.helm import CHART, RELEASE, Helm, ensure_helm
from devcluster.story import (
    IMAGE_ARCHIVE_ANNOTATION,
    MANIFESTS,
    OPERATOR,
    OPERATOR_NAMESPACE,
    active_operator_pod,
    install_operator,
    model_deployment,
    predict,
    service_url,
)
from e2e.helpers import create_md, pods, serving

pytestmark = [pytest.mark.e2e, pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(1200)]

PREVIOUS = "0.0.9"  # the chart packaged under an older version, installed with debug logging
OPERATOR_SELECTOR = f"app.kubernetes.io/name={OPERATOR}"
MODELS = ("iris-a", "iris-b")


@pytest.fixture(scope="module")
def helm(devcluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(ensure_helm(), tmp_path_factory.mktemp("helm-home"), devcluster.admin_kubeconfig)


@pytest.fixture(scope="module")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pod annotation naming the operator image's archive, as ``install_operator`` sets it."""
    archive = images.ensure_images(product_only=True)[images.OPERATOR_IMAGE].name
    path = tmp_path_factory.mktemp("values") / "values.yaml"
    path.write_text(yaml.safe_dump({"podAnnotations": {IMAGE_ARCHIVE_ANNOTATION: archive}}))
    return path


@pytest.fixture(scope="module")
def without_kustomize_operator(devcluster: Cluster, operator: str, helm: Helm) -> Iterator[None]:
    """The kustomize install's objects deleted but its namespace and CRDs (so no ModelDeployment goes);
    afterwards any release is uninstalled and ``kubectl apply -k manifests/`` runs again."""
    rendered = devcluster.kubectl_run("kustomize", str(MANIFESTS)).stdout
    kept = {"Namespace", "CustomResourceDefinition"}
    removed = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] not in kept]
    try:
        devcluster.kubectl_run("delete", "--ignore-not-found", "--wait", "-f", "-", stdin=yaml.safe_dump_all(removed))
        devcluster.kubectl_run("-n", OPERATOR_NAMESPACE, "wait", "--for=delete", "pod",
                               f"--selector={OPERATOR_SELECTOR}", "--timeout=120s")
        yield
    finally:
        try:
            helm.run("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--ignore-not-found", "--wait")
        finally:
            install_operator(devcluster)


def release(helm: Helm) -> dict[str, Any]:
    listed = json.loads(helm.run("list", "--namespace", OPERATOR_NAMESPACE, "--output", "json").stdout)
    return next(r for r in listed if r["name"] == RELEASE)


def operator_pods(api: client.ApiClient) -> dict[str, str]:
    """The operator's live pods, UID to name."""
    found = client.CoreV1Api(api).list_namespaced_pod(OPERATOR_NAMESPACE, label_selector=OPERATOR_SELECTOR)
    return {p.metadata.uid: p.metadata.name for p in found.items if not p.metadata.deletion_timestamp}


def operator_args(api: client.ApiClient) -> list[str]:
    deployment = client.AppsV1Api(api).read_namespaced_deployment(OPERATOR, OPERATOR_NAMESPACE)
    return list(deployment.spec.template.spec.containers[0].args)


def model_pods(api: client.ApiClient, namespace: str) -> dict[str, list[int]]:
    """Every model pod's UID with its containers' restart counts."""
    return {p["metadata"]["uid"]: [c["restartCount"] for c in p["status"].get("containerStatuses") or []]
            for p in pods(api, namespace)}


def gone(read: Any, *args: str) -> bool:
    try:
        read(*args)
    except ApiException as err:
        if err.status == 404:
            return True
        raise
    return False


def test_the_rendered_chart_passes_the_api_servers_dry_run(devcluster: Cluster, operator: str, helm: Helm) -> None:
    rendered = helm.run("template", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--include-crds").stdout
    count = sum(1 for doc in yaml.safe_load_all(rendered) if doc)
    result = devcluster.kubectl_run("apply", "--dry-run=server", "--server-side", "--force-conflicts",
                                    "--field-manager=helm-dry-run", "-f", "-", stdin=rendered)
    lines = result.stdout.splitlines()
    assert len(lines) == count and all(line.endswith("(server dry run)") for line in lines), result.stdout


def test_upgrade_rolls_the_operator_and_no_model_pod_and_uninstall_leaves_the_models(
        devcluster: Cluster, without_kustomize_operator: None, helm: Helm, values_file: Path,
        api: client.ApiClient, keyed_namespace: str, bucket_url: str, tmp_path: Path) -> None:
    ns = keyed_namespace
    helm.run("package", str(CHART), "--version", PREVIOUS, "--destination", str(tmp_path))
    helm.run("install", RELEASE, str(tmp_path / f"modeldeploy-{PREVIOUS}.tgz"), "--namespace", OPERATOR_NAMESPACE,
             "--values", str(values_file), "--set", "logLevel=debug", "--wait", "--timeout=5m")
    assert release(helm)["chart"] == f"modeldeploy-{PREVIOUS}"
    assert "--verbose" in operator_args(api)

    for name in MODELS:
        create_md(api, ns, model_deployment(name, f"{bucket_url}/iris-1.0.0.tar.gz", replicas=1))
    for name in MODELS:
        wait_for(lambda name=name: serving(api, ns, name, 1), f"{name} serving", timeout=300, interval=1)
    assert predict(service_url(api, ns, MODELS[0])).status_code == 200
    before, old_operators = model_pods(api, ns), operator_pods(api)
    assert len(before) == len(MODELS)

    helm.run("upgrade", RELEASE, str(CHART), "--namespace", OPERATOR_NAMESPACE, "--values", str(values_file),
             "--wait", "--timeout=5m")
    upgraded = release(helm)
    assert (upgraded["chart"], upgraded["revision"], upgraded["status"]) == ("modeldeploy-0.1.0", "2", "deployed")
    assert "--verbose" not in operator_args(api)
    new_operators = wait_for(lambda: (live := operator_pods(api)).keys().isdisjoint(old_operators) and live,
                             "only new operator pods", timeout=120)
    assert len(new_operators) == 2
    wait_for(lambda: active_operator_pod(api) in new_operators.values(), "a new operator pod to lead", timeout=120)
    # The new leader reconciles: a child deleted by hand comes back (and resume has run for every ModelDeployment).
    core = client.CoreV1Api(api)
    core.delete_namespaced_service(MODELS[1], ns)
    wait_for(lambda: not gone(core.read_namespaced_service, MODELS[1], ns), "the deleted Service put back", timeout=120)
    for name in MODELS:  # the re-created Service's endpoints follow
        wait_for(lambda name=name: serving(api, ns, name, 1), f"{name} serving after the upgrade", timeout=60)
    assert model_pods(api, ns) == before, "a model pod was replaced or restarted by the operator's upgrade"

    helm.run("uninstall", RELEASE, "--namespace", OPERATOR_NAMESPACE, "--wait", "--timeout=5m")
    apps, rbac = client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)
    admission = client.AdmissionregistrationV1Api(api)
    wait_for(lambda: not operator_pods(api), "the operator pods gone", timeout=120)
    for read, args in [(apps.read_namespaced_deployment, (OPERATOR, OPERATOR_NAMESPACE)),
                       (core.read_namespaced_service_account, (OPERATOR, OPERATOR_NAMESPACE)),
                       (core.read_namespaced_service, ("modeldeploy-webhook", OPERATOR_NAMESPACE)),
                       (rbac.read_cluster_role, (OPERATOR,)), (rbac.read_cluster_role_binding, (OPERATOR,)),
                       (rbac.read_namespaced_role, (OPERATOR, OPERATOR_NAMESPACE)),
                       (rbac.read_namespaced_role_binding, (OPERATOR, OPERATOR_NAMESPACE)),
                       (admission.read_mutating_webhook_configuration, ("modeldeploy",)),
                       (admission.read_validating_webhook_configuration, ("modeldeploy",))]:
        assert gone(read, *args), f"{read.__name__}{args} is left after helm uninstall"
    # Helm never deletes what crds/ installed: the CRDs, so the ModelDeployments and their pods, stay.
    extensions = client.ApiextensionsV1Api(api)
    for crd in ("modeldeployments.modeldeploy.io", "modeltrustpolicies.modeldeploy.io", "clusterkopfpeerings.kopf.dev"):
        extensions.read_custom_resource_definition(crd)
    for name in MODELS:
        assert serving(api, ns, name, 1), f"{name} stopped serving when the operator was uninstalled"
    assert model_pods(api, ns) == before
