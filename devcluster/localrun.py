"""Run the operator as a local child process against a cluster (integration tests, benchmarks).

`install(cluster)` applies the install manifests with the cluster's kubectl; `OperatorProcess` starts
`modeldeploy operator` with a given kubeconfig (in tests, the operator ServiceAccount's, so
RBAC applies), waits for kopf's liveness endpoint, and collects its JSON log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster.child import stop_child, wait_answering
from devcluster.ports import free_ports

if TYPE_CHECKING:
    from devcluster.cluster import Cluster

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
OPERATOR_NAMESPACE = "modeldeploy-system"
OPERATOR = "modeldeploy-operator"  # the operator's Deployment and its ServiceAccount
OPERATOR_SERVICE_ACCOUNT = OPERATOR
WEBHOOKS = "modeldeploy"  # the Mutating- and ValidatingWebhookConfiguration


def apply_install(cluster: Cluster, manifests: Path = MANIFESTS) -> None:
    """``kubectl apply -k manifests/`` (CRDs, RBAC, the operator Deployment); wait until the CRDs are Established.

    The webhook configurations are re-created: an operator run out of cluster points them at a URL,
    which a re-apply (naming the Service) cannot merge with.
    """
    cluster.kubectl_run("delete", "--ignore-not-found", f"mutatingwebhookconfiguration/{WEBHOOKS}",
                        f"validatingwebhookconfiguration/{WEBHOOKS}")
    cluster.kubectl_run("apply", "--server-side", "--force-conflicts", "-k", str(manifests))
    cluster.kubectl_run("wait", "--for=condition=Established", "--timeout=60s",
                        "crd/modeldeployments.modeldeploy.io", "crd/modeltrustpolicies.modeldeploy.io",
                        "crd/clusterkopfpeerings.kopf.dev")


def install(cluster: Cluster, manifests: Path = MANIFESTS) -> None:
    """Apply the install with the operator Deployment scaled to zero (this process stands in for it).

    ``restore()`` scales it back, so a cluster whose operator runs as a pod gets it again.
    """
    apply_install(cluster, manifests)
    cluster.kubectl_run("-n", OPERATOR_NAMESPACE, "scale", f"deployment/{OPERATOR}", "--replicas=0")
    cluster.kubectl_run("-n", OPERATOR_NAMESPACE, "wait", "--for=delete", "pod",
                        f"--selector=app.kubernetes.io/name={OPERATOR}", "--timeout=120s")


def restore(cluster: Cluster, manifests: Path = MANIFESTS) -> None:
    """Re-apply the install as written (the operator Deployment at its replicas again)."""
    apply_install(cluster, manifests)


def _modeldeploy() -> list[str]:
    """The `modeldeploy` console script of this environment (or the same entry point via -c)."""
    script = Path(sys.executable).parent / "modeldeploy"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from modeldeploy.cli import main; main()"]


class OperatorProcess:
    """`modeldeploy operator` as a child process, its JSON log appended to `log`."""

    def __init__(self, kubeconfig: Path, log: Path, server_image: str, peering: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.server_image = server_image
        self.peering = peering or f"local-{uuid.uuid4().hex[:8]}"
        self.process: subprocess.Popen[bytes] | None = None
        self.metrics_url: str | None = None  # http://127.0.0.1:PORT/metrics once started

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the operator and wait until its liveness endpoint answers 200."""
        port, webhook_port, metrics_port = free_ports(3)
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        command = [
            *_modeldeploy(), "operator",
            "--kubeconfig", str(self.kubeconfig), "--server-image", self.server_image,
            "--peering", self.peering, "--liveness", f"http://127.0.0.1:{port}/healthz",
            "--webhook-port", str(webhook_port), "--webhook-url", f"https://127.0.0.1:{webhook_port}",
            "--metrics-port", str(metrics_port), "--metrics-address", "127.0.0.1",
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_answering(f"http://127.0.0.1:{port}/healthz", self.process, self.log, timeout, name="the operator")
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate the operator (SIGTERM, then SIGKILL after 20 s)."""
        if self.process is not None:
            stop_child(self.process, timeout=20)
        self.process = None

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records written so far."""
        if not self.log.exists():
            return []
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def cpu_seconds(self) -> float:
        """User + system CPU time the operator process has used."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mib(self) -> tuple[float, float]:
        """(current, peak) resident memory of the operator process in MiB."""
        fields = dict(
            line.split(":", 1) for line in Path(f"/proc/{self.pid}/status").read_text().splitlines() if ":" in line
        )
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
