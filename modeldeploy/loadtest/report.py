"""What a load test says: the terminal summary, the report files (JSON, CSV, HTML), the termination log.

`format_summary`, the `render_*` functions, `analysis_report` and `error_report` are pure
(data in, text or the contract's `AnalysisReport` out); `write_report` and
`write_termination_log` only write what they make. The HTML page is self-contained (inline
SVG, no scripts, no CDN) so it opens offline. The termination log is the analysis Job's
result for the operator: one line of JSON under the kubelet's 4 KiB.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from modeldeploy.contract.rollout import REPORT_LIMIT, AnalysisReport, Comparison
from modeldeploy.loadtest.gates import GateFailure, Gates
from modeldeploy.loadtest.stats import Second, Stats, load_figures

REPORT_JSON, TIMELINE_CSV, REPORT_HTML = "report.json", "timeline.csv", "report.html"
CSV_COLUMNS = ("t_s", "requests", "failures", "p50_ms", "p95_ms", "p99_ms")
COLOURS = ("#1f77b4", "#ff7f0e", "#d62728", "#2ca02c")


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f} ms"


def summary_rows(stats: Stats) -> list[tuple[str, str]]:
    """The figures of the final table, as (label, value) pairs."""
    lat = stats.latency_ms
    rows = [
        ("requests", f"{stats.requests:,}"),
        ("duration", f"{stats.duration_s:.1f} s"),
        ("throughput", f"{stats.rps:,.1f} req/s"),
        ("failures", f"{stats.failures:,} ({stats.error_rate:.2%})"),
        ("latency p50", _ms(lat.p50)),
        ("latency p90", _ms(lat.p90)),
        ("latency p95", _ms(lat.p95)),
        ("latency p99", _ms(lat.p99)),
        ("latency max", _ms(lat.max)),
    ]
    rows += [(f"error {kind}", f"{count:,}") for kind, count in stats.errors.items()]
    return rows


def comparison_line(comparison: Comparison) -> str:
    """The comparison in one line, e.g. `compared 200: 37 changed (18.5%), 0 rejected, 0 overridden`."""
    share = f" ({comparison.changed / comparison.compared:.1%})" if comparison.compared else ""
    return (
        f"compared {comparison.compared}: {comparison.changed} changed{share}, "
        f"{comparison.rejected} rejected, {comparison.overridden} overridden"
    )


def format_summary(
    stats: Stats,
    failures: Sequence[GateFailure],
    baseline: Stats | None = None,
    comparison: Comparison | None = None,
) -> str:
    """The final table (the target's, then the baseline's), the comparison and the verdict as plain text."""
    sections = {"target": summary_rows(stats)}
    if baseline is not None:
        sections["baseline"] = summary_rows(baseline)
    width = max(len(label) for rows in sections.values() for label, _ in rows)
    grouped = baseline is not None
    lines = []
    for name, rows in sections.items():
        lines += [f"{name}:"] if grouped else []
        lines += [f"{'  ' if grouped else ''}{label:<{width}}  {value}" for label, value in rows]
    lines += [comparison_line(comparison)] if comparison is not None else []
    lines += [f"FAIL {f.message}" for f in failures] or ["PASS all gates"]
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """NaN and infinities become null, since JSON has no such numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def render_json(
    stats: Stats,
    gates: Gates,
    failures: Sequence[GateFailure],
    meta: dict[str, Any],
    baseline: Stats | None = None,
    comparison: Comparison | None = None,
) -> str:
    """report.json: the test's settings, its summary, timeline and gate results (and the baseline's, the comparison)."""
    document: dict[str, Any] = {
        "meta": meta,
        "passed": not failures,
        "gates": {k: v for k, v in vars(gates).items() if v is not None},
        "gateFailures": [
            {"gate": f.gate, "limit": f.limit, "actual": f.actual, "message": f.message} for f in failures
        ],
        "stats": stats.to_dict(),
    }
    if baseline is not None:
        document["baselineStats"] = baseline.to_dict()
    if comparison is not None:
        document["comparison"] = comparison.model_dump(by_alias=True)
    return json.dumps(_jsonable(document), indent=2, allow_nan=False) + "\n"


def render_csv(timeline: Sequence[Second]) -> str:
    """timeline.csv: one row per second of the test."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for s in timeline:
        writer.writerow(
            [
                s.t,
                s.requests,
                s.failures,
                *("" if math.isnan(v) else f"{v:.3f}" for v in (s.p50_ms, s.p95_ms, s.p99_ms)),
            ]
        )
    return out.getvalue()


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `value` (> 0)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value * (1 - 1e-9))


def render_svg_chart(title: str, unit: str, series: dict[str, list[tuple[float, float]]]) -> str:
    """A line chart as inline SVG: one polyline per series over a shared x (seconds) axis."""
    width, height, left, right, top, bottom = 760, 260, 90, 130, 28, 36
    points = [p for values in series.values() for p in values if math.isfinite(p[1])]
    x_max = max((x for x, _ in points), default=1.0) or 1.0
    x_step = nice_ceiling(x_max / 10)
    y_max = nice_ceiling(max((y for _, y in points), default=1.0))
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + x / x_max * plot_w

    def sy(y: float) -> float:
        return top + plot_h - y / y_max * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"'
        f' aria-label="{escape(title)}">',
        f'<text x="{left}" y="18" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#444"/>',
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">time (s)</text>',
    ]
    for i in range(6):
        y = y_max * i / 5
        parts.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{left + plot_w}" y2="{sy(y):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.4g} {escape(unit)}</text>')
    for i in range(int(x_max / x_step) + 1):
        x = x_step * i
        parts.append(f'<text x="{sx(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{x:.0f}</text>')
    for n, (name, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values if math.isfinite(y))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>')
        legend_y = top + 16 * n + 8
        parts.append(f'<rect x="{left + plot_w + 12}" y="{legend_y - 9}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 30}" y="{legend_y + 2}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _table(rows: Sequence[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>"


def render_html(
    stats: Stats,
    gates: Gates,
    failures: Sequence[GateFailure],
    meta: dict[str, Any],
    baseline: Stats | None = None,
    comparison: Comparison | None = None,
) -> str:
    """report.html: settings, verdict, summary tables, comparison, latency-over-time and throughput charts."""
    verdict = "FAILED" if failures else "PASSED"
    shown = {k: ", ".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in meta.items()}
    summary = f"<h2>Summary</h2>{_table(summary_rows(stats))}"
    if baseline is not None:
        summary += f"<h2>Baseline summary</h2>{_table(summary_rows(baseline))}"
    if comparison is not None:
        summary += f"<h2>Comparison</h2><p>{escape(comparison_line(comparison))}</p>"
    gate_items = "".join(f"<li class=fail>{escape(f.message)}</li>" for f in failures)
    checked = ", ".join(f"{k} = {v:g}" for k, v in vars(gates).items() if v is not None) or "none"
    timeline = stats.timeline
    latency = render_svg_chart(
        "Latency over time",
        "ms",
        {
            name: [(s.t, getattr(s, attr)) for s in timeline]
            for name, attr in (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms"))
        },
    )
    throughput = render_svg_chart(
        "Throughput",
        "req/s",
        {"requests/s": [(s.t, s.requests) for s in timeline], "failures/s": [(s.t, s.failures) for s in timeline]},
    )
    samples = "".join(
        f"<tr><th>{escape(kind)}</th><td><code>{escape(text)}</code></td></tr>"
        for kind, text in stats.error_samples.items()
    )
    errors = f"<h2>Error samples</h2><table>{samples}</table>" if samples else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Load test: {verdict}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ text-align: left; padding: 2px 12px 2px 0; }}
.PASSED {{ color: #2ca02c; }} .FAILED, .fail {{ color: #d62728; }}
svg text {{ font-size: 11px; }}
</style></head><body>
<h1>Load test <span class="{verdict}">{verdict}</span></h1>
<h2>Settings</h2>{_table(list(shown.items()))}
<h2>Gates</h2><p>Checked: {escape(checked)}</p><ul>{gate_items}</ul>
{summary}
<h2>Over time</h2>
{latency}
{throughput}
{errors}
</body></html>
"""


def write_report(
    directory: Path,
    stats: Stats,
    gates: Gates,
    failures: Sequence[GateFailure],
    meta: dict[str, Any],
    baseline: Stats | None = None,
    comparison: Comparison | None = None,
) -> list[Path]:
    """Write report.json, timeline.csv (the target's) and report.html into `directory` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        REPORT_JSON: render_json(stats, gates, failures, meta, baseline, comparison),
        TIMELINE_CSV: render_csv(stats.timeline),
        REPORT_HTML: render_html(stats, gates, failures, meta, baseline, comparison),
    }
    for name, text in files.items():
        (directory / name).write_text(text)
    return [directory / name for name in files]


def analysis_report(
    stats: Stats, baseline: Stats | None = None, comparison: Comparison | None = None
) -> AnalysisReport:
    """The analysis Job's report of a test that ran: the target as the canary, the baseline, the comparison."""
    return AnalysisReport(
        canary=load_figures(stats),
        baseline=load_figures(baseline) if baseline is not None else None,
        comparison=comparison,
    )


# the contract's bound on the error text
_ERROR_CHARS: int = next(
    m.max_length for m in AnalysisReport.model_fields["error"].metadata if hasattr(m, "max_length")
)


def error_report(message: str) -> AnalysisReport:
    """The report of a test that could not run: `message` on one line, cut to fit the report's limits."""
    text = " ".join(message.split()) or "the load test failed"
    limit = _ERROR_CHARS
    while True:  # escapes of non-ASCII characters make the line longer than the text
        cut = text if len(text) <= limit else text[: limit - 3] + "..."
        report = AnalysisReport(error=cut)
        if len(report.line()) < REPORT_LIMIT:
            return report
        limit //= 2


def write_termination_log(path: Path, report: AnalysisReport) -> None:
    """Write `report` as the one line of the termination message file `path`."""
    path.write_text(report.line() + "\n")
