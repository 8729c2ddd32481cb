"""`modeldeploy serve --workers 2` as a real process on 127.0.0.1: both workers answer, the model is
verified once, metrics add up across workers, a killed worker is replaced, a failed recheck
in worker 0 fails readiness in every worker.

Which worker answered is read from the per-worker metric files (prometheus_client's
multiprocess mode names them by pid), not from anything the server adds to its responses.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from server_support import SETOSA, ServerProcess

pytestmark = pytest.mark.slow

PREDICT = "/api/models/iris/prediction"


def served_by(server: ServerProcess, pid: int) -> Counter[tuple[str, str]]:
    """Requests worker `pid` handled, by endpoint and status (its counter file)."""
    counts: Counter[tuple[str, str]] = Counter()
    path = server.metrics_dir / f"counter_{pid}.db"
    if not path.exists():
        return counts
    for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
        _, sample, labels, _ = json.loads(key)
        if sample == "modeldeploy_requests_total":
            counts[(labels["endpoint"], labels["status"])] += int(value)
    return counts


def metric(text: str, sample: str) -> float:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", text, flags=re.M)
    return float(found[1]) if found else 0.0


def fresh_connections(server: ServerProcess, method: str, path: str, count: int, **request: Any) -> list[int]:
    """`count` requests, each on a new connection, 8 at a time (the kernel hands connections to either worker)."""

    def one(_: int) -> int:
        return httpx.request(method, f"{server.url}{path}", timeout=10.0, **request).status_code

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def test_both_workers_answer_and_metrics_are_the_pods_total(
    iris_dir: Path, start_server: Callable[..., ServerProcess]
) -> None:
    server = start_server(iris_dir, workers=2)
    workers = server.workers()
    assert len(workers) == 2
    statuses = fresh_connections(server, "POST", PREDICT, 200, json=SETOSA)
    assert statuses == [200] * 200
    per_worker = [served_by(server, pid)[(PREDICT.replace("iris", "{name}"), "200")] for pid in workers]
    assert all(count > 0 for count in per_worker), per_worker
    assert sum(per_worker) == 200
    text = httpx.get(f"{server.url}/metrics").text
    total = 'modeldeploy_requests_total{endpoint="/api/models/{name}/prediction",model="iris",status="200"}'
    assert metric(text, total) == 200
    assert metric(text, 'modeldeploy_batch_rows_sum{model="iris"}') == 200  # rows, in however many batches
    assert metric(text, 'modeldeploy_model_ready{model="iris"}') == 1
    assert metric(text, "modeldeploy_requests_in_flight") == 1  # this scrape
    assert server.stop() == 0
    logs = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
    assert [line["message"] for line in logs].count("signature verified") == 1  # in the parent, before fork
    assert [line["message"] for line in logs].count("model loaded") == 1


def test_a_killed_worker_is_replaced(iris_dir: Path, start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(iris_dir, workers=2)
    before = server.workers()
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(after := server.workers()) != 2 or before[0] in after:
        assert time.monotonic() < deadline, f"no worker replaced {before[0]}: {server.logs()}"
        time.sleep(0.05)
    assert before[1] in after
    assert fresh_connections(server, "POST", PREDICT, 100, json=SETOSA) == [200] * 100
    new = next(pid for pid in after if pid not in before)
    assert sum(served_by(server, new).values()) > 0  # the new worker serves
    assert "worker exited: starting another" in server.logs()
    assert server.stop() == 0
    assert server.logs().count('"signature verified"') == 1


def test_a_failed_recheck_fails_readiness_in_every_worker(
    iris_dir: Path, tmp_path: Path, start_server: Callable[..., ServerProcess]
) -> None:
    served = Path(shutil.copytree(iris_dir, tmp_path / "iris"))
    server = start_server(served, config={"recheckSeconds": 0.2}, workers=2)
    assert set(fresh_connections(server, "GET", "/api/health/ready", 20)) == {200}
    with (served / "model.joblib").open("ab") as weights:
        weights.write(b"tampered")
    deadline = time.monotonic() + 30
    while httpx.get(f"{server.url}/api/health/ready").status_code == 200:
        assert time.monotonic() < deadline, "readiness never failed"
        time.sleep(0.1)
    answers = fresh_connections(server, "GET", "/api/health/ready", 60)
    assert set(answers) == {503}
    for pid in server.workers():  # each worker answered 503 itself
        assert served_by(server, pid)[("/api/health/ready", "503")] > 0, pid
    report = httpx.get(f"{server.url}/api/health/ready").json()
    assert (report["reason"], report["failedFiles"]) == ("FilesDiffer", ["model.joblib"])
    text = httpx.get(f"{server.url}/metrics").text
    assert metric(text, 'modeldeploy_model_ready{model="iris"}') == 0
    assert metric(text, 'modeldeploy_parameters_verified{model="iris"}') == 0
    assert metric(text, 'modeldeploy_integrity_checks_total{model="iris",result="failed"}') == 1  # worker 0 only
    assert server.stop() == 0
