"""`--baseline`, `--compare`, `--termination-log` against real model servers: the canary analysis as its Job runs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
from click.testing import CliRunner, Result

from modeldeploy.cli import main
from modeldeploy.contract.rollout import AnalysisReport
from modeldeploy.loadtest.compare import compare_answers
from modeldeploy.loadtest.engine import Endpoint

SHORT = ["--duration", "1s", "--users", "2", "--samples", "60"]
PREDICTIONS = re.compile(
    r'^modeldeploy_requests_total\{endpoint="/api/models/\{name\}/prediction",model="iris",status="200"\} (\S+)$', re.M
)


def loadtest(*args: str) -> Result:
    return CliRunner().invoke(main, ["loadtest", *args], catch_exceptions=False)


def analysed(tmp_path: Path, target: str, baseline: str, *args: str, exit_code: int = 0) -> AnalysisReport:
    """Run an analysis of `target` against `baseline` and read its termination log."""
    log = tmp_path / "termination-log"
    result = loadtest(target, *SHORT, "--baseline", baseline, "--termination-log", str(log), *args)
    assert result.exit_code == exit_code, result.output + result.stderr
    text = log.read_text()
    assert text.endswith("\n") and text.count("\n") == 1 and len(text.encode()) < 4096
    report = AnalysisReport.parse(text)
    assert report is not None and report.error is None
    return report


def answered(url: str) -> float:
    """Predictions a server answered with 200 so far, from its /metrics."""
    return sum(float(n) for n in PREDICTIONS.findall(httpx.get(f"{url}/metrics").text))


def test_identical_servers_answer_alike(iris_url: str, twin_url: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    result = loadtest(
        iris_url,
        *SHORT,
        "--baseline",
        twin_url,
        "--compare",
        "80",
        "--termination-log",
        str(log),
        "--report",
        str(tmp_path / "out"),
        "--max-error-rate",
        "0",
    )
    assert result.exit_code == 0, result.output + result.stderr
    lines = result.output.splitlines()
    assert lines.index("target:") < lines.index("baseline:")
    assert "compared 80: 0 changed (0.0%), 0 rejected, 0 overridden" in lines
    report = AnalysisReport.parse(log.read_text())
    assert report is not None and report.canary is not None and report.baseline is not None
    assert report.canary.requests > 10 and report.baseline.requests > 10, "both sides were loaded"
    assert report.canary.error_rate == 0 == report.baseline.error_rate
    assert report.comparison is not None
    assert (report.comparison.compared, report.comparison.changed) == (80, 0), "60 inputs, cycled to 80"
    saved = json.loads((tmp_path / "out/report.json").read_text())
    assert saved["baselineStats"]["requests"] == report.baseline.requests
    assert saved["comparison"] == {"compared": 80, "changed": 0, "rejected": 0, "overridden": 0}
    assert saved["meta"]["baseline"] == [twin_url] and saved["meta"]["compared"] == 80


def test_an_override_policy_changes_answers(iris_url: str, setosa_url: str, tmp_path: Path) -> None:
    against_override = analysed(tmp_path, iris_url, setosa_url, "--compare", "60").comparison
    assert against_override is not None
    assert 0 < against_override.changed < 60, "the generated inputs are not all setosa, nor none"
    assert against_override.overridden == 0 == against_override.rejected, "counted on the target's side"

    overriding = analysed(tmp_path, setosa_url, iris_url, "--compare", "60").comparison
    assert overriding is not None
    assert overriding.overridden == 60, "the policy fires on every input, even where setosa was the answer"
    assert overriding.changed == against_override.changed


def test_a_tolerance_cannot_hide_a_changed_class(iris_url: str, setosa_url: str, tmp_path: Path) -> None:
    comparison = analysed(tmp_path, setosa_url, iris_url, "--compare", "20", "--tolerance", "1000").comparison
    assert comparison is not None and comparison.changed > 0, "strings compare exactly"


def test_a_rejecting_target_fails_every_request(iris_url: str, reject_url: str, tmp_path: Path) -> None:
    report = analysed(tmp_path, reject_url, iris_url, "--compare", "30", "--max-error-rate", "0.5", exit_code=1)
    assert report.comparison is not None
    assert report.comparison.rejected == report.comparison.compared == report.comparison.changed == 30
    assert report.canary is not None and report.baseline is not None
    assert report.canary.error_rate == 1 and report.canary.failures == report.canary.requests > 0
    assert report.baseline.error_rate == 0, "the gates judge the target only"


def test_comma_separated_targets_share_the_load(iris_url: str, twin_url: str) -> None:
    before = answered(iris_url), answered(twin_url)
    result = loadtest(f"{iris_url},{twin_url}", *SHORT, "--users", "4", "--max-error-rate", "0")
    assert result.exit_code == 0, result.output + result.stderr
    assert f"at target {iris_url}, {twin_url} " in " ".join(result.stderr.split())
    first, second = answered(iris_url) - before[0], answered(twin_url) - before[1]
    assert first > 5 and second > 5, (first, second)


def test_baseline_endpoints_are_used_in_turn(iris_url: str, twin_url: str, setosa_url: str, tmp_path: Path) -> None:
    before = answered(twin_url), answered(setosa_url)
    report = analysed(tmp_path, iris_url, f"{twin_url},{setosa_url}", "--compare", "40")
    assert report.comparison is not None and 0 < report.comparison.changed < 40, "half the baseline overrides"
    assert answered(twin_url) - before[0] > 20 and answered(setosa_url) - before[1] > 20


def test_termination_log_of_a_test_that_cannot_run(iris_url: str, free_port: Callable[[], int], tmp_path: Path) -> None:
    log = tmp_path / "termination-log"

    def error_of(*args: str, exit_code: int = 1) -> str:
        log.unlink(missing_ok=True)
        result = loadtest(*args, "--termination-log", str(log))
        assert result.exit_code == exit_code, result.output + result.stderr
        report = AnalysisReport.parse(log.read_text())
        assert report is not None and report.canary is None and report.error is not None
        assert "\n" not in report.error and len(log.read_bytes()) < 4096
        return report.error

    unreachable = f"http://127.0.0.1:{free_port()}"
    assert "Connection refused" in error_of(unreachable, *SHORT)
    assert "Connection refused" in error_of(iris_url, *SHORT, "--baseline", unreachable)
    assert "HTTP 404" in error_of(iris_url, *SHORT, "--model", "nope")
    assert "--compare needs --baseline" in error_of(iris_url, *SHORT, "--compare", "5", exit_code=2)
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("{not json\n" + "x" * 10000 + "\n")
    assert "not JSON" in error_of(iris_url, *SHORT, "--input", str(inputs))
    assert "not an http(s) URL" in error_of(iris_url, *SHORT, "--baseline", "ftp://nowhere")


def test_transport_errors_in_the_comparison_count_as_changes(
    iris_url: str, free_port: Callable[[], int], tmp_path: Path
) -> None:
    bodies = [b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}']
    comparison = compare_answers(
        [Endpoint.parse(iris_url)],
        [Endpoint("127.0.0.1", free_port())],
        "/api/models/iris/prediction",
        bodies,
        3,
        2.0,
        1e-6,
    )
    assert (comparison.compared, comparison.changed, comparison.rejected) == (3, 3, 0)
