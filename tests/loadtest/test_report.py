"""The terminal summary and the report files: JSON, CSV and a self-contained HTML page."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

from modeldeploy.loadtest.gates import Gates, evaluate_gates
from modeldeploy.loadtest.report import format_summary, write_report
from modeldeploy.loadtest.stats import Recorder, Stats, summarize


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
