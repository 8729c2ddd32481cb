"""`modeldeploy loadtest TARGET`: load a served model, show progress, gate on SLOs, write a report.

Thin: parses options, wires target, inputs, engine, stats, gates, compare and report together,
and does the terminal I/O. With `--baseline` the same load goes to a second set of endpoints at
the same time, and `--compare N` then compares both sides' answers to N inputs; `--termination-log`
writes the contract's `AnalysisReport` (an error one when the test cannot run), as the analysis
Job does. Exit code 1 when a gate fails or the test cannot run (2 for a usage error).
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import click
import uvloop
from rich.console import Console
from rich.live import Live
from rich.table import Table

from modeldeploy.loadtest.compare import compare_answers
from modeldeploy.loadtest.engine import Load, LoadGenerator, parse_header, run_together
from modeldeploy.loadtest.gates import Gates, evaluate_gates
from modeldeploy.loadtest.inputs import InputFileError, UnsupportedSchema, generate_bodies, read_jsonl
from modeldeploy.loadtest.report import (
    analysis_report,
    error_report,
    format_summary,
    write_report,
    write_termination_log,
)
from modeldeploy.loadtest.stats import Recorder, second_summary, summarize
from modeldeploy.loadtest.target import TargetError, fetch_model_info, parse_endpoints, resolve_target

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
REFRESH_S = 0.5
DEFAULT_USERS = 10


def parse_duration(text: str) -> float:
    """`30s`, `1m30s`, `500ms`, `2h` or plain seconds (`45`) -> seconds.

    Raises:
        ValueError: anything else.
    """
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (try 30s, 2m, 1m30s, 500ms)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def seconds_option(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """click callback: a duration option's text -> seconds."""
    try:
        return parse_duration(value)
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from err


def headers_option(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, str]]:
    """click callback: each `--header 'Name: value'` -> (name, value)."""
    try:
        return [parse_header(value) for value in values]
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from err


def progress_table(generators: Mapping[str, LoadGenerator]) -> Table:
    """The live view, a row per load: elapsed time, last second's rate and p50/p99, totals and errors."""
    table = Table(title="modeldeploy loadtest", show_header=True)
    table.add_column("load")
    for column in ("elapsed", "req/s", "p50", "p99", "requests", "errors", "in flight"):
        table.add_column(column, justify="right")
    for name, generator in generators.items():
        buckets = generator.recorder.buckets
        elapsed = generator.elapsed
        last = int(elapsed) - 1
        current = second_summary(last, buckets[last]) if last in buckets else None
        failures = sum(b.failures for b in buckets.values())
        table.add_row(
            name,
            f"{min(elapsed, generator.load.duration_s):.0f}/{generator.load.duration_s:.0f} s",
            f"{current.requests:,}" if current else "-",
            f"{current.p50_ms:.1f} ms" if current else "-",
            f"{current.p99_ms:.1f} ms" if current else "-",
            f"{sum(b.requests for b in buckets.values()):,}",
            f"[red]{failures:,}[/red]" if failures else "0",
            f"{generator.in_flight:,}",
        )
    return table


async def run_with_progress(generators: Mapping[str, LoadGenerator], console: Console) -> dict[str, float]:
    """Run the loads at the same time; Ctrl-C ends them early; a live table refreshes on a terminal.

    Returns each load's duration.
    """
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for generator in generators.values():
            generator.stop()

    loop.add_signal_handler(signal.SIGINT, stop)
    task = asyncio.create_task(run_together(list(generators.values())))
    if console.is_terminal:
        with Live(progress_table(generators), console=console, auto_refresh=False) as live:
            while not task.done():
                await asyncio.wait([task], timeout=REFRESH_S)
                live.update(progress_table(generators), refresh=True)
    durations = await task
    loop.remove_signal_handler(signal.SIGINT)
    return dict(zip(generators, durations, strict=True))


@contextmanager
def reported_errors(termination_log: Path | None) -> Iterator[None]:
    """An error that ends the command is also written to `termination_log` as an error report."""
    try:
        yield
    except Exception as err:
        if termination_log is not None:
            message = err.format_message() if isinstance(err, click.ClickException) else f"{type(err).__name__}: {err}"
            write_termination_log(termination_log, error_report(message))
        raise


@click.command()
@click.argument("target")
@click.option("-n", "--namespace", help="Namespace of md/NAME (default: the kubeconfig's).")
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    help="For md/NAME (default: $KUBECONFIG or ~/.kube/config).",
)
@click.option("--model", help="Model name (default: the only model the server serves, or md/NAME's spec.model.name).")
@click.option(
    "--users",
    type=click.IntRange(min=1),
    help="Closed model: this many connections, each sending its next request on each answer. "
    "[default: 10 without --rate]",
)
@click.option(
    "--rate", type=click.FloatRange(min=0, min_open=True), help="Open model: requests per second, whatever the latency."
)
@click.option("--duration", callback=seconds_option, metavar="DURATION", default="30s", show_default=True)
@click.option(
    "--ramp",
    callback=seconds_option,
    metavar="DURATION",
    default="0s",
    show_default=True,
    help="Rise to --users/--rate linearly over this long.",
)
@click.option(
    "--timeout",
    callback=seconds_option,
    metavar="DURATION",
    default="10s",
    show_default=True,
    help="A request without an answer this long fails.",
)
@click.option(
    "--max-connections", type=click.IntRange(min=1), default=512, show_default=True, help="Open model: connection cap."
)
@click.option(
    "--warmup",
    callback=seconds_option,
    metavar="DURATION",
    default="0s",
    show_default=True,
    help="Load this long first, unrecorded.",
)
@click.option(
    "--path",
    help="POST to this path instead of the model's prediction API (e.g. /v2/models/iris/infer); needs --input.",
)
@click.option(
    "--input",
    "input_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSONL file of request bodies (default: generated from the model's input schema).",
)
@click.option(
    "--body",
    "body_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Send this file's bytes as they are as every request's body (e.g. a v2 binary-data request; "
    "needs --path; give its Content-Type with --header).",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=headers_option,
    metavar="'NAME: VALUE'",
    help="Add this header to every request (repeatable), e.g. 'Inference-Header-Content-Length: 120'.",
)
@click.option(
    "--samples",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="How many distinct bodies to generate.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated bodies.")
@click.option("--p99-ms", type=click.FloatRange(min=0), help="Gate: p99 latency at most this many ms.")
@click.option("--max-error-rate", type=click.FloatRange(0, 1), help="Gate: failed fraction at most this (0.01 = 1 %).")
@click.option("--min-rps", type=click.FloatRange(min=0), help="Gate: at least this many requests/s.")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write report.json, timeline.csv and report.html here.",
)
@click.option(
    "--baseline",
    metavar="URLS",
    help="Also load these servers (comma-separated URLs, e.g. the stable pods) with the same load at the same "
    "time; the gates judge TARGET only.",
)
@click.option(
    "--compare",
    type=click.IntRange(min=1),
    metavar="N",
    help="After the load, send N distinct inputs once to TARGET and once to the baseline and count the changed "
    "answers, policy rejections and overrides (needs --baseline).",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=1e-6,
    show_default=True,
    help="--compare: numbers in two predictions are the same within this, absolutely or relatively.",
)
@click.option(
    "--termination-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the analysis report (one line of JSON, under 4 KiB) here, an error one when the test cannot run "
    "(e.g. /dev/termination-log).",
)
def loadtest(
    target: str,
    namespace: str | None,
    kubeconfig: str | None,
    model: str | None,
    users: int | None,
    rate: float | None,
    duration: float,
    ramp: float,
    timeout: float,
    max_connections: int,
    warmup: float,
    path: str | None,
    input_file: Path | None,
    body_file: Path | None,
    headers: list[tuple[str, str]],
    samples: int,
    seed: int,
    p99_ms: float | None,
    max_error_rate: float | None,
    min_rps: float | None,
    report_dir: Path | None,
    baseline: str | None,
    compare: int | None,
    tolerance: float,
    termination_log: Path | None,
) -> None:
    """Load TARGET (server URLs, comma-separated, or md/NAME) with predictions; exit 1 when a gate fails."""
    console = Console(stderr=True)
    with reported_errors(termination_log):
        if body_file is not None and (path is None or input_file is not None):
            raise click.UsageError("--body needs --path and excludes --input: it is the one body sent to --path")
        if path is not None and input_file is None and body_file is None:
            raise click.UsageError(
                "--path needs --input or --body: only the model's prediction API has a schema to generate from"
            )
        if compare is not None and baseline is None:
            raise click.UsageError("--compare needs --baseline: the servers whose answers TARGET's are compared with")
        if compare is not None and path is not None:
            raise click.UsageError("--compare reads the prediction API's answers, not those of --path")
        try:
            resolved = resolve_target(target, namespace, kubeconfig)
            sides = {"target": resolved.endpoints}
            if baseline is not None:
                sides["baseline"] = parse_endpoints(baseline)
            if path is None:
                info = fetch_model_info(resolved.endpoints[0], model or resolved.model, timeout)
                model, path = info.name, f"/api/models/{info.name}/prediction"
                if baseline is not None:  # the baseline serves the same model
                    fetch_model_info(sides["baseline"][0], model, timeout)
                bodies = read_jsonl(input_file) if input_file else generate_bodies(info.input_schema, samples, seed)
            else:
                model = model or resolved.model
                bodies = [body_file.read_bytes()] if body_file else read_jsonl(input_file)  # type: ignore[arg-type]
        except (TargetError, InputFileError, UnsupportedSchema) as err:
            raise click.ClickException(str(err)) from err
        try:
            load = Load(
                duration,
                users=users if users or rate else DEFAULT_USERS,
                rate=rate,
                ramp_s=ramp,
                timeout_s=timeout,
                max_connections=max_connections,
            )
        except ValueError as err:
            raise click.UsageError(str(err)) from err
        where = "; ".join(f"{name} " + ", ".join(e.url for e in endpoints) for name, endpoints in sides.items())
        if warmup:
            console.print(f"warming up {path} at {where} for {warmup:g}s")
            warm = replace(load, duration_s=warmup)
            warming = [LoadGenerator(e, path, bodies, warm, Recorder(), headers) for e in sides.values()]
            uvloop.run(run_together(warming))
        generators = {name: LoadGenerator(e, path, bodies, load, Recorder(), headers) for name, e in sides.items()}
        started = datetime.now(UTC)
        console.print(f"loading {path} at {where} for {duration:g}s")
        elapsed = uvloop.run(run_with_progress(generators, console))

        summaries = {name: summarize(g.recorder, elapsed[name]) for name, g in generators.items()}
        stats, baseline_stats = summaries["target"], summaries.get("baseline")
        comparison = None
        if compare is not None:
            console.print(f"comparing the answers to {compare} inputs")
            comparison = compare_answers(sides["target"], sides["baseline"], path, bodies, compare, timeout, tolerance)
        gates = Gates(p99_ms, max_error_rate, min_rps)
        failures = evaluate_gates(stats, gates)
        click.echo(format_summary(stats, failures, baseline_stats, comparison))
        if report_dir is not None:
            meta = {
                "target": target,
                "endpoints": [e.url for e in resolved.endpoints],
                **({"baseline": [e.url for e in sides["baseline"]]} if baseline is not None else {}),
                "model": model,
                "path": path,
                "startedAt": started.isoformat(timespec="seconds"),
                "load": f"{load.users} users" if load.users else f"{load.rate:g} req/s",
                "duration_s": duration,
                "ramp_s": ramp,
                "warmup_s": warmup,
                "inputs": str(body_file or input_file or f"{samples} generated from the input schema (seed {seed})"),
                **({"headers": dict(headers)} if headers else {}),
                **({"compared": compare, "tolerance": tolerance} if compare is not None else {}),
            }
            paths = write_report(report_dir, stats, gates, failures, meta, baseline_stats, comparison)
            console.print("report: " + ", ".join(str(p) for p in paths))
        if termination_log is not None:
            write_termination_log(termination_log, analysis_report(stats, baseline_stats, comparison))
    if failures:
        raise SystemExit(1)
