"""`modeldeploy loadtest` against the real iris model server on loopback: gates, reports, inputs."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from modeldeploy.cli import main
from modeldeploy.loadtest.cli import parse_duration, run_with_progress
from modeldeploy.loadtest.engine import Endpoint, Load, LoadGenerator
from modeldeploy.loadtest.stats import Recorder

SHORT = ["--duration", "1.5s", "--users", "4"]


def loadtest(*args: str) -> Result:
    return CliRunner().invoke(main, ["loadtest", *args], catch_exceptions=False)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), ("45", 45), ("1.5s", 1.5)]
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "10 parsecs", "5m-3s"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_schema_generated_inputs_pass_all_gates_and_write_a_report(iris_url: str, tmp_path: Path) -> None:
    result = loadtest(
        iris_url, *SHORT, "--p99-ms", "5000", "--max-error-rate", "0", "--min-rps", "1", "--report", str(tmp_path)
    )
    assert result.exit_code == 0, result.output + result.stderr
    assert "PASS all gates" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    stats = report["stats"]
    assert report["passed"] is True and report["meta"]["model"] == "iris"
    assert stats["requests"] > 10 and stats["statuses"] == {"200": stats["requests"]}, (
        "generated inputs are valid for the model"
    )
    assert "generated from the input schema" in report["meta"]["inputs"]
    rows = list(csv.DictReader((tmp_path / "timeline.csv").open()))
    assert sum(int(r["requests"]) for r in rows) == stats["requests"]
    assert "PASSED" in (tmp_path / "report.html").read_text()


def test_p99_gate_fails_with_exit_code_1(iris_url: str, tmp_path: Path) -> None:
    result = loadtest(iris_url, *SHORT, "--p99-ms", "0.001", "--report", str(tmp_path))
    assert result.exit_code == 1
    assert "FAIL p99_ms" in result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"] is False and report["gateFailures"][0]["gate"] == "p99_ms"
    assert "FAILED" in (tmp_path / "report.html").read_text()


def test_min_rps_gate_fails_with_exit_code_1(iris_url: str) -> None:
    result = loadtest(iris_url, *SHORT, "--min-rps", "1000000000")
    assert result.exit_code == 1 and "FAIL min_rps" in result.output


def test_error_rate_gate_fails_on_inputs_the_model_rejects(iris_url: str, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(
        '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}\n{"sepal_length": "long"}\n'
    )
    result = loadtest(
        iris_url,
        "--rate",
        "40",
        "--duration",
        "1s",
        "--input",
        str(inputs),
        "--max-error-rate",
        "0.1",
        "--report",
        str(tmp_path),
    )
    assert result.exit_code == 1
    assert "FAIL max_error_rate" in result.output
    stats = json.loads((tmp_path / "report.json").read_text())["stats"]
    assert set(stats["statuses"]) == {"200", "400"} and stats["error_rate"] == pytest.approx(0.5, abs=0.05)
    assert "InvalidInput" in stats["error_samples"]["HTTP 400"]


def test_real_inputs_from_jsonl_pass(iris_url: str, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(
        '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}\n'
        '[{"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}]\n'
    )
    result = loadtest(iris_url, "--rate", "40", "--duration", "1s", "--input", str(inputs), "--max-error-rate", "0")
    assert result.exit_code == 0, result.output + result.stderr


def test_unknown_model_is_an_error_before_any_load(iris_url: str) -> None:
    result = loadtest(iris_url, *SHORT, "--model", "nope")
    assert result.exit_code == 1 and "HTTP 404" in result.stderr


def test_unreachable_target_is_an_error(free_port) -> None:  # type: ignore[no-untyped-def]
    result = loadtest(f"http://127.0.0.1:{free_port()}", *SHORT)
    assert result.exit_code == 1 and "Connection refused" in result.stderr


@pytest.mark.parametrize("args", [["--users", "2", "--rate", "5"], ["--duration", "0s"], ["--duration", "soon"]])
def test_bad_load_options_are_usage_errors(iris_url: str, args: list[str]) -> None:
    assert loadtest(iris_url, *args).exit_code == 2


def test_live_progress_shows_rate_latency_and_errors(iris_url: str) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    recorder = Recorder()
    generator = LoadGenerator(
        [Endpoint.parse(iris_url)], "/api/models/iris/prediction", [b"{}"], Load(1.6, users=2), recorder
    )
    asyncio.run(run_with_progress({"target": generator}, console))
    screen = out.getvalue()
    for column in ("load", "target", "req/s", "p50", "p99", "errors", "in flight"):
        assert column in screen
    assert "1/2 s" in screen or "2/2 s" in screen
    assert sum(recorder.errors.values()) > 0, "an empty body is invalid, so every request failed"


def test_any_path_with_given_bodies_and_an_unrecorded_warmup(iris_url: str, tmp_path: Path) -> None:
    inputs = tmp_path / "v2.jsonl"
    inputs.write_text(
        json.dumps({"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]})
        + "\n"
    )
    result = loadtest(
        iris_url,
        "--path",
        "/v2/models/iris/infer",
        "--input",
        str(inputs),
        "--users",
        "2",
        "--warmup",
        "1s",
        "--duration",
        "1s",
        "--max-error-rate",
        "0",
        "--report",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["meta"]["path"] == "/v2/models/iris/infer" and report["meta"]["warmup_s"] == 1.0
    assert len(report["stats"]["timeline"]) <= 2, "the warm-up second is not in the results"
    assert report["stats"]["statuses"] == {"200": report["stats"]["requests"]}


def test_path_without_input_is_a_usage_error(iris_url: str) -> None:
    assert loadtest(iris_url, "--path", "/v2/models/iris/infer").exit_code == 2


def test_a_raw_body_file_is_sent_as_is_with_the_given_headers(iris_url: str, tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    common = ["--path", "/api/models/iris/prediction", "--body", str(body), "--users", "2", "--duration", "1s"]
    body.write_bytes(json.dumps(dict(zip(("sepal_length", "sepal_width", "petal_length", "petal_width"),
                                         (5.1, 3.5, 1.4, 0.2), strict=True))).encode())
    typed = loadtest(iris_url, *common, "--header", "X-Request-Id: bench", "--max-error-rate", "0")
    assert typed.exit_code == 0, typed.output + typed.stderr
    body.write_bytes(b"\x00 not JSON")  # unlike --input, --body does not parse what it sends
    loadtest(iris_url, *common, "--report", str(tmp_path))
    statuses = json.loads((tmp_path / "report.json").read_text())["stats"]["statuses"]
    assert set(statuses) == {"400"}, statuses


@pytest.mark.parametrize(
    "args",
    [
        ["--body", "{body}"],  # no --path
        ["--path", "/p", "--body", "{body}", "--input", "{body}"],
        ["--path", "/p", "--body", "{body}", "--header", "X-A: b\r\nX-B: c"],
        ["--path", "/p", "--body", "{body}", "--header", "Content-Length: 1"],
    ],
)
def test_bad_body_or_header_options_are_usage_errors(iris_url: str, tmp_path: Path, args: list[str]) -> None:
    body = tmp_path / "body.bin"
    body.write_bytes(b"{}")
    assert loadtest(iris_url, *(a.format(body=body) for a in args)).exit_code == 2
