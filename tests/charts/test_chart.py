"""The Helm chart (charts/modeldeploy) renders, with its defaults, exactly the kustomize install
(``kubectl kustomize manifests/``), object by object; its values change only what they name;
bad values are refused by its schema; ``helm lint --strict`` passes. No cluster: ``helm`` and
``kubectl`` are the cached builds (scripts/build-helm.sh, ``make k8s-binaries``)."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster import build
from devcluster.helm import CHART, RELEASE, Helm, HelmError, ensure_helm

ROOT = Path(__file__).parents[2]
NAMESPACE = "modeldeploy-system"
# What Helm's convention adds to every templated object; the kustomize install has none of them.
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance",
               "app.kubernetes.io/version"}
Key = tuple[str, str | None, str]


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader, but floats as YAML 1.2 reads them: kustomize writes ``1.0e-06`` as ``1e-06``,
    which YAML 1.1 (PyYAML) would take for a string."""


YAML12_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
Yaml12Loader.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+.0123456789"))


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(ensure_helm(), tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="module")
def kustomized() -> dict[Key, dict[str, Any]]:
    kubectl = build.ensure_binaries().kubectl
    out = subprocess.run([str(kubectl), "kustomize", str(ROOT / "manifests")], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    return by_key(out)


def by_key(text: str) -> dict[Key, dict[str, Any]]:
    """The objects of a multi-document YAML stream by (kind, namespace, name); no two share one."""
    objects = [doc for doc in yaml.load_all(text, Loader=Yaml12Loader) if doc]
    keyed = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects}
    assert len(keyed) == len(objects), "two objects with the same kind, namespace and name"
    return keyed


def template(helm: Helm, *args: str, namespace: str = NAMESPACE) -> dict[Key, dict[str, Any]]:
    return by_key(helm.run("template", RELEASE, str(CHART), "--namespace", namespace, *args).stdout)


def without_labels(obj: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """``obj`` without these metadata labels (and without ``labels`` if none is left)."""
    stripped = copy.deepcopy(obj)
    labels = {k: v for k, v in (stripped["metadata"].pop("labels", None) or {}).items() if k not in names}
    if labels:
        stripped["metadata"]["labels"] = labels
    return stripped


def operator_container(objects: dict[Key, dict[str, Any]], namespace: str = NAMESPACE) -> dict[str, Any]:
    deployment = objects[("Deployment", namespace, "modeldeploy-operator")]
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def test_default_values_render_the_kustomize_install_object_by_object(
        helm: Helm, kustomized: dict[Key, dict[str, Any]]) -> None:
    chart = template(helm, "--include-crds")
    # The chart installs into the release namespace, so it does not create it (README: helm install -n ...).
    assert set(kustomized) - set(chart) == {("Namespace", None, NAMESPACE)}
    assert set(chart) - set(kustomized) == set()
    for key, obj in chart.items():
        expected = kustomized[key]
        if key[0] == "CustomResourceDefinition":
            # crds/ is installed verbatim (no templating), so kustomize's common label is the one difference.
            expected = without_labels(expected, {"app.kubernetes.io/part-of"})
        assert without_labels(obj, HELM_LABELS) == expected, f"{key} differs from manifests/"


def test_the_chart_crds_are_the_generated_crds_byte_for_byte() -> None:
    sources = [*sorted((ROOT / "crds").glob("*.yaml")), ROOT / "manifests" / "kopf-peering.yaml"]
    sources.remove(ROOT / "crds" / "kustomization.yaml")
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == sorted(p.name for p in sources)
    for source in sources:
        assert (CHART / "crds" / source.name).read_bytes() == source.read_bytes(), f"run `make crds` ({source.name})"


def test_every_templated_object_carries_the_helm_labels_of_this_chart(helm: Helm) -> None:
    for key, obj in template(helm).items():
        labels = obj["metadata"]["labels"]
        assert labels["helm.sh/chart"] == "modeldeploy-0.1.0", key
        assert labels["app.kubernetes.io/managed-by"] == "Helm", key
        assert labels["app.kubernetes.io/part-of"] == "modeldeploy", key


def test_the_release_namespace_replaces_modeldeploy_system_everywhere(helm: Helm) -> None:
    objects = template(helm, namespace="ml-operators")
    text = yaml.safe_dump_all(list(objects.values()))
    assert NAMESPACE not in text
    namespaced = {key for key in objects if key[1] is not None}
    assert {key[1] for key in namespaced} == {"ml-operators"}
    binding = objects[("ClusterRoleBinding", None, "modeldeploy-operator")]
    assert binding["subjects"][0]["namespace"] == "ml-operators"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        service = objects[(kind, None, "modeldeploy")]["webhooks"][0]["clientConfig"]["service"]
        assert service == {**service, "name": "modeldeploy-webhook", "namespace": "ml-operators"}


def test_values_set_the_operator_deployment(helm: Helm) -> None:
    values = ["--set", "image.repository=registry.example/op", "--set", "image.tag=1.2.3",
              "--set", "image.pullPolicy=Always", "--set", "serverImage.repository=registry.example/srv",
              "--set", "replicas=3", "--set", "logLevel=debug", "--set", "logFormat=plain",
              "--set", "watchNamespaces={team-a,team-b}", "--set", "resources.limits.memory=1Gi",
              "--set", "podAnnotations.example\\.com/owner=ml", "--set", "nodeSelector.pool=system",
              "--set", "tolerations[0].key=dedicated", "--set", "tolerations[0].operator=Exists",
              "--set", "metrics.port=9100"]
    objects = template(helm, *values)
    deployment = objects[("Deployment", NAMESPACE, "modeldeploy-operator")]
    pod = deployment["spec"]["template"]
    container = operator_container(objects)
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "registry.example/op:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["args"] == ["operator", "--peering=modeldeploy", "--liveness=http://0.0.0.0:8080/healthz",
                                 "--metrics-port=9100", "--log-format=plain", "--verbose", "--namespace=team-a",
                                 "--namespace=team-b"]
    assert {"name": "metrics", "containerPort": 9100} in container["ports"]
    assert {"name": "MODELDEPLOY_SERVER_IMAGE", "value": "registry.example/srv:0.1.0"} in container["env"]
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}
    assert pod["metadata"]["annotations"] == {"example.com/owner": "ml"}
    assert pod["spec"]["nodeSelector"] == {"pool": "system"}
    assert pod["spec"]["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]
    # The selector stays that of manifests/ (immutable), whatever the values.
    assert deployment["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "modeldeploy-operator"}}


def test_metrics_port_zero_turns_the_operator_metrics_off(helm: Helm) -> None:
    container = operator_container(template(helm, "--set", "metrics.port=0"))
    assert "--metrics-port=0" in container["args"]
    assert "metrics" not in [port["name"] for port in container["ports"]]


def test_the_image_tags_default_to_the_app_version(helm: Helm) -> None:
    container = operator_container(template(helm, "--set", "image.repository=op", "--set", "serverImage.tag=v9"))
    assert container["image"] == "op:0.1.0"
    assert {"name": "MODELDEPLOY_SERVER_IMAGE", "value": "modeldeploy-server:v9"} in container["env"]


@pytest.mark.parametrize(("value", "field"), [
    ("logLevel=loud", "logLevel"),
    ("logFormat=xml", "logFormat"),
    ("replicas=-1", "replicas"),
    ("image.pullPolicy=Sometimes", "pullPolicy"),
    ("watchNamespaces={Not_A_Namespace}", "watchNamespaces"),
    ("qps=50", "qps"),  # the operator has no such flag: a value it would ignore is refused, not dropped
])
def test_bad_values_are_refused_by_the_schema_naming_the_field(helm: Helm, value: str, field: str) -> None:
    with pytest.raises(HelmError) as refused:
        template(helm, "--set", value)
    assert "values don't meet the specifications of the schema" in refused.value.stderr
    assert field in refused.value.stderr


def test_helm_lint_strict_passes(helm: Helm) -> None:
    result = helm.run("lint", "--strict", str(CHART), "--namespace", NAMESPACE)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout
