"""devcluster without a control plane: go.mod generation, PKI, kubeconfigs, process supervision."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from devcluster import build, cluster, pki, process
from devcluster.cluster import Cluster, ComponentStatus, format_status
from devcluster.components import Probe, ProcessSpec
from devcluster.kubeconfig import render_kubeconfig
from devcluster.ports import free_ports
from devcluster.pytest_plugin import namespace_name

RELEASE_GO_MOD = """\
module k8s.io/kubernetes

go 1.24.0

godebug default=go1.24

require (
\tgithub.com/spf13/cobra v1.9.1
\tk8s.io/api v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
)
"""


def test_wrapper_go_mod_pins_each_staging_module_to_the_release() -> None:
    text = build.wrapper_go_mod(RELEASE_GO_MOD, "v1.34.4", ["kube-apiserver"])
    assert "\tk8s.io/api => k8s.io/api v0.34.4" in text
    assert "\tk8s.io/client-go => k8s.io/client-go v0.34.4" in text
    assert "require k8s.io/kubernetes v1.34.4" in text
    assert "godebug default=go1.24" in text and "go 1.24.0" in text
    assert "\tk8s.io/kubernetes/cmd/kube-apiserver" in text
    assert "staging/src" not in text


def test_wrapper_go_mod_refuses_a_go_mod_without_staging_replaces() -> None:
    with pytest.raises(ValueError, match="staging"):
        build.wrapper_go_mod("module x\n\ngo 1.24\n", "v1.34.4", ["kubectl"])


def test_version_ldflags_stamp_git_version_and_minor() -> None:
    flags = build.version_ldflags("v1.34.4")
    assert "-X k8s.io/component-base/version.gitVersion=v1.34.4" in flags
    assert "-X k8s.io/component-base/version.gitMinor=34" in flags
    with pytest.raises(ValueError):
        build.staging_version("v2.0.0")


def test_client_cert_carries_user_as_cn_and_groups_as_o(tmp_path: Path) -> None:
    ca = pki.create_ca(tmp_path)
    pair = pki.create_client_cert(ca, tmp_path, "system:node:n1", ["system:nodes"])
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == ["system:nodes"]
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"


def test_serving_cert_names_loopback_and_in_cluster_service(tmp_path: Path) -> None:
    pair = pki.create_serving_cert(pki.create_ca(tmp_path), tmp_path, "127.0.0.1")
    san = x509.load_pem_x509_certificate(pair.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value
    assert "kubernetes.default.svc" in san.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", pki.SERVICE_IP}


def test_kubeconfig_takes_either_a_certificate_or_a_token(tmp_path: Path) -> None:
    config = render_kubeconfig("https://127.0.0.1:1", tmp_path / "ca.crt", token="abc", user="sa")
    assert config["users"] == [{"name": "sa", "user": {"token": "abc"}}]
    assert yaml.safe_load(yaml.safe_dump(config))["current-context"] == "sa@devcluster"
    with pytest.raises(ValueError):
        render_kubeconfig("https://127.0.0.1:1", tmp_path / "ca.crt")


def test_namespace_name_is_a_valid_dns_label() -> None:
    name = namespace_name("test_Something_Weird[param-1/x]" + "y" * 80)
    assert len(name) <= 63 and name.startswith("something-weird-param-1-x")
    assert all(c.isalnum() or c == "-" for c in name) and name == name.lower()


def test_format_status_flags_a_dead_component(tmp_path: Path) -> None:
    text = format_status("https://127.0.0.1:6443", [
        ComponentStatus("etcd", 10, True, True, tmp_path / "etcd.log"),
        ComponentStatus("kube-apiserver", 11, False, False, tmp_path / "kube-apiserver.log"),
    ])
    assert "etcd" in text and "healthy" in text
    assert "NOT RUNNING" in text.splitlines()[2] and "kube-apiserver.log" in text
    assert format_status(None, []) == "no cluster"


def test_free_ports_are_distinct() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5


def test_component_that_exits_is_named_with_its_log(tmp_path: Path) -> None:
    spec = ProcessSpec("broken", ("sh", "-c", "echo flag provided but not defined; exit 3"),
                       tmp_path / "broken.log", Probe("http://127.0.0.1:9/healthz"))
    handle = process.start(spec)
    with pytest.raises(process.ComponentError) as caught:
        process.wait_healthy([handle], timeout=10)
    assert caught.value.component == "broken"
    assert str(tmp_path / "broken.log") in str(caught.value)
    assert "flag provided but not defined" in str(caught.value)


def test_component_not_ready_in_time_is_reported_then_stopped(tmp_path: Path) -> None:
    spec = ProcessSpec("stuck", ("sleep", "60"), tmp_path / "stuck.log", Probe("http://127.0.0.1:9/healthz"))
    handle = process.start(spec)
    with pytest.raises(process.ComponentError, match="stuck not ready after 1s"):
        process.wait_healthy([handle], timeout=1)
    process.stop(handle)
    assert not process.alive(handle)


def test_stop_kills_a_process_that_ignores_sigterm(tmp_path: Path) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    spec = ProcessSpec("stubborn", (sys.executable, "-c", code), tmp_path / "s.log", Probe("http://127.0.0.1:9/"))
    handle = process.start(spec)
    while "up" not in spec.log.read_text():
        pass
    process.stop(handle, timeout=0.5)
    assert not process.alive(handle)


def test_a_recycled_pid_is_not_ours(tmp_path: Path) -> None:
    spec = ProcessSpec("short", ("sleep", "30"), tmp_path / "short.log", Probe("http://127.0.0.1:9/"))
    handle = process.start(spec)
    impostor = process.Handle("short", handle.pid, handle.start_time + 1, handle.log, handle.health)
    assert process.alive(handle) and not process.alive(impostor)
    process.stop(impostor)  # must not signal the real process
    assert process.alive(handle)
    process.stop(handle)


def test_handle_survives_the_state_file_round_trip(tmp_path: Path) -> None:
    import dataclasses
    import json

    probe = Probe("https://127.0.0.1:1/readyz", ca=tmp_path / "ca.crt", cert=tmp_path / "a.crt", key=tmp_path / "a.key")
    handle = process.Handle("kube-apiserver", 42, 7, tmp_path / "a.log", probe, Probe("http://127.0.0.1:2/"))
    loaded = process.handle_from_dict(json.loads(json.dumps(dataclasses.asdict(handle), default=str)))
    assert loaded == handle


def test_a_claim_on_the_node_network_whose_cluster_is_gone_is_taken_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    claim = tmp_path / "claim.json"
    monkeypatch.setattr(cluster, "HOST_NETWORK_CLAIM", claim)
    claim.write_text(json.dumps({"root": str(tmp_path / "crashed")}))
    mine = Cluster(tmp_path / "mine")
    with mine._host_network_claimed(wait=0):
        assert json.loads(claim.read_text()) == {"root": str(mine.root)}
    mine.down()
    assert not claim.exists(), "down gives the claim back"
