"""Kubeconfig files for the local control plane: pure rendering plus one writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CLUSTER_NAME = "devcluster"


def render_kubeconfig(server: str, ca: Path, *, cert: Path | None = None, key: Path | None = None,
                      token: str | None = None, user: str = "admin") -> dict[str, Any]:
    """A kubeconfig with one context; authenticates by client certificate or by bearer token."""
    if (cert is None) == (token is None):
        raise ValueError("give either a client certificate or a token")
    credentials: dict[str, Any] = (
        {"token": token} if token is not None else {"client-certificate": str(cert), "client-key": str(key)}
    )
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": f"{user}@{CLUSTER_NAME}", "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": f"{user}@{CLUSTER_NAME}",
        "preferences": {},
    }


def write_kubeconfig(path: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` readable only by its owner (it holds credentials)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
