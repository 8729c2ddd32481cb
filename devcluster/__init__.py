"""The harness (run from a checkout, never installed): a local Kubernetes built from source with a real node, its images, and the stories `make demo` and the e2e tests run on it."""

from devcluster.build import ETCD_VERSION, K8S_VERSION, Binaries, ensure_binaries, kubectl_path
from devcluster.cluster import Cluster, KubectlError, default_state_dir, shared
from devcluster.images import ImageError, ensure_images, load_images
from devcluster.process import ComponentError

__all__ = [
    "ETCD_VERSION",
    "K8S_VERSION",
    "Binaries",
    "Cluster",
    "ComponentError",
    "ImageError",
    "KubectlError",
    "default_state_dir",
    "ensure_binaries",
    "ensure_images",
    "kubectl_path",
    "load_images",
    "shared",
]
