"""A real Prometheus for the tests: the binary, its generated config, its HTTP API, the monitoring manifests.

`Prometheus(workdir, scrape_configs)` runs `prometheus` on 127.0.0.1 (scrape interval 1 s, storage
in `workdir`); `query()` asks its API. The binary is Debian's (`scripts/install-node-packages.sh`)
or the upstream one `scripts/build-prometheus.sh` caches in ~/.cache/modeldeploy/bin (`UPSTREAM`:
Debian's lacks Kubernetes service discovery).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from devcluster.child import stop_child, wait_answering
from devcluster.ports import free_port

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "manifests" / "monitoring"
CACHE_BIN = Path.home() / ".cache" / "modeldeploy" / "bin"
UPSTREAM = CACHE_BIN / "prometheus"
SCRAPE_INTERVAL = "1s"


def binary(name: str) -> str:
    """The path of `prometheus` or `promtool` (on PATH, else in the cache); fails saying how to install it."""
    found = shutil.which(name) or (str(CACHE_BIN / name) if (CACHE_BIN / name).exists() else None)
    assert found, f"{name} not found: run scripts/install-node-packages.sh (apt-get install prometheus)"
    return found


def rules_document() -> dict[str, Any]:
    """The PrometheusRule's `spec.groups` as a plain Prometheus rules file."""
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    return {"groups": rule["spec"]["groups"]}


def dashboard_queries(variables: dict[str, str]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of the Grafana dashboard, its `$variables` substituted."""
    dashboard = json.loads((MONITORING / "grafana-dashboard-model.json").read_text())
    names = sorted(variables, key=len, reverse=True)  # $namespace before a shorter prefix
    pattern = re.compile("|".join(re.escape(f"${name}") for name in names))
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queries.append((panel["title"], pattern.sub(lambda m: variables[m.group(0)[1:]], target["expr"])))
    return queries


def static_job(name: str, target: str, **labels: str) -> dict[str, Any]:
    """A scrape job of one target, with the labels Kubernetes service discovery would add (namespace, pod)."""
    return {"job_name": name, "static_configs": [{"targets": [target], "labels": labels}]}


class Prometheus:
    """`prometheus` as a child process on 127.0.0.1 with `scrape_configs`, its data in `workdir`."""

    def __init__(self, workdir: Path, scrape_configs: list[dict[str, Any]], executable: str | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "prometheus.log"
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": scrape_configs,
        }))
        args = [executable or binary("prometheus"), f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_answering(f"{self.url}/-/ready", self.process, self.log_path, 30, name="prometheus")
        except RuntimeError:
            self.stop()
            raise

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar as one sample) of `promql`; a query Prometheus refuses fails the test."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert answer["status"] == "success", f"{promql}: {answer.get('errorType')}: {answer.get('error')}"
        data = answer["data"]
        return data["result"] if data["resultType"] in ("vector", "matrix") else [{"value": data["result"]}]

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()["data"][
            "activeTargets"]
        return active

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The result of `promql` once it is non-empty (every half second, up to `timeout`)."""
        deadline = time.monotonic() + timeout
        while not (result := self.query(promql)):
            assert time.monotonic() < deadline, f"{promql} stayed empty for {timeout}s; targets: {self.targets()}"
            time.sleep(0.5)
        return result

    def stop(self) -> None:
        stop_child(self.process, timeout=20)
