"""The terminal summary and the report files: JSON, CSV and a self-contained HTML page."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

from modeldeploy.contract.rollout import REPORT_LIMIT, AnalysisReport, Comparison
from modeldeploy.loadtest.gates import Gates, evaluate_gates
from modeldeploy.loadtest.report import (
    analysis_report,
    comparison_line,
    error_report,
    format_summary,
    write_report,
    write_termination_log,
)
from modeldeploy.loadtest.stats import Recorder, Stats, load_figures, summarize


def sample_stats() -> Stats:
    recorder = Recorder()
    for i in range(300):
        recorder.response(i / 100, (5 + i % 7) / 1000, 200)
    recorder.response(2.5, 0.002, 422, b'{"type":"InvalidInput","messages":["<bad> & worse"]}')
    recorder.error(1.2, "Timeout", "no response within 10s")
    return summarize(recorder, 3.0)


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_summary_lists_figures_and_verdict() -> None:
    stats = sample_stats()
    passed = format_summary(stats, [])
    assert "requests" in passed and "302" in passed and passed.endswith("PASS all gates")
    failed = format_summary(stats, evaluate_gates(stats, Gates(p99_ms=1.0)))
    assert "FAIL p99_ms" in failed and "error HTTP 422" in failed


def test_report_files_are_readable(tmp_path: Path) -> None:
    stats = sample_stats()
    gates = Gates(p99_ms=1.0, max_error_rate=0.5)
    failures = evaluate_gates(stats, gates)
    paths = write_report(tmp_path / "out", stats, gates, failures, {"target": "http://127.0.0.1:1", "model": "iris"})
    assert [p.name for p in paths] == ["report.json", "timeline.csv", "report.html"]

    report = json.loads((tmp_path / "out/report.json").read_text())
    assert report["passed"] is False
    assert report["gates"] == {"p99_ms": 1.0, "max_error_rate": 0.5}
    assert [f["gate"] for f in report["gateFailures"]] == ["p99_ms"]
    assert report["stats"]["requests"] == 302 and report["stats"]["failures"] == 2
    assert len(report["stats"]["timeline"]) == 3

    rows = list(csv.DictReader((tmp_path / "out/timeline.csv").open()))
    assert [int(r["t_s"]) for r in rows] == [0, 1, 2]
    assert sum(int(r["requests"]) for r in rows) == 302
    assert all(float(r["p99_ms"]) >= float(r["p50_ms"]) > 0 for r in rows)

    page = Collector()
    page.feed((tmp_path / "out/report.html").read_text())
    tags = [t for t, _ in page.tags]
    assert tags.count("svg") == 2, "latency-over-time and throughput charts"
    assert tags.count("polyline") == 5, "p50, p95, p99; requests/s, failures/s"
    assert "script" not in tags and "link" not in tags, "self-contained"
    sources = [a.get("src") or a.get("href") for _, a in page.tags if a.get("src") or a.get("href")]
    assert sources == []
    text = "".join(page.text)
    assert "FAILED" in text and "Latency over time" in text and "Throughput" in text
    assert "<bad> & worse" in text, "error bodies are escaped, not markup"


def test_json_has_no_nan_for_an_empty_test(tmp_path: Path) -> None:
    recorder = Recorder()
    recorder.error(0.1, "ConnectionRefusedError", "refused")
    stats = summarize(recorder, 1.0)
    write_report(tmp_path, stats, Gates(), [], {})
    report = json.loads((tmp_path / "report.json").read_text())  # strict JSON: NaN would be rejected below
    assert report["stats"]["latency_ms"]["p99"] is None
    assert "NaN" not in (tmp_path / "report.json").read_text()


def test_summary_shows_target_then_baseline_then_the_comparison() -> None:
    target, baseline = sample_stats(), summarize(Recorder(), 1.0)
    text = format_summary(target, [], baseline, Comparison(compared=200, changed=37, rejected=0, overridden=0))
    lines = text.splitlines()
    assert lines.index("target:") < lines.index("baseline:")
    assert "  requests" in text and "302" in lines[lines.index("target:") + 1]
    assert lines[-2:] == ["compared 200: 37 changed (18.5%), 0 rejected, 0 overridden", "PASS all gates"]
    assert comparison_line(Comparison(compared=0, changed=0, rejected=0, overridden=0)) == (
        "compared 0: 0 changed, 0 rejected, 0 overridden"
    )


def test_report_files_carry_the_baseline_and_the_comparison(tmp_path: Path) -> None:
    stats, baseline = sample_stats(), sample_stats()
    comparison = Comparison(compared=10, changed=3, rejected=1, overridden=2)
    write_report(tmp_path, stats, Gates(), [], {}, baseline, comparison)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["baselineStats"]["requests"] == 302
    assert report["comparison"] == {"compared": 10, "changed": 3, "rejected": 1, "overridden": 2}
    page = (tmp_path / "report.html").read_text()
    assert "Baseline summary" in page and "compared 10: 3 changed (30.0%)" in page
    write_report(tmp_path, stats, Gates(), [], {})
    assert not {"baselineStats", "comparison"} & set(json.loads((tmp_path / "report.json").read_text()))


def test_analysis_report_is_the_contracts_line() -> None:
    comparison = Comparison(compared=4, changed=1, rejected=0, overridden=1)
    line = analysis_report(sample_stats(), summarize(Recorder(), 1.0), comparison).line()
    parsed = AnalysisReport.parse(line)
    assert parsed is not None and parsed.canary is not None and parsed.baseline is not None
    assert parsed.canary.requests == 302 and parsed.comparison == comparison
    assert parsed.baseline.p99_ms is None, "no answers: no latency rather than NaN"
    assert AnalysisReport.parse(analysis_report(sample_stats()).line()) == AnalysisReport(
        canary=load_figures(sample_stats())
    )


def test_error_report_is_one_line_within_the_limits(tmp_path: Path) -> None:
    assert error_report("target\n  unreachable").error == "target unreachable"
    for message in ("x" * 5000, "é" * 5000, "\u2603" * 999):
        report = error_report(message)
        assert report.error is not None and len(report.line().encode()) < REPORT_LIMIT
        assert AnalysisReport.parse(report.line()) == report
    assert error_report("x" * 5000).error == "x" * 997 + "..."
    write_termination_log(tmp_path / "log", error_report("boom"))
    assert (tmp_path / "log").read_text() == '{"error":"boom"}\n'
