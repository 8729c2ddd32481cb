"""The end-to-end story's pieces, shared by ``tests/e2e`` and ``make demo``.

Publishes signed (and one tampered) iris parameters, renders ModelDeployments for them,
finds a Service's ready endpoints in its EndpointSlices (there is no kube-proxy on the
process node, so clients pick pod IPs the way kube-proxy would) and runs a bounded load
against them. Talks to the API server and to pod IPs only; starts no cluster process.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from model_server import signing
from modeldeploy.demo import ROOT, pack, write_keys

GROUP, VERSION, PLURAL = "modeldeploy.io", "v1alpha1", "modeldeployments"
KEY_SECRET = "iris-signing-key"
SAMPLE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


@dataclass(frozen=True)
class Published:
    """A bucket directory with ``iris-1.0.0``, ``iris-1.0.1`` and ``tampered`` archives + ``.sig``."""

    bucket: Path
    public_key: Path
    fingerprint: str


def publish(work: Path) -> Published:
    """Train iris, make a key pair, sign, and lay out the bucket (the private key stays in ``work``)."""
    model = work / "iris"
    subprocess.run([sys.executable, str(ROOT / "examples/iris/train.py"), str(model)], check=True,
                   capture_output=True)
    private, public, fingerprint = write_keys(work / "keys")
    signature = signing.sign(model, private).read_bytes()
    bucket = work / "bucket"
    bucket.mkdir()
    for version in ("1.0.0", "1.0.1"):
        pack(model, bucket / f"iris-{version}.tar.gz")
        (bucket / f"iris-{version}.tar.gz.sig").write_bytes(signature)
    flipped = bytearray((model / "model.joblib").read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    pack(model, bucket / "tampered.tar.gz", {"model.joblib": bytes(flipped)})
    (bucket / "tampered.tar.gz.sig").write_bytes(signature)
    return Published(bucket, public, fingerprint)


def key_secret(public_key: Path) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": KEY_SECRET},
            "stringData": {"public.pem": public_key.read_text()}}


def model_deployment(name: str, source: str, version: str = "1.0.0", replicas: int = 2,
                     policies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The iris ModelDeployment for parameters at ``source`` (``source + '.sig'`` beside it)."""
    spec: dict[str, Any] = {
        "model": {"name": "iris", "version": version},
        "parameters": {"source": source, "publicKey": {"secretName": KEY_SECRET, "key": "public.pem"}},
        "replicas": replicas,
        "probes": {"maxLoadSeconds": 60},
    }
    if policies:
        spec["policies"] = policies
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": name}, "spec": spec}


def get_md(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    return dict(client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name))


def md_condition(md: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (md.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def ready_endpoints(api: client.ApiClient, namespace: str, service: str) -> list[str]:
    """``http://IP:PORT`` of every ready, non-terminating endpoint in the Service's EndpointSlices."""
    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}")
    urls = []
    for found in slices.items:
        port = (found.ports or [None])[0]
        for endpoint in found.endpoints or []:
            conditions = endpoint.conditions
            if port is not None and conditions.ready and not conditions.terminating:
                urls.extend(f"http://{address}:{port.port}" for address in endpoint.addresses)
    return sorted(urls)


def predict(base_url: str, model: str = "iris", body: dict[str, Any] | None = None,
            timeout: float = 5.0) -> httpx.Response:
    return httpx.post(f"{base_url}/api/models/{model}/prediction", json=body or SAMPLE, timeout=timeout)


@dataclass
class Load:
    """Sequential predictions against the Service's ready endpoints (refreshed every ``refresh`` s).

    Bounded by ``max_requests`` and ``max_seconds``; every non-200 answer or error is kept.
    """

    api: client.ApiClient
    namespace: str
    service: str
    max_requests: int = 20000
    max_seconds: float = 300.0
    refresh: float = 0.25
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    served_by: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Load:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        urls: list[str] = []
        refreshed = 0.0
        with httpx.Client(timeout=5.0) as http:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                if time.monotonic() - refreshed > self.refresh:
                    urls, refreshed = ready_endpoints(self.api, self.namespace, self.service), time.monotonic()
                if not urls:
                    self.failures.append("no ready endpoint")
                    self._stop.wait(self.refresh)
                    continue
                url = random.choice(urls)
                try:
                    response = http.post(f"{url}/api/models/iris/prediction", json=SAMPLE)
                except httpx.HTTPError as err:
                    self.failures.append(f"{url}: {type(err).__name__}: {err}")
                    continue
                if response.status_code == 200:
                    self.ok += 1
                    self.served_by.add(url)
                else:
                    self.failures.append(f"{url}: HTTP {response.status_code} {response.text[:200]}")
