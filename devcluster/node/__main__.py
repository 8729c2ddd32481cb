"""``python -m devcluster.node``: run the process node until SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from devcluster.node import DEFAULT_NODE, DEFAULT_POD_CIDR
from devcluster.node.agent import Agent, serve_health
from devcluster.node.spec import BACKOFF_BASE, default_images


@click.command()
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--node-name", default=DEFAULT_NODE, show_default=True)
@click.option("--pod-cidr", default=DEFAULT_POD_CIDR, show_default=True)
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the pods' volumes, logs and launch specs.")
@click.option("--healthz-port", type=int, required=True)
@click.option("--backoff-base", type=float, default=BACKOFF_BASE, show_default=True,
              help="First crash-loop/image-pull back-off in seconds (doubles up to 300s).")
def main(kubeconfig: Path, node_name: str, pod_cidr: str, root: Path, healthz_port: int, backoff_base: float) -> None:
    """Register NODE_NAME with the control plane and run the pods bound to it as processes."""
    from kubernetes import client, config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 64  # one worker thread per pod shares the pool
    api = client.ApiClient(configuration)
    agent = Agent(api, node_name, pod_cidr, root, default_images(), backoff_base)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    server = serve_health(agent, healthz_port)
    try:
        agent.start()
        done.wait()
    finally:
        server.shutdown()
        agent.stop()


if __name__ == "__main__":
    main()
