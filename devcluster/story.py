"""The end-to-end story's pieces, shared by ``tests/e2e`` and ``make demo``.

Publishes signed (and one tampered) iris parameters into a MinIO bucket that runs in the
cluster, installs the operator as the Pod of ``manifests/``, renders ModelDeployments that
fetch ``s3://`` through the MinIO Service's DNS name, and runs a bounded load against a
Service's ClusterIP (one connection per request, so kube-proxy spreads it over the pods).
Talks to the API server and to cluster addresses only; starts no cluster process.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml
from kubernetes import client

from devcluster import images
from devcluster.iris import train, write_keys
from devcluster.localrun import MANIFESTS, OPERATOR, OPERATOR_NAMESPACE, apply_install
from devcluster.process import listening
from modeldeploy.contract.api import GROUP, PLURAL, VERSION
from modeldeploy.params import signing

if TYPE_CHECKING:
    from devcluster.cluster import Cluster

ROOT = Path(__file__).resolve().parents[1]
KEY_SECRET = "iris-signing-key"
S3_SECRET = "bucket-credentials"
BUCKET_NAMESPACE = "modeldeploy-bucket"
BUCKET = "models"
IMAGE_ARCHIVE_ANNOTATION = "modeldeploy.io/image-archive"
SAMPLE = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def pack(model_dir: Path, archive: Path, replace: dict[str, bytes] | None = None) -> Path:
    """Tar the parameters (not the signature), optionally swapping some files' contents."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(model_dir.iterdir()):
            if path.name == signing.SIGNATURE:
                continue
            data = (replace or {}).get(path.name, path.read_bytes())
            info = tarfile.TarInfo(path.name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


@dataclass(frozen=True)
class Published:
    """A bucket directory with ``iris-1.0.0``, ``iris-1.0.1``, ``iris-2.0.0`` (a decision stump that answers
    differently) and ``tampered`` archives, each with its ``.sig``."""

    bucket: Path
    public_key: Path
    fingerprint: str


def publish(work: Path) -> Published:
    """Train iris, make a key pair, sign, and lay out the bucket (the private key stays in ``work``)."""
    model = train(work / "iris")
    keys = write_keys(work / "keys")
    signature = signing.sign(model, keys.private).read_bytes()
    bucket = work / "bucket"
    bucket.mkdir()
    for version in ("1.0.0", "1.0.1"):
        pack(model, bucket / f"iris-{version}.tar.gz")
        (bucket / f"iris-{version}.tar.gz.sig").write_bytes(signature)
    stump = train(work / "iris-stump", stump=True)
    pack(stump, bucket / "iris-2.0.0.tar.gz")
    (bucket / "iris-2.0.0.tar.gz.sig").write_bytes(signing.sign(stump, keys.private).read_bytes())
    flipped = bytearray((model / "model.joblib").read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    pack(model, bucket / "tampered.tar.gz", {"model.joblib": bytes(flipped)})
    (bucket / "tampered.tar.gz.sig").write_bytes(signature)
    return Published(bucket, keys.public, keys.fingerprint)


def key_secret(public_key: Path) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": KEY_SECRET},
            "stringData": {"public.pem": public_key.read_text()}}


def add_model_secrets(api: client.ApiClient, namespace: str, published: Published, bucket: Bucket) -> None:
    """The Secrets an iris ModelDeployment in `namespace` names: its public key and the bucket's credentials."""
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(namespace, key_secret(published.public_key))
    core.create_namespaced_secret(namespace, bucket.credentials_secret())


def model_deployment(name: str, source: str, version: str = "1.0.0", replicas: int = 2,
                     policies: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The iris ModelDeployment for parameters at ``source`` (``source + '.sig'`` beside it; S3 credentials from a Secret)."""
    parameters: dict[str, Any] = {"source": source, "publicKey": {"secretName": KEY_SECRET, "key": "public.pem"}}
    if source.startswith("s3://"):
        parameters["credentials"] = {"secretName": S3_SECRET}
    spec: dict[str, Any] = {
        "model": {"name": "iris", "version": version},
        "parameters": parameters,
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


def service_url(api: client.ApiClient, namespace: str, service: str, timeout: float = 30.0) -> str:
    """``http://CLUSTER-IP:PORT`` of a Service, once it accepts connections from the host.

    A new Service's ClusterIP refuses connections until kube-proxy has written its rules,
    which can lag behind the pods' readiness.
    """
    found = client.CoreV1Api(api).read_namespaced_service(service, namespace)
    url = f"http://{found.spec.cluster_ip}:{found.spec.ports[0].port}"
    deadline = time.monotonic() + timeout
    while not listening(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"Service {namespace}/{service} ({url}) refused connections for {timeout:g} s")
        time.sleep(0.2)
    return url


@dataclass
class Load:
    """Sequential predictions through a Service's ClusterIP, a new connection for each.

    kube-proxy balances each connection on its own, as it would many clients'. Counts the
    answers and keeps every failure; bounded by ``max_requests`` and ``max_seconds``.
    """

    url: str
    max_requests: int = 20000
    max_seconds: float = 300.0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
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
        fresh = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(timeout=5.0, limits=fresh) as http:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    response = http.post(f"{self.url}/api/models/iris/prediction", json=SAMPLE)
                except httpx.HTTPError as err:
                    self.failures.append(f"{type(err).__name__}: {err}")
                    continue
                if response.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"HTTP {response.status_code} {response.text[:200]}")
                self._stop.wait(0.005)


def install_operator(cluster: Cluster, manifests: Path = MANIFESTS) -> None:
    """``kubectl apply -k manifests/``: CRDs, RBAC and the operator Deployment; wait until it is rolled out.

    The pod template is annotated with the operator image's archive (named by its content), so a
    rebuilt image rolls the operator's pods on a cluster kept between runs (the tag stays the same).
    """
    apply_install(cluster, manifests)
    archive = images.ensure_images(product_only=True)[images.OPERATOR_IMAGE].name
    template = {"spec": {"template": {"metadata": {"annotations": {IMAGE_ARCHIVE_ANNOTATION: archive}}}}}
    cluster.kubectl_run("-n", OPERATOR_NAMESPACE, "patch", f"deployment/{OPERATOR}", "-p", json.dumps(template))
    cluster.kubectl_run("-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{OPERATOR}", "--timeout=300s",
                        timeout=310)  # longer than kubectl's own wait, so its message, not a kill, ends it


def active_operator_pod(api: client.ApiClient) -> str | None:
    """The operator pod kopf's peering lets act: the live peer with the highest priority."""
    peering = client.CustomObjectsApi(api).get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", "modeldeploy")
    peers = (peering.get("status") or {})
    live = {name: info for name, info in peers.items() if isinstance(info, dict) and "priority" in info}
    return max(live, key=lambda name: live[name]["priority"]) if live else None


@dataclass(frozen=True)
class Bucket:
    """The in-cluster MinIO: its address from the host (ClusterIP) and from pods (DNS), and its keys."""

    host_endpoint: str
    cluster_endpoint: str
    access_key: str = "modeldeploy"
    secret_key: str = "modeldeploy-secret"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.host_endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))

    def credentials_secret(self) -> dict[str, Any]:
        """The Secret a ModelDeployment's ``parameters.credentials`` names (only read access is needed)."""
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": S3_SECRET}, "stringData": {
            "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.cluster_endpoint}}

    def upload(self, published: Published, prefix: str) -> str:
        """Put every archive and signature of ``published`` under ``prefix``; return ``s3://models/PREFIX``."""
        s3 = self.client()
        for path in sorted(published.bucket.iterdir()):
            s3.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
        return f"s3://{BUCKET}/{prefix}"


def bucket_manifests(image: str, access_key: str, secret_key: str) -> list[dict[str, Any]]:
    """MinIO as a non-root, read-only-root Pod behind the ``minio`` Service, data in an emptyDir."""
    meta = {"namespace": BUCKET_NAMESPACE, "labels": {"app": "minio"}}
    container = {
        "name": "minio", "image": image, "imagePullPolicy": "IfNotPresent",
        "args": ["server", "/data", "--address", ":9000", "--certs-dir", "/tmp/certs"],
        "env": [{"name": "MINIO_ROOT_USER", "value": access_key}, {"name": "MINIO_ROOT_PASSWORD", "value": secret_key},
                {"name": "MINIO_BROWSER", "value": "off"}, {"name": "HOME", "value": "/tmp"}],
        "ports": [{"name": "s3", "containerPort": 9000}],
        "readinessProbe": {"httpGet": {"path": "/minio/health/ready", "port": 9000}, "periodSeconds": 2},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": BUCKET_NAMESPACE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "minio", **meta}, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "minio"}},
            "template": {"metadata": {"labels": {"app": "minio"}}, "spec": {
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [container],
                "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "minio", **meta},
         "spec": {"selector": {"app": "minio"}, "ports": [{"name": "s3", "port": 9000, "targetPort": 9000}]}},
    ]


def start_bucket(cluster: Cluster, image: str) -> Bucket:
    """Run MinIO in the cluster (or reuse it), wait until it answers, make the ``models`` bucket."""
    bucket = Bucket("", "")
    documents = yaml.safe_dump_all(bucket_manifests(image, bucket.access_key, bucket.secret_key))
    cluster.kubectl_run("apply", "--server-side", "-f", "-", stdin=documents)
    cluster.kubectl_run("-n", BUCKET_NAMESPACE, "rollout", "status", "deployment/minio", "--timeout=180s")
    with cluster.api_client() as api:
        host_endpoint = service_url(api, BUCKET_NAMESPACE, "minio")
    bucket = Bucket(host_endpoint, f"http://minio.{BUCKET_NAMESPACE}.svc.cluster.local:9000")
    from botocore.exceptions import ClientError, EndpointConnectionError

    s3 = bucket.client()
    deadline = time.monotonic() + 60
    while True:
        try:
            s3.head_bucket(Bucket=BUCKET)
            return bucket
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            s3.create_bucket(Bucket=BUCKET)
            return bucket
        except EndpointConnectionError:  # kube-proxy has not synced the new Service yet
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
