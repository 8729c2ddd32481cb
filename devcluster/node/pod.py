"""One pod on the process node: sandbox, containers, probes, status, termination.

A ``PodWorker`` thread owns everything of one pod UID: its netns and address, its directory
(``<root>/<uid>``: volumes, container logs, termination-message files, launch specs) and its
processes. It reads the pod as the agent's watch delivers it and writes status only through
``pods/status`` on the API server; the final delete (grace 0) is its last call.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from devcluster.node import launch as launch_script
from devcluster.node import network, probes, spec, volumes
from devcluster.node.spec import ConfigError, Container, Image, Pod

logger = logging.getLogger(__name__)

KILL_WAIT = 5.0
TICK = 0.5
DEFAULT_MESSAGE_PATH = "/dev/termination-log"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class NodeContext:
    """What every pod worker shares: the API, the node's identity, network and images."""

    core: Any
    node_name: str
    net: network.NodeNetwork
    pool: network.AddressPool
    images: dict[str, Image]
    root: Path
    backoff_base: float = spec.BACKOFF_BASE
    placeholders: set[Path] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remember(self, created: list[Path]) -> None:
        with self.lock:
            self.placeholders.update(created)


class ContainerRun:
    """The runtime record of one (init) container: process, states, counters, probers."""

    def __init__(self, container: Container, init: bool, waiting: str) -> None:
        self.spec, self.init, self.name = container, init, container["name"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.state: dict[str, Any] = {"waiting": {"reason": waiting}}
        self.last_state: dict[str, Any] = {}
        self.restarts = self.backoff_steps = 0
        self.retry_at = 0.0
        self.exit_published = True
        self.started = self.ready = self.succeeded = False
        self.kill_at: float | None = None
        self.started_mono = 0.0
        self.container_id = ""
        self.env: dict[str, str] = {}
        self.probers: list[probes.Prober] = []

    def stop_probers(self) -> None:
        for prober in self.probers:
            prober.stop()
        self.probers = []

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "image": self.spec.get("image", ""), "imageID": "",
            "ready": self.ready, "started": self.started, "restartCount": self.restarts,
            "state": self.state, "lastState": self.last_state,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


class PodWorker(threading.Thread):
    """Runs one pod until it is deleted (or the node stops)."""

    def __init__(self, node: NodeContext, pod: Pod) -> None:
        super().__init__(name=f"pod-{pod['metadata']['namespace']}/{pod['metadata']['name']}", daemon=True)
        self.node, self.pod, self.uid = node, pod, pod["metadata"]["uid"]
        self.dir = node.root / self.uid
        self.wake = threading.Event()
        self.vanished = self.stopping = False
        self.address: str | None = None
        self.netns: str | None = None
        self.volume_paths: dict[str, str] | None = None
        self.sandbox_error = ""
        self.start_time = now_iso()
        inits = pod["spec"].get("initContainers") or []
        self.inits = [ContainerRun(c, True, "PodInitializing") for c in inits]
        waiting = "PodInitializing" if inits else "ContainerCreating"
        self.containers = [ContainerRun(c, False, waiting) for c in pod["spec"]["containers"]]
        self.published: str | None = None
        self.sources = volumes.Sources(node.core, pod["metadata"]["namespace"])

    # -- inputs from the agent ---------------------------------------------------------------
    def update(self, pod: Pod) -> None:
        self.pod = pod
        self.wake.set()

    def vanish(self) -> None:
        """The pod object is gone from the API: stop at once, nothing left to report."""
        self.vanished = True
        self.wake.set()

    def shutdown(self) -> None:
        """The node stops: kill the containers and clean up; the pod object stays."""
        self.stopping = True
        self.wake.set()

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not (self.vanished or self.stopping or self.pod["metadata"].get("deletionTimestamp")):
                try:
                    self.sync()
                    self.publish()
                except ApiException as err:
                    logger.warning("pod %s: API error %s %s", self.ref, err.status, err.reason)
                except Exception:
                    logger.exception("pod %s: sync failed", self.ref)
                self.wake.wait(TICK)
                self.wake.clear()
            self.terminate()
        except Exception:
            logger.exception("pod %s: termination failed", self.ref)

    def sync(self) -> None:
        if self.netns is None and not self.setup_sandbox():
            return
        for run in self.inits:
            if not run.succeeded:
                self.step(run)
                if not run.succeeded:
                    return
        for run in self.containers:
            self.step(run)

    def setup_sandbox(self) -> bool:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.address = self.address or self.node.pool.allocate()
            self.volume_paths = volumes.materialize(self.pod_view(), self.dir, self.sources)
            self.netns = network.setup_pod(self.node.net, self.uid, self.address)
        except (ConfigError, network.NetworkError, ApiException, OSError) as err:
            self.sandbox_error = f"{type(err).__name__}: {err}"
            logger.info("pod %s: sandbox not ready: %s", self.ref, self.sandbox_error)
            return False
        self.sandbox_error = ""
        logger.info("pod %s: sandbox %s at %s", self.ref, self.netns, self.address)
        return True

    # -- one container -----------------------------------------------------------------------
    def restart_policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy") or "Always")

    def should_restart(self, run: ContainerRun, code: int) -> bool:
        policy = self.restart_policy()
        if run.init:
            return code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and code != 0)

    def step(self, run: ContainerRun) -> None:
        now = time.monotonic()
        if run.proc is not None:
            code = run.proc.poll()
            if code is None:
                if run.kill_at is not None and now >= run.kill_at:
                    self.signal(run, signal.SIGKILL)
                    run.kill_at = None
                return
            self.exited(run, 128 - code if code < 0 else code)
            return
        terminated = run.state.get("terminated")
        if terminated is not None:
            if not self.should_restart(run, terminated["exitCode"]) or not run.exit_published:
                return
            if now < run.retry_at:
                delay = spec.backoff(run.backoff_steps - 2, self.node.backoff_base)
                run.last_state = {"terminated": terminated}
                run.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                    f"back-off {delay:.0f}s restarting failed container={run.name} pod={self.pod_ref}")}}
                return
        elif now < run.retry_at:
            if run.state.get("waiting", {}).get("reason") == "ErrImagePull" and run.exit_published:
                image = run.spec.get("image", "")
                run.state = {"waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}}
            return
        self.launch(run)

    def pod_view(self) -> Pod:
        """The pod with the addresses this node already knows (the downward API reads them)."""
        status = {**(self.pod.get("status") or {}), "hostIP": self.node.net.gateway}
        if self.address:
            status.update(podIP=self.address, podIPs=[{"ip": self.address}])
        return {**self.pod, "status": status}

    @property
    def pod_ref(self) -> str:
        return f"{self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}({self.uid})"

    @property
    def ref(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def launch(self, run: ContainerRun) -> None:
        image_name = run.spec.get("image", "")
        image = spec.resolve_image(image_name, self.node.images)
        now = time.monotonic()
        if image is None:
            run.state = {"waiting": {"reason": "ErrImagePull", "message": (
                f'Failed to pull image "{image_name}": this node runs only the images '
                f'{sorted(self.node.images)} (from {spec.venv_bin().parent})')}}
            run.retry_at = now + spec.backoff(run.backoff_steps, self.node.backoff_base)
            run.backoff_steps += 1
            run.exit_published = False
            return
        try:
            run.env = spec.environment(self.pod_view(), run.spec, image, self.sources.read_key, self.sources.read_all)
            argv = spec.argv(run.spec, image, run.env)
            mounts = volumes.mounts(run.spec, self.volume_paths or {}, run.env)
        except ConfigError as err:
            run.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(err)}}
            run.retry_at = now + 1.0
            return
        if run.container_id:
            run.restarts += 1
            if "terminated" in run.state:
                run.last_state = {"terminated": run.state["terminated"]}
        base = self.dir / "containers" / run.name
        base.mkdir(parents=True, exist_ok=True)
        message_file = base / "termination-log"
        message_file.write_bytes(b"")
        message_path = run.spec.get("terminationMessagePath") or DEFAULT_MESSAGE_PATH
        mounts.append(volumes.Mount(str(message_file), message_path, False))
        self.node.remember(volumes.mount_points(mounts))
        launch = base / "launch.json"
        launch.write_text(json.dumps({
            "mounts": [vars(m) for m in mounts], "workingDir": run.spec.get("workingDir"),
            "argv": argv, "env": run.env, "runtime": spec.runtime_paths(),
        }))
        log_path = base / f"{run.restarts}.log"
        with log_path.open("ab") as log:
            run.proc = subprocess.Popen(
                ["nsenter", f"--net={network.NETNS_DIR / str(self.netns)}", "unshare", "--mount",
                 "--propagation", "private", "--", sys.executable, "-I", "-S", launch_script.__file__, str(launch)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                cwd="/",
            )
        run.container_id = f"process://{self.node.node_name}/{run.proc.pid}"
        run.started_mono = now
        run.kill_at = None
        run.state = {"running": {"startedAt": now_iso()}}
        run.started, run.ready = False, False
        logger.info("pod %s: started %s container %s pid %d: %s", self.ref, "init" if run.init else "app",
                    run.name, run.proc.pid, argv)
        if not run.init:
            self.start_probers(run)
        self.wake.set()

    def start_probers(self, run: ContainerRun) -> None:
        assert run.proc is not None
        pid, container = run.proc.pid, run.spec
        startup, readiness, liveness = (container.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe"))
        run.started = startup is None
        run.ready = run.started and readiness is None

        def check(probe: dict[str, Any]) -> probes.Check:
            return probes.make_check(probe, container, self.address or "", pid, run.env)

        def on_startup(ok: bool | None) -> None:
            if ok and not run.started:
                run.started = True
                run.ready = readiness is None
                self.wake.set()
            elif ok is False and not run.started:
                self.kill(run, probe_grace(startup, self.pod), "startup probe failed")

        def on_readiness(ok: bool | None) -> None:
            if bool(ok) != run.ready:
                run.ready = bool(ok)
                self.wake.set()

        def on_liveness(ok: bool | None) -> None:
            if ok is False:
                self.kill(run, probe_grace(liveness, self.pod), "liveness probe failed")

        def started() -> bool:
            return run.started

        wanted = [(startup, None, lambda: True, on_startup), (readiness, False, started, on_readiness),
                  (liveness, True, started, on_liveness)]
        for probe, initial, gate, handler in wanted:
            if probe is not None:
                prober = probes.Prober(probe, check(probe), initial, gate, handler, f"probe-{self.ref}-{run.name}")
                run.probers.append(prober)
                prober.start()

    def kill(self, run: ContainerRun, grace: float, why: str) -> None:
        """SIGTERM now, SIGKILL after ``grace`` (the loop enforces it); the policy restarts it."""
        if run.proc is None or run.kill_at is not None:
            return
        logger.info("pod %s: killing %s (%s)", self.ref, run.name, why)
        run.stop_probers()
        run.ready = False
        self.signal(run, signal.SIGTERM)
        run.kill_at = time.monotonic() + grace
        self.wake.set()

    def signal(self, run: ContainerRun, sig: int) -> None:
        if run.proc is not None:
            try:
                os.killpg(run.proc.pid, sig)
            except ProcessLookupError:
                pass

    def exited(self, run: ContainerRun, code: int) -> None:
        run.stop_probers()
        base = self.dir / "containers" / run.name
        try:
            message_bytes: bytes | None = (base / "termination-log").read_bytes()
        except OSError:
            message_bytes = None
        log_tail = _tail(base / f"{run.restarts}.log")
        message = spec.termination_message(run.spec, message_bytes, log_tail, code)
        terminated: dict[str, Any] = {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": run.state.get("running", {}).get("startedAt"), "finishedAt": now_iso(),
            "containerID": run.container_id,
        }
        if message:
            terminated["message"] = message
        run.state = {"terminated": terminated}
        run.proc, run.kill_at = None, None
        run.started = run.ready = False
        run.succeeded = run.init and code == 0
        if time.monotonic() - run.started_mono > 2 * spec.BACKOFF_MAX:
            run.backoff_steps = 0
        run.retry_at = time.monotonic() + (spec.backoff(run.backoff_steps - 1, self.node.backoff_base)
                                           if run.backoff_steps else 0.0)
        run.backoff_steps += 1
        run.exit_published = False
        logger.info("pod %s: container %s exited %d", self.ref, run.name, code)

    # -- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        init_statuses = [r.status() for r in self.inits]
        statuses = [r.status() for r in self.containers]
        if self.sandbox_error:
            for s in init_statuses[:1] or statuses:
                s["state"] = {"waiting": {"reason": "ContainerCreating", "message": self.sandbox_error}}
        init_done = all(r.succeeded for r in self.inits)
        init_failed = any("terminated" in r.state and not r.succeeded for r in self.inits)
        out: dict[str, Any] = {
            "phase": spec.pod_phase(self.restart_policy(), init_failed, statuses),
            "conditions": spec.pod_conditions(self.pod, init_done, self.netns is not None, init_statuses,
                                              statuses, now_iso()),
            "hostIP": self.node.net.gateway, "hostIPs": [{"ip": self.node.net.gateway}],
            "startTime": self.start_time, "containerStatuses": statuses,
        }
        if init_statuses:
            out["initContainerStatuses"] = init_statuses
        if self.address and self.netns:
            out["podIP"], out["podIPs"] = self.address, [{"ip": self.address}]
        return out

    def publish(self) -> None:
        status = self.status()
        rendered = json.dumps({k: v for k, v in status.items() if k != "conditions"}, sort_keys=True) + json.dumps(
            [(c["type"], c["status"], c.get("message")) for c in status["conditions"]])
        if rendered == self.published:
            return
        meta = self.pod["metadata"]
        self.node.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
        self.published = rendered
        for run in (*self.inits, *self.containers):
            run.exit_published = True

    # -- termination -------------------------------------------------------------------------
    def terminate(self) -> None:
        meta = self.pod["metadata"]
        deleting = bool(meta.get("deletionTimestamp")) and not self.vanished
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        if self.vanished:
            grace = 0
        elif self.stopping:
            grace = min(grace, KILL_WAIT)
        runs = [r for r in (*self.inits, *self.containers) if r.proc is not None]
        for run in runs:
            run.stop_probers()
            self.signal(run, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + float(grace)
        for sig_deadline, sig in ((deadline, signal.SIGKILL), (time.monotonic() + float(grace) + KILL_WAIT, None)):
            while any(r.proc is not None and r.proc.poll() is None for r in runs) and time.monotonic() < sig_deadline:
                time.sleep(0.05)
            if sig is not None:
                for run in runs:
                    if run.proc is not None and run.proc.poll() is None:
                        self.signal(run, sig)
        for run in runs:
            if run.proc is not None and run.proc.poll() is not None:
                self.exited(run, 128 - run.proc.returncode if run.proc.returncode < 0 else run.proc.returncode)
        logger.info("pod %s: stopped %d container(s) (grace %ss)", self.ref, len(runs), grace)
        if deleting:
            try:
                self.publish()
            except ApiException as err:
                logger.info("pod %s: final status not written: %s", self.ref, err.reason)
        self.cleanup()
        if deleting:
            self.delete()

    def cleanup(self) -> None:
        network.teardown_pod(self.node.net, self.uid)
        if self.address:
            self.node.pool.release(self.address)
        self.netns = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def delete(self) -> None:
        from kubernetes import client

        meta = self.pod["metadata"]
        body = client.V1DeleteOptions(grace_period_seconds=0, preconditions=client.V1Preconditions(uid=self.uid))
        try:
            self.node.core.delete_namespaced_pod(meta["name"], meta["namespace"], body=body)
        except ApiException as err:
            if err.status not in (404, 409):
                raise
        logger.info("pod %s: deleted", self.ref)


def probe_grace(probe: dict[str, Any] | None, pod: Pod) -> float:
    """The grace period of a probe-triggered kill (probe-level override, else the pod's)."""
    value = (probe or {}).get("terminationGracePeriodSeconds")
    return float(value if value is not None else pod["spec"].get("terminationGracePeriodSeconds", 30))


def _tail(path: Path, limit: int = 4096) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - limit))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""
