"""The webhook's certificate: issued for the Service's names, renewed before it expires or when a name is missing."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

from model_operator.webhook_tls import CA_KEY, CERT_KEY, PRIVATE_KEY, issue, needs_renewal, service_names

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)

def test_a_fresh_pair_needs_no_renewal_until_thirty_days_before_expiry() -> None:
    hosts = service_names("modeldeploy-webhook", "modeldeploy-system")
    data = issue(hosts, NOW)
    assert not needs_renewal(data, hosts, NOW)
    assert not needs_renewal(data, hosts, NOW + datetime.timedelta(days=334))
    assert needs_renewal(data, hosts, NOW + datetime.timedelta(days=336))
    assert needs_renewal(data, [*hosts, "127.0.0.1"], NOW)  # a new host (an out-of-cluster URL)
    assert needs_renewal({**data, CERT_KEY: b"garbage"}, hosts, NOW)
    assert needs_renewal({}, hosts, NOW)

def test_a_client_trusting_only_the_ca_completes_a_handshake_for_the_service_name(tmp_path: Path) -> None:
    data = issue(["modeldeploy-webhook.modeldeploy-system.svc", "127.0.0.1"], datetime.datetime.now(datetime.UTC))
    for name, content in data.items():
        (tmp_path / name).write_bytes(content)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / CERT_KEY, tmp_path / PRIVATE_KEY)
    client = ssl.create_default_context(cafile=str(tmp_path / CA_KEY))

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            connection, _ = listener.accept()
            with server.wrap_socket(connection, server_side=True) as tls:
                tls.recv(1)

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        with socket.create_connection(("127.0.0.1", port)) as raw, client.wrap_socket(
            raw, server_hostname="modeldeploy-webhook.modeldeploy-system.svc"
        ) as tls:
            assert tls.version() is not None
            tls.send(b"x")
        thread.join(5)
