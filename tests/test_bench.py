"""The bench's pure parts: option parsing, stream arithmetic, goal verdicts, report rendering,
WebSocket framing and profile parsing. No load runs here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.clients import native_stream, openai_stream
from bench.goals import ADDED_FLOOR_MS, goals
from bench.options import PRESETS, parse_options
from bench.profile import own_time
from bench.report import render_document, run_json, write_outputs
from bench.results import Burst, Ceiling, Idle, Level, Run
from bench.stats import Round, Stream, percentile, summarize
from bench.wire import OP_TEXT, client_frame, take_frame

MS = 1_000_000


def test_a_preset_fills_every_option_and_given_options_win() -> None:
    opts = parse_options(["--preset", "smoke", "--streams", "3,7", "--idle-hold", "9"])
    assert opts.streams == (3, 7)
    assert opts.idle_hold == 9.0
    assert opts.tokens == PRESETS["smoke"]["tokens"]
    assert "litellm" not in opts.paths


def test_litellm_flag_adds_the_path_and_direct_is_always_kept() -> None:
    opts = parse_options(["--preset", "quick", "--paths", "ws", "--litellm"])
    assert opts.paths == ("direct", "ws", "litellm")
    assert "litellm" not in parse_options(["--preset", "full", "--no-litellm"]).paths


def test_full_preset_covers_every_goal() -> None:
    opts = parse_options(["--preset", "full"])
    assert 500 in opts.streams and "litellm" in opts.paths
    assert opts.idle_sockets == (1000, 5000, 10_000) and opts.idle_hold >= 45
    assert opts.max_seconds <= 900


@pytest.mark.parametrize(
    "argv", [["--streams", "0"], ["--paths", "nope"], ["--max-seconds", "0.5"], ["--preset", "x"]]
)
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_options(argv)


def test_no_docs_leaves_the_report_path_unset() -> None:
    assert parse_options(["--no-docs"]).docs is None


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([], 99) is None


def test_lost_and_duplicated_chunks_are_counted_by_seq() -> None:
    chunks = tuple((i * MS, None) for i in range(4))
    stream = Stream(0, chunks, True, None, seqs=(2, 3, 3, 5))
    assert stream.lost(expected=5) == 2  # seqs 2, 3, 5 of five chunks
    assert stream.duplicated() == 1


def _stream(sent_ms: int, lags_ms: list[int], complete: bool = True) -> Stream:
    chunks = tuple(
        ((sent_ms + 20 * (i + 1) + lag) * MS, (sent_ms + 20 * (i + 1)) * MS)
        for i, lag in enumerate(lags_ms)
    )
    return Stream(sent_ms * MS, chunks, complete, None if complete else "cut")


def test_summary_takes_ttft_lag_and_cpu_per_chunk() -> None:
    rounds = [
        Round((_stream(0, [1, 1]), _stream(0, [3, 3], complete=False)), {"gateway": 0.004}, 1.0)
    ]
    summary = summarize(rounds, expected_chunks=2)
    assert summary.ttft_ms == (21.0, 23.0)
    assert summary.lag(50) == 2.0
    assert summary.cpu_per_chunk_us("gateway") == 1000.0
    assert summary.failed == 1 and summary.errors == ("cut (1)",)


def test_parsers_read_openai_and_native_streams() -> None:
    line = b'data: {"choices":[{"delta":{"content":" 5000000"}}]}'
    parsed = openai_stream(0, [(6 * MS, line)], True, None)
    assert parsed.lags_ms() == [1.0] and parsed.complete
    frames = [
        (1, json.dumps({"type": "chunk", "seq": 2, "content": " 7"}).encode()),
        (2, json.dumps({"type": "error", "code": "unavailable"}).encode()),
    ]
    native = native_stream(0, frames, None)
    assert native.seqs == (2,) and not native.complete
    assert native.error == "error: unavailable"


def test_client_frames_are_masked_and_server_frames_are_taken_whole() -> None:
    frame = client_frame(OP_TEXT, b"hello")
    assert frame[1] & 0x80 and len(frame) == 2 + 4 + 5
    buffer = bytearray(bytes((0x81, 3)) + b"abc" + bytes((0x81, 5)) + b"de")
    assert take_frame(buffer) == (OP_TEXT, b"abc")
    assert take_frame(buffer) is None  # the second frame has not fully arrived


def _summary(cpu: dict[str, float], lag_ms: int, streams: int = 2) -> Round:
    return Round(tuple(_stream(0, [lag_ms] * 10) for _ in range(streams)), cpu, 1.0)


def _run() -> Run:
    def level(n: int) -> Level:
        paths = {
            "direct": summarize([_summary({"upstream": 0.001}, 0)], 10),
            "ws": summarize([_summary({"gateway": 0.002}, 1)], 10),
            "sse": summarize([_summary({"gateway": 0.002}, 1)], 10),
            "openai": summarize([_summary({"gateway": 0.002}, 1)], 10),
            "litellm": summarize([_summary({"litellm": 0.03}, 5)], 10),
        }
        return Level(n, paths, {"ws": {"eval": 4}})

    run = Run("python -m bench.ws_load", "2026-01-01 00:00 UTC", parse_options([]).as_dict(), {
        "code": "abc", "load": "0.1", "cpus": "2", "cpu_model": "cpu", "kernel": "Linux",
        "python": "CPython 3.11", "packages": "x 1", "redis_server": "7",
    })  # fmt: skip
    run.levels = [level(1), level(500)]
    run.ceilings = [Ceiling("WebSocket", Burst(1000, 0.01, 0.01), Burst(600, 0.01, 0.02))]
    run.idle = [Idle("gateway", 1000, 1000, 1.0, 80_000, 110_000, 45, 0.4, 0, 2000, 20000)]
    return run


def test_goals_are_judged_against_the_same_run() -> None:
    verdicts = {g.name: g for g in goals(_run())}
    assert verdicts["1. latency added, against LiteLLM"].met is True  # 5 ms vs 1 ms: 5x
    assert verdicts["1. CPU per chunk, against LiteLLM"].met is True  # 15x
    assert verdicts["3. WebSocket send ceiling"].met is False  # 60% of bare
    assert verdicts["4. closed loop at 500"].met is True
    assert verdicts["4. open loop"].met is None
    assert verdicts["5. memory per idle socket"].met is True  # 30 MiB / 1000 = 30.7 kB
    assert verdicts["5. connect rate"].met is True
    assert ADDED_FLOOR_MS > 0


def test_report_and_json_are_written(tmp_path: Path) -> None:
    run = _run()
    document = render_document(run)
    assert "### Goals" in document and "**missed**" in document and "**met**" in document
    assert "LiteLLM proxy" in document and "| WebSocket |" in document
    write_outputs(run, tmp_path / "r.json", tmp_path / "p.md")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved == json.loads(json.dumps(run_json(run)))
    assert {g["verdict"] for g in saved["goals"]} == {"met", "missed", "not measured"}


def test_profile_own_time_ranks_innermost_frames() -> None:
    lines = ["a;b;send (x.py:1) 3", "a;dumps (y.py:2) 1", "garbage"]
    assert own_time(lines) == [("send (x.py:1)", 0.75), ("dumps (y.py:2)", 0.25)]
