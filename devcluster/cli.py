"""``python -m devcluster up|down|status|kubeconfig|kubectl|images``: thin click wrappers over ``Cluster`` and ``images``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from devcluster import build, images
from devcluster.cluster import Cluster, format_status
from devcluster.process import ComponentError

_dir_option = click.option(
    "--dir", "state_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="State directory (default: $MODELDEPLOY_DEVCLUSTER_DIR or ./build/devcluster).",
)


@click.group()
def cluster() -> None:
    """A local single-node Kubernetes: etcd, apiserver, controller-manager, scheduler and a real node."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")


@cluster.command()
@_dir_option
@click.option("--timeout", default=60.0, show_default=True, help="Seconds each component may take to be ready.")
@click.option("--node/--no-node", default=True, show_default=True,
              help="Also start the real node `devnode` (kubelet, containerd, kube-proxy, CoreDNS; needs root).")
def up(state_dir: Path | None, timeout: float, node: bool) -> None:
    """Build or reuse the binaries (and images), start (or reuse) the cluster, return when it is ready."""
    build.ensure_binaries()
    started = time.monotonic()
    found = Cluster(state_dir)
    try:
        with found.locked():
            found.up(timeout, node_network=node)
        if node:
            found.start_node()
    except ComponentError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"cluster ready in {time.monotonic() - started:.1f}s; state and logs in {found.root}")
    click.echo(f"export KUBECONFIG={found.admin_kubeconfig}")


@cluster.command()
@_dir_option
def down(state_dir: Path | None) -> None:
    """Stop every process the cluster started, remove its pods, mounts, bridge, routes and rules (logs stay)."""
    target = Cluster(state_dir)
    with target.locked():
        target.down()
    click.echo(f"stopped; logs in {target.layout.logs}")


@cluster.command()
@_dir_option
def status(state_dir: Path | None) -> None:
    """Say what runs; exit 1 unless every component is healthy."""
    target = Cluster(state_dir)
    click.echo(format_status(target.server, target.status()))
    if not target.is_healthy():
        raise SystemExit(1)


@cluster.command()
@_dir_option
def kubeconfig(state_dir: Path | None) -> None:
    """Print the path of the admin kubeconfig."""
    target = Cluster(state_dir)
    if target.server is None:
        raise click.ClickException(f"no cluster in {target.root}; run `python -m devcluster up`")
    click.echo(str(target.admin_kubeconfig))


@cluster.command()
def kubectl() -> None:
    """Print the path of the kubectl matching the control plane (building it if needed)."""
    click.echo(str(build.ensure_binaries().kubectl))


@cluster.command(name="images")
@click.option("--load", "address", default=None, metavar="SOCKET",
              help="Also import them into the k8s.io namespace of the containerd at SOCKET.")
@click.option("--snapshotter", default="overlayfs", show_default=True, help="The snapshotter to unpack them for (with --load).")
@click.option("--product-only", is_flag=True, help="Only the operator and server images (e.g. for kind).")
@click.option("--paths", is_flag=True, help="Print only the archive paths, one a line.")
def images_command(address: str | None, snapshotter: str, product_only: bool, paths: bool) -> None:
    """Build or reuse the node's images (docker archives, cached per source tree) and print them."""
    started = time.monotonic()
    try:
        found = images.ensure_images(product_only=product_only)
        loaded = images.load_images(found, address, snapshotter) if address else []
    except images.ImageError as err:
        raise click.ClickException(str(err)) from err
    if paths:
        click.echo("\n".join(str(path) for path in found.values()))
        return
    click.echo(images.format_images(found, loaded, time.monotonic() - started))
