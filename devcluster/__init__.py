"""A local Kubernetes control plane (and process-level node) built from source, for tests and the demo."""

from devcluster.build import ETCD_VERSION, K8S_VERSION, Binaries, ensure_binaries, kubectl_path
from devcluster.cluster import Cluster, default_state_dir, shared
from devcluster.images import ImageError, ensure_images, load_images
from devcluster.process import ComponentError

__all__ = [
    "ETCD_VERSION",
    "K8S_VERSION",
    "Binaries",
    "Cluster",
    "ComponentError",
    "ImageError",
    "default_state_dir",
    "ensure_binaries",
    "ensure_images",
    "kubectl_path",
    "load_images",
    "shared",
]
