"""Pure pieces of the node: image map, command and environment resolution, pod status.

Nothing here does I/O; ``devcluster.node.pod`` feeds it the pod (as a plain dict, the API's
JSON) and the objects it fetched, and writes what it returns.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Pod = dict[str, Any]
Container = dict[str, Any]

BACKOFF_BASE = 10.0
BACKOFF_MAX = 300.0
MAX_MESSAGE = 4096
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class ConfigError(ValueError):
    """A container cannot be configured (missing ConfigMap/Secret key, bad fieldRef, ...)."""


@dataclass(frozen=True)
class Image:
    """What a runnable image provides: ENTRYPOINT, CMD and environment (as in the Dockerfile)."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def venv_bin() -> Path:
    """The ``bin`` directory of the Python environment this node runs from."""
    return Path(sys.executable).parent


def runtime_paths() -> list[str]:
    """What the images' processes need to stay visible: the Python environment and this checkout."""
    checkout = Path(__file__).resolve().parents[2]
    paths = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), checkout}
    return sorted(str(path) for path in paths)


def default_images() -> dict[str, Image]:
    """This repository's images (see the Dockerfile), run from this Python environment."""
    env = {
        "PATH": f"{venv_bin()}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    return {
        "modeldeploy-server": Image(("modeldeploy",), (), env),
        "modeldeploy-operator": Image(("modeldeploy",), ("operator",), env),
    }


def repository(image: str) -> str:
    """``ghcr.io/o/modeldeploy-server:0.1.0@sha256:..`` -> ``modeldeploy-server``."""
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return name.split(":", 1)[0]


def resolve_image(image: str, images: Mapping[str, Image]) -> Image | None:
    """The runnable image for ``image``, or None when this node cannot "pull" it."""
    return images.get(repository(image))


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes, others stay."""
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(sub, text)


def argv(container: Container, image: Image, env: Mapping[str, str]) -> list[str]:
    """The process's argv: ``command`` replaces ENTRYPOINT, ``args`` replaces CMD."""
    command = container.get("command")
    args = container.get("args")
    if command:
        words = [*command, *(args or [])]
    else:
        words = [*image.entrypoint, *(args if args is not None else image.cmd)]
    if not words:
        raise ConfigError("no command: the image has no entrypoint and the container gives none")
    return [expand(w, env) for w in words]


def field_value(pod: Pod, path: str) -> str:
    """The downward API's ``fieldRef.fieldPath`` for ``pod``."""
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    if m := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: meta["name"],
        "metadata.namespace": lambda: meta["namespace"],
        "metadata.uid": lambda: meta["uid"],
        "spec.nodeName": lambda: spec.get("nodeName", ""),
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName", ""),
        "status.hostIP": lambda: status.get("hostIP", ""),
        "status.podIP": lambda: status.get("podIP", ""),
        "status.podIPs": lambda: ",".join(p["ip"] for p in status.get("podIPs") or []),
        "metadata.labels": lambda: "\n".join(f'{k}="{v}"' for k, v in sorted((meta.get("labels") or {}).items())),
        "metadata.annotations": lambda: "\n".join(
            f'{k}="{v}"' for k, v in sorted((meta.get("annotations") or {}).items())),
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldPath {path!r}")
    return str(simple[path]())


def resource_value(container: Container, ref: Mapping[str, Any]) -> str:
    """The downward API's ``resourceFieldRef`` (limits/requests of cpu, memory, ephemeral-storage)."""
    from kubernetes.utils import parse_quantity

    kind, _, resource = ref["resource"].partition(".")
    value = (container.get("resources") or {}).get(kind, {}).get(resource)
    if value is None:
        return "0"
    divisor = parse_quantity(ref.get("divisor", "1"))
    quotient = parse_quantity(value) / divisor
    return str(int(-(-quotient // 1)))  # ceiling, as the kubelet rounds up


Lookup = Callable[[str, str, str, bool], "str | None"]
"""``lookup(kind, name, key, optional)`` -> value; kind is ``configmap`` or ``secret``."""

ListLookup = Callable[[str, str, bool], "Mapping[str, str] | None"]
"""``lookup_all(kind, name, optional)`` -> every key of the object."""


def environment(pod: Pod, container: Container, image: Image, lookup: Lookup, lookup_all: ListLookup) -> dict[str, str]:
    """The container's environment: image env, then ``envFrom``, then ``env`` (later wins)."""
    env: dict[str, str] = dict(image.env)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            if ref := source.get(key):
                values = lookup_all(kind, ref["name"], bool(ref.get("optional")))
                env.update({f"{prefix}{k}": v for k, v in (values or {}).items()})
    for var in container.get("env") or []:
        name, source = var["name"], var.get("valueFrom")
        if source is None:
            env[name] = expand(var.get("value", ""), env)
        elif ref := source.get("fieldRef"):
            env[name] = field_value(pod, ref["fieldPath"])
        elif ref := source.get("resourceFieldRef"):
            env[name] = resource_value(container, ref)
        else:
            kind, ref = ("configmap", source["configMapKeyRef"]) if "configMapKeyRef" in source else (
                "secret", source["secretKeyRef"])
            value = lookup(kind, ref["name"], ref["key"], bool(ref.get("optional")))
            if value is not None:
                env[name] = value
    return env


def backoff(restarts: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """The kubelet's crash-loop back-off: base, 2*base, 4*base, ... capped."""
    return float(min(cap, base * 2 ** max(0, restarts)))


def termination_message(container: Container, message_file: bytes | None, log_tail: str, exit_code: int) -> str:
    """The terminated state's message per ``terminationMessagePolicy``."""
    message = (message_file or b"")[:MAX_MESSAGE].decode(errors="replace")
    if not message and exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        message = log_tail[-2048:]
    return message


def condition(type_: str, ok: bool, reason: str | None, message: str | None, now: str,
              previous: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A pod condition that keeps ``lastTransitionTime`` while its status is unchanged."""
    status = "True" if ok else "False"
    old = previous.get(type_)
    since = old["lastTransitionTime"] if old and old.get("status") == status and old.get("lastTransitionTime") else now
    out: dict[str, Any] = {"type": type_, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
    if not ok and reason:
        out["reason"] = reason
        if message:
            out["message"] = message
    return out


def pod_conditions(pod: Pod, init_done: bool, sandbox: bool, init_statuses: list[dict[str, Any]],
                   statuses: list[dict[str, Any]], now: str) -> list[dict[str, Any]]:
    """PodReadyToStartContainers, Initialized, ContainersReady and Ready as a kubelet computes them."""
    previous = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    pending_init = [s["name"] for s in init_statuses if not _succeeded(s)]
    unready = [s["name"] for s in statuses if not s["ready"]]
    succeeded_pod = statuses and all(_succeeded(s) for s in statuses)
    ready_reason = "PodCompleted" if succeeded_pod else "ContainersNotReady"
    ready_message = None if succeeded_pod else f"containers with unready status: [{' '.join(unready)}]"
    out = [
        condition("PodReadyToStartContainers", sandbox, None, None, now, previous),
        condition("Initialized", init_done, "ContainersNotInitialized",
                  f"containers with incomplete status: [{' '.join(pending_init)}]", now, previous),
        condition("ContainersReady", not unready, ready_reason, ready_message, now, previous),
        condition("Ready", not unready, ready_reason, ready_message, now, previous),
    ]
    if "PodScheduled" in previous:
        out.append(previous["PodScheduled"])
    return out


def _succeeded(status: Mapping[str, Any]) -> bool:
    terminated = status.get("state", {}).get("terminated")
    return bool(terminated and terminated.get("exitCode") == 0)


def pod_phase(restart_policy: str, init_failed: bool, statuses: list[dict[str, Any]]) -> str:
    """Pending / Running / Succeeded / Failed from the container states and the restart policy."""
    if init_failed and restart_policy == "Never":
        return "Failed"
    states = [s["state"] for s in statuses]
    if any("running" in s for s in states):
        return "Running"
    if states and all("terminated" in s for s in states):
        failed = any(s["terminated"].get("exitCode") != 0 for s in states)
        if restart_policy == "Always" or (failed and restart_policy == "OnFailure"):
            return "Running"
        return "Failed" if failed else "Succeeded"
    if any("running" in s.get("lastState", {}) or "terminated" in s.get("lastState", {}) for s in statuses):
        return "Running"
    return "Pending"

