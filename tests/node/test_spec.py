"""The process node's pure pieces: images, argv, environment, back-off, phase, messages."""

from __future__ import annotations

from typing import Any

import pytest

from devcluster.node import network, spec, volumes
from devcluster.node.spec import ConfigError, Image

IMAGE = Image(("modeldeploy",), ("operator",), {"PATH": "/venv/bin:/usr/bin"})
POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "iris"}, "annotations": {}},
    "spec": {"nodeName": "devnode", "serviceAccountName": "default"},
    "status": {"podIP": "10.244.0.9", "podIPs": [{"ip": "10.244.0.9"}], "hostIP": "10.244.0.1"},
}


@pytest.mark.parametrize(("image", "runnable"), [
    ("ghcr.io/o/modeldeploy-server:0.1.0", True),
    ("modeldeploy-server", True),
    ("localhost:5000/modeldeploy-operator@sha256:abcd", True),
    ("docker.io/library/nginx:1.27", False),
    ("ghcr.io/o/modeldeploy-server-evil:1", False),
])
def test_only_this_repositorys_images_resolve(image: str, runnable: bool) -> None:
    assert (spec.resolve_image(image, spec.default_images()) is not None) is runnable


def test_command_replaces_entrypoint_and_args_replace_cmd() -> None:
    env = {"MODEL": "iris"}
    assert spec.argv({}, IMAGE, env) == ["modeldeploy", "operator"]
    assert spec.argv({"args": ["serve", "$(MODEL)"]}, IMAGE, env) == ["modeldeploy", "serve", "iris"]
    assert spec.argv({"command": ["sh", "-c"], "args": ["echo $$(MODEL) $(NOPE)"]}, IMAGE, env) == [
        "sh", "-c", "echo $(MODEL) $(NOPE)"]
    with pytest.raises(ConfigError):
        spec.argv({}, Image(()), env)


def test_environment_layers_envfrom_then_env_with_downward_api() -> None:
    data = {("configmap", "cm"): {"a": "1", "b": "2"}, ("secret", "s"): {"token": "t"}}

    def lookup_all(kind: str, name: str, optional: bool) -> dict[str, str] | None:
        return data.get((kind, name))

    def lookup(kind: str, name: str, key: str, optional: bool) -> str | None:
        return (data.get((kind, name)) or {}).get(key)

    container = {
        "envFrom": [{"configMapRef": {"name": "cm"}}, {"prefix": "S_", "secretRef": {"name": "s"}}],
        "env": [
            {"name": "a", "value": "override-$(b)"},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
        ],
        "resources": {"limits": {"memory": "512Mi"}},
    }
    env = spec.environment(POD, container, IMAGE, lookup, lookup_all)
    assert env == {"PATH": "/venv/bin:/usr/bin", "a": "override-2", "b": "2", "S_token": "t", "IP": "10.244.0.9",
                   "APP": "iris", "MEM": "512", "TOKEN": "t"}
    with pytest.raises(ConfigError):
        spec.field_value(POD, "status.nope")


def test_back_off_doubles_up_to_the_cap() -> None:
    assert [spec.backoff(n) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]


def test_termination_message_falls_back_to_logs_only_on_error() -> None:
    fallback = {"terminationMessagePolicy": "FallbackToLogsOnError"}
    assert spec.termination_message({}, b"from file", "logs", 1) == "from file"
    assert spec.termination_message(fallback, b"", "logs", 1) == "logs"
    assert spec.termination_message(fallback, b"", "logs", 0) == ""
    assert spec.termination_message({}, b"", "logs", 1) == ""
    assert len(spec.termination_message({}, b"x" * 10000, "", 0)) == spec.MAX_MESSAGE


@pytest.mark.parametrize(("policy", "states", "phase"), [
    ("Always", [{"waiting": {}}], "Pending"),
    ("Always", [{"running": {}}], "Running"),
    ("Always", [{"terminated": {"exitCode": 0}}], "Running"),
    ("Never", [{"terminated": {"exitCode": 0}}], "Succeeded"),
    ("Never", [{"terminated": {"exitCode": 1}}, {"terminated": {"exitCode": 0}}], "Failed"),
    ("OnFailure", [{"terminated": {"exitCode": 1}}], "Running"),
])
def test_pod_phase_follows_states_and_restart_policy(policy: str, states: list[dict[str, Any]], phase: str) -> None:
    statuses = [{"state": s, "lastState": {}} for s in states]
    assert spec.pod_phase(policy, False, statuses) == phase


def test_failed_init_fails_the_pod_only_under_restart_policy_never() -> None:
    waiting = [{"state": {"waiting": {"reason": "PodInitializing"}}, "lastState": {}}]
    assert spec.pod_phase("Never", True, waiting) == "Failed"
    assert spec.pod_phase("Always", True, waiting) == "Pending"


def test_conditions_keep_transition_time_and_name_what_is_missing() -> None:
    init = [{"name": "fetch", "state": {"waiting": {}}}]
    main = [{"name": "server", "ready": False, "state": {"waiting": {}}}]
    first = spec.pod_conditions(POD, False, True, init, main, "t1")
    by_type = {c["type"]: c for c in first}
    assert by_type["Initialized"]["message"] == "containers with incomplete status: [fetch]"
    assert by_type["Ready"]["message"] == "containers with unready status: [server]"
    later = spec.pod_conditions({**POD, "status": {"conditions": first}}, False, True, init, main, "t2")
    assert all(c["lastTransitionTime"] == "t1" for c in later)


def test_node_network_names_fit_linux_limits() -> None:
    net = network.NodeNetwork.for_cidr("10.244.3.0/24")
    uid = "0f8c2d1e-aaaa-bbbb-cccc-1234567890ab"
    assert net.gateway == "10.244.3.1"
    assert len(net.bridge) <= 15 and len(net.host_veth(uid)) <= 15
    assert net.netns(uid).startswith(net.prefix)
    assert network.NodeNetwork.for_cidr("10.244.4.0/24").prefix != net.prefix
    pool = network.AddressPool(net.cidr)
    first = pool.allocate()
    assert first == "10.244.3.2"
    pool.release(first)
    assert first in {pool.allocate() for _ in range(253)}


def test_mounts_reject_escaping_sub_paths(tmp_path: Any) -> None:
    container = {"volumeMounts": [{"name": "v", "mountPath": "/x", "subPath": "../../etc"}]}
    with pytest.raises(ConfigError):
        volumes.mounts(container, {"v": str(tmp_path)}, {})
    nested = {"volumeMounts": [{"name": "v", "mountPath": "/a/b"}, {"name": "v", "mountPath": "/a"}]}
    assert [m.target for m in volumes.mounts(nested, {"v": str(tmp_path)}, {})] == ["/a", "/a/b"]


def test_public_surface_is_a_sorted_all_of_existing_names() -> None:
    import devcluster.node

    assert devcluster.node.__all__ == sorted(devcluster.node.__all__)
    assert all(hasattr(devcluster.node, name) for name in devcluster.node.__all__)
