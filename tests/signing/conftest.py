"""Fixtures for signing and fetch tests: a trained iris model, keys, a test PKI, a loopback HTTP server."""

from __future__ import annotations

import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devcluster.iris import Keys, train, write_keys
from modeldeploy.params import signing

from .pki import SigningPki, create_signing_pki


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tmp_path_factory.mktemp("trained") / "iris")


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return write_keys(tmp_path / "keys")


@pytest.fixture
def other_keys(tmp_path: Path) -> Keys:
    return write_keys(tmp_path / "other-keys")


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> SigningPki:
    """The test PKI (see `pki`): a trusted root with an intermediate, leaves, and a rogue root."""
    return create_signing_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def model(tmp_path: Path, trained: Path, keys: Keys) -> Path:
    """A signed copy of the trained iris parameters directory."""
    model_dir = shutil.copytree(trained, tmp_path / "iris")
    signing.sign(model_dir, keys.private)
    return model_dir


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """Where the init container installs parameters: a fresh path in an existing directory."""
    (tmp_path / "pod").mkdir()
    return tmp_path / "pod" / "model"


@dataclass
class HttpServer:
    """A loopback HTTP server over `root` with misbehaving routes.

    `/<path>` serves the file; `/truncated/<path>` announces the full length and sends half;
    `/error/<path>` always answers 500; `/nolength/<path>` sends the file with no
    Content-Length (close-delimited); `/slow/<path>` announces the full length and sends
    one byte every 0.2 s (until the client goes away).
    """

    root: Path
    url: str = ""
    requests: list[str] = field(default_factory=list)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_state: HttpServer

    def do_GET(self) -> None:
        state = self.server_state
        state.requests.append(self.path)
        mode, _, rest = self.path.lstrip("/").partition("/")
        if mode not in ("truncated", "error", "nolength", "slow"):
            mode, rest = "plain", self.path.lstrip("/")
        if mode == "error":
            self.send_error(500, "injected failure")
            return
        path = state.root / rest
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if mode != "nolength":
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if mode == "slow":
            for index in range(len(data)):
                try:
                    self.wfile.write(data[index : index + 1])
                    self.wfile.flush()
                except OSError:
                    break
                time.sleep(0.2)
            self.close_connection = True
            return
        self.wfile.write(data[: len(data) // 2] if mode == "truncated" else data)
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[HttpServer]:
    state = HttpServer(tmp_path / "www")
    state.root.mkdir()
    handler = type("Handler", (_Handler,), {"server_state": state, "protocol_version": "HTTP/1.1"})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()
