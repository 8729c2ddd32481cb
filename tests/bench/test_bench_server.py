"""bench_server's pure parts, fed with outputs captured from real wrk 4.1 and ghz 0.93 runs (testdata/)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from bench import serving
from bench.bench_server import arguments
from bench.serving import (
    BATCHING,
    BINARY,
    GHZ,
    GRPC,
    KSERVE,
    LOADTEST,
    MLSERVER,
    OURS,
    POLICIES,
    SEED,
    V1,
    V2,
    Measurement,
    Run,
    ToolOutputError,
)

TESTDATA = Path(__file__).parent / "testdata"


def run(server: str, protocol: str, rps: float, p99: float = 10.0, c: int = 8, tool: str = LOADTEST,
        errors: int = 0, round_: int = 1) -> Run:
    return Run(server, protocol, tool, c, round_, Measurement(rps, p99 / 2, p99, int(rps * 3), errors))


def test_wrk_latency_distribution_and_rate_are_read() -> None:
    m = serving.parse_wrk((TESTDATA / "wrk_seed.txt").read_text())
    assert m == Measurement(rps=1240.64, p50_ms=5.93, p99_ms=41.06, requests=1260, errors=0)


def test_wrk_non_2xx_answers_count_as_errors() -> None:
    m = serving.parse_wrk((TESTDATA / "wrk_binary_rejected.txt").read_text())
    assert (m.requests, m.errors, m.p99_ms) == (1792, 1792, 14.61)


def test_wrk_units_and_socket_errors() -> None:
    text = (TESTDATA / "wrk_seed.txt").read_text().replace("41.06ms", "1.20s").replace("5.93ms", "850.00us")
    text = text.replace("1260 requests", "1.26k requests") + "  Socket errors: connect 0, read 2, write 0, timeout 3\n"
    m = serving.parse_wrk(text)
    assert (m.p50_ms, m.p99_ms, m.requests, m.errors) == (0.85, 1200.0, 1260, 5)


def test_wrk_that_could_not_connect_is_an_error() -> None:
    with pytest.raises(ToolOutputError, match="wrk"):
        serving.parse_wrk((TESTDATA / "wrk_refused.txt").read_text())


def test_ghz_report_is_read_in_milliseconds() -> None:
    m = serving.parse_ghz((TESTDATA / "ghz_kserve.json").read_text())
    assert (m.requests, m.errors, round(m.rps, 1)) == (40, 0, 259.7)
    assert (m.p50_ms, m.p99_ms) == pytest.approx((5.477422, 82.012342))


def test_ghz_with_only_failed_calls_says_why() -> None:
    with pytest.raises(ToolOutputError, match="NotFound"):
        serving.parse_ghz((TESTDATA / "ghz_unknown_model.json").read_text())


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"count": 1}'])
def test_ghz_garbage_is_an_error(text: str) -> None:
    with pytest.raises(ToolOutputError):
        serving.parse_ghz(text)


def test_binary_body_is_the_json_header_then_little_endian_fp64() -> None:
    body, headers = serving.v2_binary_body("input-0", [[5.1, 3.5, 1.4, 0.2]])
    length = int(headers[serving.HEADER_LENGTH])
    header = json.loads(body[:length])
    assert header["inputs"][0] == {"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                                   "parameters": {"binary_data_size": 32}}
    assert struct.unpack("<4d", body[length:]) == (5.1, 3.5, 1.4, 0.2)
    assert headers["Content-Type"] == "application/octet-stream"


def test_best_round_prefers_error_free_then_fastest() -> None:
    runs = [run(OURS, SEED, 900, round_=1), run(OURS, SEED, 1000, round_=2, errors=3), run(OURS, SEED, 950, round_=3)]
    assert serving.best_runs(runs)[(OURS, SEED, LOADTEST, 8)].round == 3


def test_seed_goal_against_kserves_best_rest_protocol() -> None:
    best = serving.best_runs([run(OURS, SEED, 1000, p99=20), run(KSERVE, V1, 300, p99=30),
                              run(KSERVE, V2, 450, p99=25)])
    goal = next(g for g in serving.evaluate_goals(best, [8]) if g.name.startswith("REST seed"))
    assert goal.met is False and goal.ratio == pytest.approx(1000 / 450)
    assert "vs KServe REST v2 JSON" in goal.detail and "NOT met, short by 0.28x" in goal.detail
    faster = serving.best_runs([run(OURS, SEED, 1200, p99=26), run(KSERVE, V2, 450, p99=25)])
    slow_tail = next(g for g in serving.evaluate_goals(faster, [8]) if g.name.startswith("REST seed"))
    assert slow_tail.met is False and "met by +0.17x" in slow_tail.detail and "worse" in slow_tail.detail


def test_protocol_goals_say_not_available_when_ours_does_not_answer() -> None:
    best = serving.best_runs([run(MLSERVER, GRPC, 500, tool=GHZ), run(KSERVE, GRPC, 700, tool=GHZ)])
    goals = serving.evaluate_goals(best, [8])
    assert [(g.name, g.ratio, g.met) for g in goals] == [("gRPC v2 >= 2x the better peer", None, False)]
    assert "not available" in goals[0].detail


def test_binary_goal_at_every_concurrency_and_batching_goal_at_64() -> None:
    runs = [run(OURS, BINARY, 2100, c=c) for c in (8, 64)] + [run(KSERVE, BINARY, 1000, c=c) for c in (8, 64)]
    runs += [run(BATCHING, BINARY, 1500, c=64, p99=5)]
    goals = {(g.name, g.concurrency): g for g in serving.evaluate_goals(serving.best_runs(runs), [8, 64])}
    assert goals[("REST v2 binary >= 2x the better peer", 8)].met
    assert goals[("REST v2 binary >= 2x the better peer", 64)].met
    batching = goals[("REST v2 binary >= 1.5x MLServer batching", 64)]
    assert batching.ratio == pytest.approx(1.4) and not batching.met


def test_policy_cost_in_percent() -> None:
    best = serving.best_runs([run(OURS, V2, 1000), run(POLICIES, V2, 920), run(OURS, SEED, 1000),
                              run(POLICIES, SEED, 850)])
    goals = {g.name: g for g in serving.evaluate_goals(best, [8])}
    v2 = goals["REST v2 JSON policies cost < 10%"]
    assert v2.met and v2.ratio == pytest.approx(8.0)
    seed = goals["REST seed policies cost < 10%"]
    assert not seed.met and "NOT met, over by 5.0 points" in seed.detail


def test_report_has_a_table_per_protocol_and_concurrency_and_the_unavailable() -> None:
    best = serving.best_runs([run(OURS, SEED, 1000), run(MLSERVER, V2, 400, c=64), run(OURS, V2, 800, c=64)])
    text = serving.format_tables(best, {(OURS, GRPC): "modeldeploy serve has no --grpc-port yet"})
    assert text.index("REST seed, concurrency 8") < text.index("REST v2 JSON, concurrency 64")
    table = text.split("REST v2 JSON, concurrency 64")[1]
    assert table.index("modeldeploy") < table.index("MLServer")
    assert "  modeldeploy gRPC v2: modeldeploy serve has no --grpc-port yet" in text
    lines = serving.format_goals(serving.evaluate_goals(best, [8, 64])).splitlines()
    assert lines[0].startswith("goals") and any("[    n/a] REST seed >= 2.5x" in line for line in lines)


def test_quick_mode_and_subsets() -> None:
    args = arguments(["--quick", "--servers", "modeldeploy,kserve", "--protocols", "gRPC v2"])
    assert (args.rounds, args.duration, args.concurrency) == (1, 2.0, [8, 64])
    assert args.servers == [OURS, KSERVE] and args.protocols == [GRPC]
    assert arguments([]).concurrency == [1, 8, 64]
    assert (arguments([]).grpc_connections, arguments(["--grpc-connections", "2"]).grpc_connections) == (1, 2)


@pytest.mark.parametrize(
    "argv", [["--servers", "triton"], ["--concurrency", "0"], ["--tools", "ab"], ["--grpc-connections", "0"]]
)
def test_bad_subsets_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        arguments(argv)

