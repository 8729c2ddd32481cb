"""A pod's volumes as directories of the node, and each container's bind mounts.

Owns ``<pod dir>/volumes/<name>``: emptyDir is a directory, configMap/secret/downwardAPI/
projected are files written from the API objects (read through the node's own identity, so
the Node authorizer decides), hostPath is the host path itself and a PVC resolves to its
bound hostPath/local PersistentVolume. Mounting happens in ``devcluster.node.launch``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.node.spec import ConfigError, Container, Pod, expand, field_value, resource_value

TOKEN_SECONDS = 3607


@dataclass(frozen=True)
class Mount:
    """One bind mount of a container: ``source`` (on the node) at ``target`` (in the container)."""

    source: str
    target: str
    read_only: bool


class Sources:
    """Reads ConfigMaps, Secrets, PVCs, PVs and tokens for one pod through the API server."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core, self.namespace = core, namespace

    def _read(self, kind: str, name: str, optional: bool) -> Mapping[str, str] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            if kind == "configmap":
                cm = self.core.read_namespaced_config_map(name, self.namespace)
                binary = {k: base64.b64decode(v).decode(errors="replace") for k, v in (cm.binary_data or {}).items()}
                return {**(cm.data or {}), **binary}
            secret = self.core.read_namespaced_secret(name, self.namespace)
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in (secret.data or {}).items()}
        except ApiException as err:
            if err.status == 404 and optional:
                return None
            if err.status == 404:
                raise ConfigError(f'{kind} "{name}" not found') from err
            raise

    def read_all(self, kind: str, name: str, optional: bool) -> Mapping[str, str] | None:
        return self._read(kind, name, optional)

    def read_key(self, kind: str, name: str, key: str, optional: bool) -> str | None:
        values = self._read(kind, name, optional)
        if values is None:
            return None
        if key not in values:
            if optional:
                return None
            raise ConfigError(f'couldn\'t find key {key} in {kind} {self.namespace}/{name}')
        return values[key]

    def token(self, pod: Pod, source: Mapping[str, Any]) -> str:
        meta = pod["metadata"]
        body = {"spec": {
            "audiences": [source["audience"]] if source.get("audience") else [],
            "expirationSeconds": source.get("expirationSeconds", TOKEN_SECONDS),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]},
        }}
        account = pod["spec"].get("serviceAccountName") or "default"
        return str(self.core.create_namespaced_service_account_token(account, self.namespace, body).status.token)

    def claim_path(self, claim: str) -> str:
        pvc = self.core.read_namespaced_persistent_volume_claim(claim, self.namespace)
        if not pvc.spec.volume_name:
            raise ConfigError(f'persistentvolumeclaim "{claim}" is not bound')
        pv = self.core.read_persistent_volume(pvc.spec.volume_name)
        backing = pv.spec.host_path or pv.spec.local
        if backing is None:
            raise ConfigError(f"persistentvolume {pv.metadata.name} is neither hostPath nor local")
        return str(backing.path)


def _write(directory: Path, relative: str, content: str | bytes, mode: int) -> None:
    target = (directory / relative).resolve()
    if directory.resolve() not in target.parents:
        raise ConfigError(f"volume item path {relative!r} leaves the volume")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content.encode() if isinstance(content, str) else content)
    target.chmod(mode)


def _key_files(values: Mapping[str, str], items: list[dict[str, Any]] | None, name: str) -> dict[str, tuple[str, int | None]]:
    """Relative path -> (content, mode) for a configMap/secret projection with optional ``items``."""
    if not items:
        return {k: (v, None) for k, v in values.items()}
    missing = [i["key"] for i in items if i["key"] not in values]
    if missing:
        raise ConfigError(f"configmap/secret {name} has no key {missing[0]!r}")
    return {i["path"]: (values[i["key"]], i.get("mode")) for i in items}


def _downward_files(pod: Pod, items: list[dict[str, Any]]) -> dict[str, tuple[str, int | None]]:
    out: dict[str, tuple[str, int | None]] = {}
    for item in items:
        if ref := item.get("fieldRef"):
            value = field_value(pod, ref["fieldPath"])
        else:
            ref = item["resourceFieldRef"]
            container = next(c for c in pod["spec"]["containers"] if c["name"] == ref.get("containerName"))
            value = resource_value(container, ref)
        out[item["path"]] = (value, item.get("mode"))
    return out


def _projection(pod: Pod, volume: Mapping[str, Any], sources: Sources) -> dict[str, tuple[str, int | None]]:
    """The files of a configMap, secret, downwardAPI or projected volume (None: optional, absent)."""
    if spec := volume.get("configMap") or volume.get("secret"):
        kind = "configmap" if "configMap" in volume else "secret"
        name = spec.get("name") or spec.get("secretName")
        values = sources.read_all(kind, name, bool(spec.get("optional")))
        return _key_files(values or {}, spec.get("items"), name)
    if spec := volume.get("downwardAPI"):
        return _downward_files(pod, spec.get("items") or [])
    files: dict[str, tuple[str, int | None]] = {}
    for source in volume["projected"].get("sources") or []:
        if token := source.get("serviceAccountToken"):
            files[token["path"]] = (sources.token(pod, token), None)
        elif "downwardAPI" in source:
            files.update(_downward_files(pod, source["downwardAPI"].get("items") or []))
        else:
            files.update(_projection(pod, source, sources))
    return files


def materialize(pod: Pod, pod_dir: Path, sources: Sources) -> dict[str, str]:
    """Create every volume of ``pod``; return volume name -> node path.

    Raises:
        ConfigError: a volume cannot be provided (missing object or key, unsupported type).
    """
    paths: dict[str, str] = {}
    for volume in pod["spec"].get("volumes") or []:
        name, directory = volume["name"], pod_dir / "volumes" / volume["name"]
        if "emptyDir" in volume:
            directory.mkdir(parents=True, exist_ok=True)
        elif "hostPath" in volume:
            spec = volume["hostPath"]
            path = Path(spec["path"])
            if spec.get("type") == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif spec.get("type") == "FileOrCreate" and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            elif spec.get("type") and not path.exists():
                raise ConfigError(f"hostPath {path} does not exist (type {spec['type']})")
            directory = path
        elif "persistentVolumeClaim" in volume:
            directory = Path(sources.claim_path(volume["persistentVolumeClaim"]["claimName"]))
        elif any(k in volume for k in ("configMap", "secret", "downwardAPI", "projected")):
            spec = volume.get("configMap") or volume.get("secret") or volume.get("downwardAPI") or volume["projected"]
            default_mode = spec.get("defaultMode", 0o644)
            directory.mkdir(parents=True, exist_ok=True)
            for relative, (content, mode) in _projection(pod, volume, sources).items():
                _write(directory, relative, content, mode if mode is not None else default_mode)
        else:
            raise ConfigError(f"volume {name!r}: unsupported volume type {sorted(set(volume) - {'name'})}")
        paths[name] = str(directory)
    return paths


def mounts(container: Container, volumes: Mapping[str, str], env: Mapping[str, str]) -> list[Mount]:
    """The container's bind mounts, parents before children; subPaths are created in emptyDirs."""
    out: list[Mount] = []
    for mount in container.get("volumeMounts") or []:
        if mount["name"] not in volumes:
            raise ConfigError(f"volumeMount {mount['name']!r} names no volume of the pod")
        source = Path(volumes[mount["name"]])
        sub = mount.get("subPath") or expand(mount.get("subPathExpr", ""), env)
        if sub:
            if os.path.isabs(sub) or ".." in Path(sub).parts:
                raise ConfigError(f"subPath {sub!r} must be a relative path inside the volume")
            source = source / sub
            if not source.exists():
                source.mkdir(parents=True)
        out.append(Mount(str(source), mount["mountPath"], bool(mount.get("readOnly"))))
    return sorted(out, key=lambda m: len(Path(m.target).parts))


def mount_points(targets: list[Mount]) -> list[Path]:
    """Create the missing mount points not inside another mount; return what was created (deepest last)."""
    created: list[Path] = []
    inside = {m.target for m in targets for other in targets
              if other.target != m.target and Path(other.target) in Path(m.target).parents}
    for mount in targets:
        if mount.target in inside or os.path.lexists(mount.target):
            continue
        target = Path(mount.target)
        missing = [p for p in [target, *target.parents] if not os.path.lexists(p)]
        for path in reversed(missing):
            if path == target and Path(mount.source).is_file():
                path.touch()
            else:
                path.mkdir(exist_ok=True)
            created.append(path)
    return created
