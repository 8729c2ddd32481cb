"""What each control-plane process is: its command line, log and health endpoint.

Pure: builds ``ProcessSpec`` values from a ``Layout`` (the files of one state directory),
the ports and the binaries. Starting and stopping them is ``devcluster.process``'s job.
A later component (e.g. the node agent) is just one more ``ProcessSpec``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devcluster.build import Binaries
from devcluster.pki import client_cert_paths

HOST = "127.0.0.1"
SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN = ("admin", ("system:masters",))


@dataclass(frozen=True)
class Ports:
    """Ports of one cluster (all on loopback but the API server's, which listens on ``address``)."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    address: str = HOST

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.apiserver}"


@dataclass(frozen=True)
class Layout:
    """The files of one cluster's state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def kubeconfigs(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kubeconfigs / "admin.yaml"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    def kubeconfig(self, user: str) -> Path:
        return self.kubeconfigs / f"{user.replace(':', '_')}.yaml"

    def pem(self, stem: str) -> Path:
        return self.pki / stem


@dataclass(frozen=True)
class Probe:
    """An HTTP(S) endpoint that answers 200 when a condition holds.

    ``ca`` verifies the server (``None``: a self-signed loopback certificate, not
    verified); ``cert``/``key`` authenticate the probe as a client.
    """

    url: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class ProcessSpec:
    """One process to supervise: its command line, log file and probes.

    ``health`` answers 200 when the process is ready. The next start stage waits for
    ``gate`` (default: ``health``'s port accepting connections).
    """

    name: str
    argv: tuple[str, ...]
    log: Path
    health: Probe
    gate: Probe | None = None


def etcd_spec(bins: Binaries, layout: Layout, ports: Ports) -> ProcessSpec:
    client = f"http://{HOST}:{ports.etcd_client}"
    peer = f"http://{HOST}:{ports.etcd_peer}"
    argv = (
        str(bins.etcd),
        "--name=devcluster",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=devcluster={peer}",
        "--unsafe-no-fsync",  # a disposable test store: durability traded for speed
        "--quota-backend-bytes=2147483648",
        "--log-level=warn",
    )
    return ProcessSpec("etcd", argv, layout.logs / "etcd.log", Probe(f"{client}/readyz"))


def apiserver_spec(bins: Binaries, layout: Layout, ports: Ports) -> ProcessSpec:
    pki = layout.pem
    argv = (
        str(bins.kube_apiserver),
        f"--etcd-servers=http://{HOST}:{ports.etcd_client}",
        f"--bind-address={ports.address}",
        f"--advertise-address={ports.address}",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={layout.pki}",
        f"--tls-cert-file={pki('apiserver.crt')}",
        f"--tls-private-key-file={pki('apiserver.key')}",
        f"--client-ca-file={pki('ca.crt')}",
        f"--kubelet-client-certificate={pki('kube-apiserver-kubelet-client.crt')}",
        f"--kubelet-client-key={pki('kube-apiserver-kubelet-client.key')}",
        f"--kubelet-certificate-authority={pki('ca.crt')}",
        "--kubelet-preferred-address-types=InternalIP",
        # The aggregation layer's front proxy, as kubeadm sets it up.
        f"--requestheader-client-ca-file={pki('front-proxy-ca.crt')}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki('front-proxy-client.crt')}",
        f"--proxy-client-key-file={pki('front-proxy-client.key')}",
        f"--service-account-issuer={ISSUER}",
        f"--service-account-key-file={pki('sa.pub')}",
        f"--service-account-signing-key-file={pki('sa.key')}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        # Endpoints may not hold loopback addresses: on loopback the `kubernetes` Service gets none;
        # on the node's address the API server publishes itself there, as on any cluster.
        f"--endpoint-reconciler-type={'none' if ports.address == HOST else 'lease'}",
        "--profiling=false",
        "--v=1",
    )
    url = f"{ports.server}/readyz"
    admin_pair = client_cert_paths(layout.pki, *ADMIN)
    admin = {"ca": pki("ca.crt"), "cert": admin_pair.cert, "key": admin_pair.key}
    # The controller-manager and scheduler exit if they cannot read their RBAC-guarded
    # authentication config at start-up, so they wait for the default roles and bindings.
    gate = Probe(f"{url}/poststarthook/rbac/bootstrap-roles", **admin)
    return ProcessSpec("kube-apiserver", argv, layout.logs / "kube-apiserver.log", Probe(url, **admin), gate)


def _component_flags(layout: Layout, user: str, port: int) -> tuple[str, ...]:
    kubeconfig = layout.kubeconfig(user)
    return (
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={HOST}",
        f"--secure-port={port}",
        f"--cert-dir={layout.pki / user.split(':')[-1]}",
        "--leader-elect=false",
        "--v=1",
    )


def controller_manager_spec(bins: Binaries, layout: Layout, ports: Ports) -> ProcessSpec:
    pki = layout.pem
    argv = (
        str(bins.kube_controller_manager),
        *_component_flags(layout, "system:kube-controller-manager", ports.controller_manager),
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki('sa.key')}",
        f"--root-ca-file={pki('ca.crt')}",
        f"--cluster-signing-cert-file={pki('ca.crt')}",
        f"--cluster-signing-key-file={pki('ca.key')}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
    )
    return ProcessSpec(
        "kube-controller-manager", argv, layout.logs / "kube-controller-manager.log",
        Probe(f"https://{HOST}:{ports.controller_manager}/healthz"),
    )


def scheduler_spec(bins: Binaries, layout: Layout, ports: Ports) -> ProcessSpec:
    argv = (str(bins.kube_scheduler), *_component_flags(layout, "system:kube-scheduler", ports.scheduler))
    return ProcessSpec(
        "kube-scheduler", argv, layout.logs / "kube-scheduler.log",
        Probe(f"https://{HOST}:{ports.scheduler}/healthz"),
    )


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def control_plane(bins: Binaries, layout: Layout, ports: Ports) -> list[list[ProcessSpec]]:
    """The processes in start order: a stage starts once the previous one's gates open.

    The controller-manager and scheduler wait (and retry) for the API server's health
    themselves, so they start while it still runs its other post-start hooks.
    """
    return [
        [etcd_spec(bins, layout, ports)],
        [apiserver_spec(bins, layout, ports)],
        [controller_manager_spec(bins, layout, ports), scheduler_spec(bins, layout, ports)],
    ]
