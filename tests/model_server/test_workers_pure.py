"""Pure parts of `--workers`: sizing from cgroup files, the flag, the restart budget, the shared failure board."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from model_server.cpus import auto_workers, cgroup_cpu_limit
from model_server.integrity import FailureBoard
from model_server.serve import Workers, serve, worker_count
from model_server.supervisor import RestartBudget
from modeldeploy.params.errors import VerificationError


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: rounded up
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
        ({"cpu,cpuacct/cpu.cfs_quota_us": "250000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 3),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_limit_from_v2_or_v1_files(tmp_path: Path, files: dict[str, str], limit: int | None) -> None:
    assert cgroup_cpu_limit(write(tmp_path, files)) == limit


@pytest.mark.parametrize(
    "files",
    [
        {"cpu.max": "garbage"},
        {"cpu.max": "100000"},
        {"cpu.max": "0 100000"},
        {"cpu.max": "100000 0"},
        {"cpu.max": "-5 -5"},
        {"cpu/cpu.cfs_quota_us": "lots", "cpu/cpu.cfs_period_us": "100000"},
    ],
)
def test_malformed_cgroup_files_mean_no_limit(tmp_path: Path, files: dict[str, str]) -> None:
    assert cgroup_cpu_limit(write(tmp_path, files)) is None


def test_auto_workers_is_the_limit_capped_by_usable_cpus_and_at_least_one() -> None:
    assert auto_workers(2, 8) == 2
    assert auto_workers(16, 4) == 4
    assert auto_workers(None, 3) == 3
    assert auto_workers(None, 0) == 1


def test_worker_count_auto_on_this_machine() -> None:
    assert worker_count(3) == 3
    assert 1 <= worker_count("auto") <= len(os.sched_getaffinity(0))


def test_workers_flag_takes_a_positive_number_or_auto() -> None:
    param = Workers()
    assert param.convert("auto", None, None) == "auto"
    assert param.convert("4", None, None) == 4
    for bad in ("0", "-2", "many", "1.5"):
        with pytest.raises(click.BadParameter):
            param.convert(bad, None, None)


def test_serve_rejects_a_bad_workers_value_from_the_environment(tmp_path: Path) -> None:
    key = write(tmp_path, {"key.pem": "not used"}) / "key.pem"
    result = CliRunner().invoke(serve, [str(tmp_path), "--public-key", str(key)], env={"MODELDEPLOY_WORKERS": "zero"})
    assert result.exit_code == 2
    assert "'zero' is neither a number nor 'auto'" in result.output


def test_restart_budget_allows_a_few_restarts_per_window() -> None:
    budget = RestartBudget(limit=2, window=10.0)
    assert budget.allow(0.0) and budget.allow(1.0)
    assert not budget.allow(2.0)
    assert budget.allow(10.5)  # the first one left the window


def test_failure_board_is_shared_with_a_forked_process() -> None:
    board = FailureBoard()
    assert board.read() is None
    pid = os.fork()
    if pid == 0:  # the child posts, as worker 0 would
        board.post(VerificationError("FilesDiffer", "model.joblib changed", ["model.joblib"]))
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    failure = board.read()
    assert failure is not None
    assert (failure.reason, failure.args[0], failure.files) == ("FilesDiffer", "model.joblib changed", ["model.joblib"])
    board.post(VerificationError("FilesDiffer", "a later one", []))
    assert board.read() is failure  # the first failure stays


def test_failure_board_cuts_a_huge_file_list_to_fit() -> None:
    board = FailureBoard()
    files = [f"weights/shard-{i:06d}.bin" for i in range(20000)]
    board.post(VerificationError("FilesDiffer", "many files changed", files))
    failure = board.read()
    assert failure is not None and failure.reason == "FilesDiffer"
    assert 0 < len(failure.files) < len(files)
    assert set(failure.files) <= set(files)
