"""`modeldeploy operator`: run the ModelDeployment operator (kopf) against a cluster."""

from __future__ import annotations

import os
import time
from pathlib import Path

import click


@click.command("operator")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Kubeconfig to use; default: in-cluster ServiceAccount, else $KUBECONFIG.")
@click.option("--server-image", envvar="MODELDEPLOY_SERVER_IMAGE", default=None,
              help="Model server image for ModelDeployments that do not name one.")
@click.option("--namespace", "namespaces", multiple=True,
              help="Watch only these namespaces (repeatable); default: the whole cluster.")
@click.option("--peering", default=None,
              help="kopf peering name so only one of several replicas is active; default: standalone.")
@click.option("--priority", type=int, default=None,
              help="kopf peering priority; default: the start time in microseconds, so the newest replica leads "
                   "and two replicas never tie (peers with equal priority all pause).")
@click.option("--liveness", default="http://127.0.0.1:8080/healthz", show_default=True,
              help="Health endpoint URL served by kopf.")
@click.option("--log-format", type=click.Choice(["json", "plain"]), default="json", show_default=True)
@click.option("--verbose", is_flag=True, help="Debug logging.")
def operator(
    kubeconfig: Path | None,
    server_image: str | None,
    namespaces: tuple[str, ...],
    peering: str | None,
    priority: int | None,
    liveness: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Reconcile ModelDeployments into Deployments, Services, ConfigMaps, PDBs and HPAs."""
    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)
    import kopf

    import model_operator.handlers  # noqa: F401  (registers the handlers)

    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN,
    )
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=peering is None,
        peering_name=peering,
        priority=priority if priority is not None else time.time_ns() // 1000,
        liveness_endpoint=liveness,
        memo=kopf.Memo(server_image=server_image),
    )
