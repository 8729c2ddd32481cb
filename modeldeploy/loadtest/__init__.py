"""Load tests for served models: `modeldeploy loadtest` (engine, inputs, stats, gates, compare, report)."""

from __future__ import annotations

from modeldeploy.loadtest.compare import compare_answers, same_prediction
from modeldeploy.loadtest.engine import Endpoint, Load, LoadGenerator, run_together
from modeldeploy.loadtest.gates import GateFailure, Gates, evaluate_gates
from modeldeploy.loadtest.inputs import InputFileError, UnsupportedSchema, generate_bodies, read_jsonl, sample
from modeldeploy.loadtest.report import analysis_report, error_report, format_summary, write_report
from modeldeploy.loadtest.stats import Recorder, Stats, load_figures, summarize
from modeldeploy.loadtest.target import Target, TargetError, fetch_model_info, parse_endpoints, resolve_target

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
    "analysis_report",
    "compare_answers",
    "error_report",
    "evaluate_gates",
    "fetch_model_info",
    "format_summary",
    "generate_bodies",
    "load_figures",
    "parse_endpoints",
    "read_jsonl",
    "resolve_target",
    "run_together",
    "same_prediction",
    "sample",
    "summarize",
    "write_report",
]
