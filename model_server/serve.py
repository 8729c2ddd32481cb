"""`modeldeploy serve MODEL_DIR`: run the model server with uvicorn (uvloop + httptools).

On SIGTERM the server fails readiness at once, keeps serving for `drainSeconds` (so the
Service stops routing to it), then stops accepting, lets in-flight requests finish and
exits 0. A second signal stops at once, without the drain wait.

`--workers N` (default `auto`: the container's CPU limit, `model_server.cpus`) runs N
processes. With one, the model loads in the background while the probes answer. With
more, the parent verifies and loads the model once, binds the socket, and forks the
workers (`model_server.supervisor`): each inherits the loaded model and the one listening
socket (the kernel queues connections once; a worker that dies loses none and its
replacement just accepts from the same queue) and runs its own event loop; the parent
forwards SIGTERM, so every worker drains as above. Worker 0 alone rechecks the files; a
failed recheck fails readiness in all of them (`model_server.integrity`). Metrics add up
across workers through `PROMETHEUS_MULTIPROC_DIR` (a temporary directory if unset).
`--grpc-port` starts gRPC from the app's lifespan, so in each worker's own event loop after
the fork (gRPC must not run before a fork); the workers share its port with SO_REUSEPORT,
which gRPC sets by default.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

import click
import uvicorn

from model_server import logs
from model_server.app import create_app
from model_server.cpus import auto_workers, cgroup_cpu_limit
from model_server.dataplane import DataPlane
from model_server.metrics import MULTIPROC_ENV, mark_process_dead, use_multiprocess_dir
from model_server.modelcard import ModelCardError
from model_server.settings import ServerSettings, SettingsError, load_settings
from model_server.supervisor import Supervisor
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
        self.dataplane.model.draining = True  # readiness fails from now on
        # This runs as a signal handler: the code it interrupted may hold prometheus_client's
        # (non-reentrant) value lock, so the gauges are set from another thread, never from here.
        threading.Thread(target=self.dataplane.drain, daemon=True).start()
        logger.info("SIGTERM: draining", extra={"drainSeconds": self.drain_seconds})
        timer = threading.Timer(self.drain_seconds, self._stop_accepting)
        timer.daemon = True
        timer.start()

    def _stop_accepting(self) -> None:
        logger.info("drain period over: finishing in-flight requests and exiting")
        self.should_exit = True


class Workers(click.ParamType[int | str, Any]):
    """`auto` or a positive number of worker processes."""

    name = "N|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if value == "auto" or isinstance(value, int):
            return value  # type: ignore[no-any-return]
        try:
            count = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)
        if count < 1:
            self.fail(f"{count} workers: give at least 1 (or 'auto')", param, ctx)
        return count


def worker_count(workers: int | str) -> int:
    """The number of workers: `workers`, or for `auto` the container's CPU limit (capped by the usable CPUs)."""
    if isinstance(workers, int):
        return workers
    return auto_workers(cgroup_cpu_limit(), len(os.sched_getaffinity(0)))


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
    help="Also serve Open Inference Protocol v2 over gRPC on --host:PORT (0: off); every worker serves it.",
)
@click.option(
    "--workers",
    type=Workers(),
    default="auto",
    show_default=True,
    envvar="MODELDEPLOY_WORKERS",
    help="Server processes sharing the port and the once-verified model; auto: the container's CPU limit.",
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
    workers: int | str,
    log_level: str,
) -> None:
    """Serve the model in MODEL_DIR (a parameters directory with model.yaml), once model.sig verifies with
    the --public-key or a signer of the --trust."""
    if (public_key is None) == (trust is None):
        raise click.UsageError("give exactly one of --public-key or --trust")
    logs.configure(getattr(logging, log_level.upper()))
    count = worker_count(workers)
    with ExitStack() as cleanup:
        metrics_dir = os.environ.get(MULTIPROC_ENV)
        if metrics_dir is None and count > 1:
            metrics_dir = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="modeldeploy-metrics-"))
        if metrics_dir is not None:
            use_multiprocess_dir(Path(metrics_dir))
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
        dataplane: DataPlane = app.state.dataplane
        if count == 1:
            DrainingServer(config, dataplane, settings.drain_seconds).run()
            return
        code = serve_workers(config, dataplane, settings, count)
    sys.exit(code)


def serve_workers(config: uvicorn.Config, dataplane: DataPlane, settings: ServerSettings, count: int) -> int:
    """Load the model, bind the socket, fork `count` workers and supervise them; the exit code."""
    logger.info("loading the model before starting the workers", extra={"workers": count})
    dataplane.model.load()  # verify and deserialise once: the workers inherit it
    listening = config.bind_socket()

    def work(index: int) -> int:
        if index:
            dataplane.recheck_seconds = 0.0  # worker 0 rechecks for all of them
        DrainingServer(config, dataplane, settings.drain_seconds).run(sockets=[listening])
        return 0

    supervisor = Supervisor(work, count, on_stop=listening.close, on_exit=mark_process_dead)
    try:
        return supervisor.run()
    finally:
        listening.close()
