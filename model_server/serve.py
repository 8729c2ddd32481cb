"""`modeldeploy serve MODEL_DIR`: run the model server with uvicorn (uvloop + httptools).

On SIGTERM the server fails readiness at once, keeps serving for `drainSeconds` (so the
Service stops routing to it), then stops accepting, lets in-flight requests finish and
exits 0. A second signal exits at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import click
import uvicorn

from model_server import logs
from model_server.app import create_app
from model_server.dataplane import DataPlane
from model_server.modelcard import ModelCardError
from model_server.settings import SettingsError, load_settings
from modeldeploy.params.cli import public_key_option, trust_option

logger = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM drains before shutting down."""

    def __init__(self, config: uvicorn.Config, dataplane: DataPlane, drain_seconds: float) -> None:
        super().__init__(config)
        self.dataplane = dataplane
        self.drain_seconds = drain_seconds

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM or self.dataplane.model.draining:
            super().handle_exit(sig, frame)
            return
        self.dataplane.drain()
        logger.info("SIGTERM: draining", extra={"drainSeconds": self.drain_seconds})
        timer = threading.Timer(self.drain_seconds, self._stop_accepting)
        timer.daemon = True
        timer.start()

    def _stop_accepting(self) -> None:
        logger.info("drain period over: finishing in-flight requests and exiting")
        self.should_exit = True


@click.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="server.yaml"
)
@public_key_option
@trust_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--grpc-port",
    default=0,
    show_default=True,
    type=click.IntRange(0, 65535),
    envvar="MODELDEPLOY_GRPC_PORT",
    help="also serve Open Inference Protocol v2 over gRPC on --host:PORT (0: off)",
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
def serve(
    model_dir: Path,
    config_file: Path | None,
    public_key: Path | None,
    trust: Path | None,
    host: str,
    port: int,
    grpc_port: int,
    log_level: str,
) -> None:
    """Serve the model in MODEL_DIR (a parameters directory with model.yaml), once model.sig verifies with
    the --public-key or a signer of the --trust."""
    if (public_key is None) == (trust is None):
        raise click.UsageError("give exactly one of --public-key or --trust")
    logs.configure(getattr(logging, log_level.upper()))
    try:
        settings = load_settings(model_dir, config_file, public_key, trust)
        settings = settings.model_copy(update={"grpc_host": host, "grpc_port": grpc_port})
        app = create_app(settings)
    except (SettingsError, ModelCardError) as err:
        raise click.ClickException(str(err)) from err
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
        backlog=4096,
    )
    DrainingServer(config, app.state.dataplane, settings.drain_seconds).run()
