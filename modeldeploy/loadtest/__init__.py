"""Load tests for served models: `modeldeploy loadtest` (engine, inputs, stats, gates, report)."""

from __future__ import annotations

from modeldeploy.loadtest.engine import Endpoint, Load, LoadGenerator
from modeldeploy.loadtest.gates import GateFailure, Gates, evaluate_gates
from modeldeploy.loadtest.inputs import InputFileError, UnsupportedSchema, generate_bodies, read_jsonl, sample
from modeldeploy.loadtest.report import format_summary, write_report
from modeldeploy.loadtest.stats import Recorder, Stats, summarize
from modeldeploy.loadtest.target import Target, TargetError, fetch_model_info, resolve_target

__all__ = [
    "Endpoint",
    "GateFailure",
    "Gates",
    "InputFileError",
    "Load",
    "LoadGenerator",
    "Recorder",
    "Stats",
    "Target",
    "TargetError",
    "UnsupportedSchema",
    "evaluate_gates",
    "fetch_model_info",
    "format_summary",
    "generate_bodies",
    "read_jsonl",
    "resolve_target",
    "sample",
    "summarize",
    "write_report",
]
