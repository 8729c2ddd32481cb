"""Helm for the chart in ``charts/modeldeploy``: the binary ``scripts/build-helm.sh`` builds once per
machine, and ``helm`` commands run with a kubeconfig and Helm directories of their own.

Helm's cache, config and data go under ``Helm.home``, so tests never read or write the user's
``~/.config/helm`` (repositories, plugins). Nothing here talks to a cluster but ``helm`` itself.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devcluster.cluster import ToolError

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "modeldeploy"
BUILD_SCRIPT = ROOT / "scripts" / "build-helm.sh"
RELEASE = "modeldeploy"


class HelmError(ToolError):
    """``helm`` exited non-zero."""

    tool = "helm"


def ensure_helm() -> Path:
    """The ``helm`` binary ``scripts/build-helm.sh`` builds (first run: minutes) or reuses."""
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Helm:
    """``helm`` with its own directories under ``home`` and, for cluster commands, a kubeconfig."""

    binary: Path
    home: Path
    kubeconfig: Path | None = None

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
            **({"KUBECONFIG": str(self.kubeconfig)} if self.kubeconfig else {}),
        }

    def run(self, *args: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """``helm ARGS``, output captured as text; with ``check``, a non-zero exit raises ``HelmError``."""
        result = subprocess.run([str(self.binary), *args], capture_output=True, text=True, timeout=timeout,
                                env=self.environment(), check=False)
        if check and result.returncode != 0:
            raise HelmError(args, result)
        return result
