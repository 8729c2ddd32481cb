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
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=8081, show_default=True,
              help="Port of the operator's Prometheus metrics (/metrics); 0: not served.")
@click.option("--metrics-address", default="0.0.0.0", show_default=True,
              help="Address the metrics endpoint listens on.")
@click.option("--operator-namespace", envvar="POD_NAMESPACE", default="modeldeploy-system", show_default=True,
              help="The operator's namespace: the webhook's TLS Secret and the trust policies' Secrets live there.")
@click.option("--webhook-port", type=click.IntRange(1, 65535), default=9443, show_default=True,
              help="Port of the admission webhooks (HTTPS).")
@click.option("--webhook-url", default=None,
              help="Out of cluster: the URL the API server calls (e.g. https://127.0.0.1:9443); written into the "
                   "webhook configurations instead of the Service.")
@click.option("--webhook-cert-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Serve tls.crt/tls.key from here (cert-manager) instead of issuing a certificate; the "
                   "caBundle is then cert-manager's cainjector's to write.")
@click.option("--webhook-configuration", default="modeldeploy", show_default=True,
              help="Name of the Mutating- and ValidatingWebhookConfiguration to keep pointed at this operator.")
@click.option("--log-format", type=click.Choice(["json", "plain"]), default="json", show_default=True)
@click.option("--verbose", is_flag=True, help="Debug logging.")
def operator(
    kubeconfig: Path | None,
    server_image: str | None,
    namespaces: tuple[str, ...],
    peering: str | None,
    priority: int | None,
    liveness: str,
    metrics_port: int,
    metrics_address: str,
    operator_namespace: str,
    webhook_port: int,
    webhook_url: str | None,
    webhook_cert_dir: Path | None,
    webhook_configuration: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Reconcile ModelDeployments into Deployments, Services, ConfigMaps, PDBs and HPAs."""
    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(kubeconfig)
    import kopf

    import model_operator.handlers  # noqa: F401  (registers the handlers)
    from model_operator.webhooks import WebhookSettings

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
        memo=kopf.Memo(
            server_image=server_image,
            namespace=operator_namespace,
            metrics_port=metrics_port,
            metrics_address=metrics_address,
            webhook=WebhookSettings(
                port=webhook_port, namespace=operator_namespace, configuration=webhook_configuration,
                url=webhook_url, cert_dir=str(webhook_cert_dir) if webhook_cert_dir else None,
            ),
        ),
    )
