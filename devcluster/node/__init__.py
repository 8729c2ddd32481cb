"""A process-level node for the local control plane: pods run as namespaced local processes.

``node_spec`` describes the agent process (``python -m devcluster.node``) for
``devcluster.process``; ``Cluster.start_node`` starts it with the node's own identity.
The agent lives in ``devcluster.node.agent``, one pod's runtime in ``devcluster.node.pod``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from devcluster.components import HOST, Layout, ProcessSpec, Probe

DEFAULT_NODE = "devnode"
DEFAULT_POD_CIDR = "10.244.0.0/24"


def node_spec(layout: Layout, kubeconfig: Path, name: str, pod_cidr: str, port: int,
              backoff_base: float | None = None) -> ProcessSpec:
    """The node agent as a supervised process, healthy once registered and watching pods."""
    argv = [
        sys.executable, "-m", "devcluster.node", f"--kubeconfig={kubeconfig}", f"--node-name={name}",
        f"--pod-cidr={pod_cidr}", f"--root={layout.root / 'nodes' / name}", f"--healthz-port={port}",
    ]
    if backoff_base is not None:
        argv.append(f"--backoff-base={backoff_base}")
    return ProcessSpec(f"node-{name}", tuple(argv), layout.logs / f"node-{name}.log",
                       Probe(f"http://{HOST}:{port}/healthz"))


__all__ = ["DEFAULT_NODE", "DEFAULT_POD_CIDR", "node_spec"]
