"""The bench's pure parts: option parsing, stream arithmetic, goal verdicts, report rendering,
WebSocket framing and profile parsing. No load runs here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.clients import native_stream, openai_stream, responses_stream
from bench.goals import Goal, goals
from bench.instructions import Counted, dumped_events, stretched_settings
from bench.options import PHASES, PRESETS, ROOT, alternated, parse_options
from bench.paths import LABELS
from bench.phases import open_runs
from bench.profile import own_time
from bench.report import (
    ANALYSIS_MARKER,
    open_loop_table,
    render_document,
    run_json,
    write_outputs,
)
from bench.results import Burst, Ceiling, Idle, Ingest, Level, RedisLoad, Run, Start, Workers
from bench.stats import Round, Stream, Summary, percentile, summarize
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
    assert opts.phases == PHASES and opts.open_rate == (1, 50, 100, 500)
    assert {1, 50, 500} <= set(opts.streams) and "litellm" in opts.paths
    assert 10_000 in opts.idle_sockets and opts.idle_hold >= 45
    assert opts.max_seconds <= 900


def test_smaller_presets_run_the_fast_phases_but_not_two_workers() -> None:
    for preset in ("quick", "smoke"):
        phases = parse_options(["--preset", preset]).phases
        assert {"ingest", "redis"} <= set(phases) and "workers" not in phases


def test_open_rates_are_a_list_and_only_the_goal_rate_gets_every_second() -> None:
    opts = parse_options(["--preset", "full"])
    assert [opts.open_seconds_at(r) for r in opts.open_rate] == [10.0, 5.0, 10.0, 5.0]
    opts = parse_options(["--preset", "quick", "--open-rate", "1,50", "--open-seconds", "3"])
    assert opts.open_rate == (1, 50)
    assert [opts.open_seconds_at(r) for r in opts.open_rate] == [6.0, 3.0]  # 6 min-streams


def test_litellm_runs_the_open_loop_only_up_to_100_per_second() -> None:
    runs = open_runs(parse_options(["--preset", "full"]))
    assert ("litellm" in {p for r, p in runs if r == 100}) and (500, "ws") in runs
    assert (500, "litellm") not in runs and runs[0] == (1, "direct")


def test_a_level_with_few_streams_gets_more_rounds() -> None:
    opts = parse_options(["--preset", "full", "--rounds", "3", "--min-streams", "10"])
    assert [opts.rounds_at(n) for n in (1, 4, 50)] == [10, 3, 3]


@pytest.mark.parametrize(
    "argv",
    [
        ["--streams", "0"],
        ["--paths", "nope"],
        ["--max-seconds", "0.5"],
        ["--preset", "x"],
        ["--open-rate", "50,0"],
        ["--open-rate", ","],
    ],
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


def test_the_parser_reads_responses_api_streams() -> None:
    delta = {"type": "response.output_text.delta", "delta": " 5000000", "sequence_number": 4}
    lines = [(6 * MS, b"data: " + json.dumps(delta).encode())]
    parsed = responses_stream(0, lines, True, None)
    assert parsed.lags_ms() == [1.0] and parsed.complete and parsed.error is None
    failed = [(7 * MS, b'data: {"type":"response.failed","sequence_number":5}')]
    assert responses_stream(0, lines + failed, False, None).error == "error: response.failed"


def test_a_chunk_of_several_tokens_counts_each_token() -> None:
    frames = [
        (6 * MS, json.dumps({"type": "chunk", "seq": 2, "content": " 5000000 5500000"}).encode()),
        (7 * MS, json.dumps({"type": "chunk", "seq": 3, "content": " 6000000"}).encode()),
        (8 * MS, json.dumps({"type": "done", "seq": 4}).encode()),
    ]
    stream = native_stream(0, frames, None)
    assert stream.lags_ms() == [1.0, 0.5, 1.0] and stream.seqs == (2, 3)
    assert stream.lost(expected=3) == 0 and stream.duplicated() == 0
    assert stream.lost(expected=4) == 1


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
    run.workers = Workers(2, 500, level(500).paths["ws"], 200_000, 2.0)
    run.open_loop = {100: dict(level(1).paths), 500: dict(level(500).paths)}
    run.ceilings = [Ceiling("WebSocket", Burst(1000, 0.01, 0.01), Burst(600, 0.01, 0.02))]
    run.ingest = Ingest(20, 500, (0.1, 0.12), (0.1, 0.1))
    run.redis_load = RedisLoad(50, 20.0, 10.0, 5.0, 0.1, 12_650, 520, (1, 1))
    run.idle = [Idle("gateway", 1000, 1000, 1.0, 80_000, 110_000, 45, 0.4, 0, 2000, 20000)]
    run.starts = [Start("gateway", 1.9, 80_000), Start("bare", 0.5, 34_000)]
    return run


def _summ(
    lag: float = 0.0,
    ttft: float = 20.0,
    chunks_per_s: float = 1000.0,
    cpu: dict[str, float] | None = None,
    failed: int = 0,
) -> Summary:
    """Ten streams over ten seconds, every sample alike."""
    return Summary(
        streams=10,
        complete=10 - failed,
        chunks=int(10 * chunks_per_s),
        span_s=10.0,
        wall_s=10.0,
        ttft_ms=(ttft,) * 10,
        lag_ms=(lag,) * 10,
        cpu_s=cpu or {},
    )


def _empty_run(**options: object) -> Run:
    return Run("bench", "2026-01-01 00:00 UTC", parse_options([]).as_dict() | options, {})


def _verdicts(run: Run) -> dict[str, Goal]:
    return {g.name: g for g in goals(run)}


def test_every_goal_is_stated_and_says_why_it_was_not_measured() -> None:
    found = goals(_empty_run())
    assert {g.name.split(".")[0] for g in found} == {str(n) for n in range(1, 9)}
    assert all(g.met is None and g.figure for g in found)
    assert _verdicts(_empty_run())["3. two workers"].figure == "workers phase not run"


def test_one_stream_latency_is_judged_on_the_worst_gateway_path() -> None:
    run = _empty_run()
    paths = {
        "direct": _summ(lag=0.1, ttft=20.0),
        "ws": _summ(lag=0.3, ttft=21.0),
        "sse": _summ(lag=0.2, ttft=22.5),
        "openai": _summ(lag=0.9, ttft=21.5),
    }
    run.levels = [Level(1, paths)]
    verdicts = _verdicts(run)
    ttft = verdicts["1. time to first token, 1 stream"]
    assert ttft.met is True and "p99 +2.50 ms (sse)" in ttft.figure  # ≤3 p50, ≤5 p99
    lag = verdicts["1. chunk lag, 1 stream"]
    assert lag.met is False and "p50 +0.80 ms (openai)" in lag.figure  # over 0.5 ms
    assert verdicts["1. latency at 50 streams"].met is None


@pytest.mark.parametrize(
    ("lag", "ttft", "met"), [(11.0, 70.0, True), (11.5, 60.0, False), (5.0, 71.0, False)]
)
def test_fifty_streams_add_at_most_ten_ms_lag_and_fifty_ms_ttft(
    lag: float, ttft: float, met: bool
) -> None:
    run = _empty_run()
    run.levels = [Level(50, {"direct": _summ(lag=1.0, ttft=20.0), "ws": _summ(lag, ttft)})]
    assert _verdicts(run)["1. latency at 50 streams"].met is met


def test_open_loop_goals_need_the_goal_rate_and_a_direct_baseline() -> None:
    run = _empty_run()
    run.open_loop = {20: {"direct": _summ(), "ws": _summ(cpu={"gateway": 0.5})}}
    verdicts = _verdicts(run)
    assert verdicts["2. 100 new streams/s (open loop)"].met is None
    assert "ran at 20/s" in verdicts["2. gateway CPU per chunk"].figure
    ws = _summ(lag=5.0, ttft=90.0, cpu={"gateway": 1.4})  # +4 ms lag, +70 ms TTFT
    run.open_loop[100] = {"direct": _summ(lag=1.0, ttft=20.0), "ws": ws}
    verdicts = _verdicts(run)
    assert verdicts["2. 100 new streams/s (open loop)"].met is True
    assert verdicts["2. gateway CPU per chunk"].met is True  # 1.4 s / 10,000 chunks: 140 µs
    run.open_loop[100]["sse"] = _summ(failed=1, cpu={"gateway": 1.6})
    verdicts = _verdicts(run)
    assert verdicts["2. 100 new streams/s (open loop)"].met is False
    assert verdicts["2. gateway CPU per chunk"].figure == "worst 160 µs (sse)"


def test_capacity_goals_read_100_per_second_among_several_rates() -> None:
    run = _empty_run()
    overloaded = _summ(lag=900.0, ttft=9000.0, failed=5, cpu={"gateway": 9.0})
    run.open_loop = {
        1: {"direct": _summ(), "ws": overloaded},
        500: {"direct": _summ(), "ws": overloaded},
    }
    goal = _verdicts(run)["2. 100 new streams/s (open loop)"]
    assert goal.met is None and goal.figure == "open loop ran at 1/s, 500/s, the goal is at 100/s"
    run.open_loop[100] = {"direct": _summ(lag=1.0, ttft=20.0), "ws": _summ(lag=2.0, ttft=30.0)}
    verdicts = _verdicts(run)
    assert verdicts["2. 100 new streams/s (open loop)"].met is True
    assert verdicts["2. gateway CPU per chunk"].met is None  # no CPU measured at 100/s
    run.open_loop[100] = {"direct": _summ()}
    goal = _verdicts(run)["2. 100 new streams/s (open loop)"]
    assert goal.met is None and "no gateway path" in goal.figure


def test_open_loop_cpu_against_litellm() -> None:
    run = _empty_run()
    run.open_loop = {100: {"openai": _summ(cpu={"gateway": 1.0})}}
    assert _verdicts(run)["2. CPU per chunk, against LiteLLM"].met is None
    litellm = _summ(chunks_per_s=100, cpu={"litellm": 0.7})  # 700 µs
    run.open_loop[50] = {"litellm": litellm}
    assert _verdicts(run)["2. CPU per chunk, against LiteLLM"].met is None  # not at 100/s
    run.open_loop[100]["litellm"] = litellm
    goal = _verdicts(run)["2. CPU per chunk, against LiteLLM"]
    assert goal.met is True and goal.figure.startswith("7.0x")


def test_open_loop_table_groups_rates_with_direct_first() -> None:
    run = _empty_run()
    run.open_loop = {
        100: {"ws": _summ(lag=4.0, ttft=25.0), "direct": _summ(lag=1.0, ttft=20.0)},
        1: {"direct": _summ(lag=0.5, ttft=20.0), "sse": _summ(lag=1.0, ttft=22.0)},
    }
    rows = [line.split(" | ") for line in open_loop_table(run).splitlines()[2:]]
    order = [("| 1/s", "direct"), ("| 1/s", "sse"), ("| 100/s", "direct"), ("| 100/s", "ws")]
    assert [(row[0], row[1]) for row in rows] == [(rate, LABELS[p]) for rate, p in order]
    assert rows[0][8:10] == ["", ""]  # the baseline adds nothing to itself
    assert rows[1][8:10] == ["+2.00", "+0.50"] and rows[3][8:10] == ["+5.00", "+3.00"]


def test_overload_goals_at_500() -> None:
    run = _empty_run()
    gateway = {"ws": _summ(chunks_per_s=3500), "sse": _summ(chunks_per_s=4000)}
    run.levels = [
        Level(50, {"litellm": _summ(chunks_per_s=600)}),
        Level(500, {**gateway, "litellm": _summ(chunks_per_s=300, failed=4)}, {}, 0, 600 * 1024),
    ]
    verdicts = _verdicts(run)
    assert verdicts["3. closed loop at 500"].met is True  # LiteLLM's failures are not ours
    assert verdicts["3. memory at 500"].met is False  # 600 MiB over the 512 MiB cap
    ceiling = verdicts["3. throughput, against LiteLLM's ceiling"]
    assert ceiling.met is False and ceiling.figure.startswith(
        "6.7x (4,000 chunks/s over sse vs 600 at 50"
    )


@pytest.mark.parametrize(
    ("streams", "chunks_per_s", "met"), [(500, 6300.0, True), (500, 6000.0, False), (20, 1, None)]
)
def test_two_workers_against_one(streams: int, chunks_per_s: float, met: bool | None) -> None:
    run = _empty_run()
    run.levels = [Level(500, {"ws": _summ(chunks_per_s=3500)})]
    run.workers = Workers(2, streams, _summ(chunks_per_s=chunks_per_s), 200_000, 2.0)
    assert _verdicts(run)["3. two workers"].met is met


def test_ingest_is_judged_on_the_median_turns() -> None:
    run = _empty_run()
    run.ingest = Ingest(20, 500, (0.12, 0.5, 0.12), (0.1, 0.1, 0.01))  # a noisy turn each
    assert run.ingest.gateway_us == 12.0 and run.ingest.raw_us == 10.0
    goal = _verdicts(run)["5. upstream ingest"]
    assert goal.met is True and goal.figure.startswith("1.20x")
    run.ingest = Ingest(20, 500, (0.13,), (0.1,))
    assert _verdicts(run)["5. upstream ingest"].met is False


def _idle(sockets: int, hold: float, cpu_s: float, drops: int = 0) -> Idle:
    rss_after = 80_000 + sockets * 36 // 1024 * 1000 // 1000
    return Idle("gateway", sockets, sockets, 10.0, 80_000, rss_after, hold, cpu_s, drops, 1, None)


def test_idle_goals_at_ten_thousand_sockets() -> None:
    run = _empty_run()
    run.idle = [_idle(1000, 45, 0.1)]
    verdicts = _verdicts(run)
    assert verdicts["6. 10,000 idle sockets held"].met is None
    assert "only 1,000 sockets" in verdicts["6. CPU while idle at 10,000"].figure
    run.idle.append(_idle(10_000, 45, 2.7))  # 6% of a core
    verdicts = _verdicts(run)
    assert verdicts["6. 10,000 idle sockets held"].met is True
    assert verdicts["6. CPU while idle at 10,000"].met is False
    run.idle[-1] = _idle(10_000, 45, 1.8, drops=1)
    verdicts = _verdicts(run)
    assert verdicts["6. 10,000 idle sockets held"].met is False
    assert verdicts["6. CPU while idle at 10,000"].met is True


@pytest.mark.parametrize(
    ("cpu_s", "trips", "finishes", "cpu_met", "trips_met"),
    [
        (0.1, 500, (1, 1), True, True),  # 10 µs per event
        (0.2, 500, (1, 1), False, True),
        (0.1, 10_000, (1, 1), True, False),  # a round trip per event
        (0.1, 500, (1, 2), True, False),  # a finish that took two
    ],
)
def test_redis_goals(
    cpu_s: float, trips: int, finishes: tuple[int, ...], cpu_met: bool, trips_met: bool
) -> None:
    run = _empty_run()
    run.redis_load = RedisLoad(50, 20.0, 10.0, 5.0, cpu_s, 10_000, trips, finishes)
    verdicts = _verdicts(run)
    assert verdicts["7. Redis client CPU"].met is cpu_met
    assert verdicts["7. Redis round trips"].met is trips_met


def test_footprint_goals_take_the_median_start() -> None:
    run = _empty_run()
    run.starts = [Start("gateway", 1.2, 90_000), Start("gateway", 1.4, 95_000)]
    run.starts += [Start("gateway", 3.0, 99_000), Start("bare", 9.0, 900_000)]
    verdicts = _verdicts(run)
    assert verdicts["8. start to ready"].met is True  # 1.4 s
    assert verdicts["8. idle RSS"].figure == "97.3 MB" and verdicts["8. idle RSS"].met is True


def test_report_and_json_are_written(tmp_path: Path) -> None:
    run = _run()
    document = render_document(run)
    assert "### Goals" in document and "**missed**" in document and "**met**" in document
    assert "LiteLLM proxy" in document and "| WebSocket |" in document
    assert "### Two workers" in document and "### Redis log writer" in document
    write_outputs(run, tmp_path / "r.json", tmp_path / "p.md")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved == json.loads(json.dumps(run_json(run)))
    assert {g["verdict"] for g in saved["goals"]} == {"met", "missed", "not measured"}


def test_a_new_report_keeps_the_analysis_after_the_marker(tmp_path: Path) -> None:
    docs = tmp_path / "performance.md"
    analysis = f"{ANALYSIS_MARKER}\n\n## Reading this run\n\nWritten by hand.\n"
    docs.write_text("# Performance\n\nan old run\n\n" + analysis)
    write_outputs(_run(), tmp_path / "r.json", docs)
    written = docs.read_text()
    assert written.endswith("\n\n" + analysis) and "an old run" not in written
    assert written.splitlines().count(ANALYSIS_MARKER) == 1
    docs.write_text("# Performance\n\nno marker here\n")
    write_outputs(_run(), tmp_path / "r.json", docs)
    assert "no marker here" not in docs.read_text()


def test_profile_own_time_ranks_innermost_frames() -> None:
    lines = ["a;b;send (x.py:1) 3", "a;dumps (y.py:2) 1", "garbage"]
    assert own_time(lines) == [("send (x.py:1)", 0.75), ("dumps (y.py:2)", 0.25)]


def test_a_callgrind_dump_gives_its_events_and_the_cycle_estimate(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.1"
    dump.write_text(
        "version: 1\ncreator: callgrind-3.19.0\npid: 1\n"
        "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\n"
        "summary: 1000 300 200 5 20 10 1 2 3\n"
        "fl=(1) a.c\nfn=(1) f\n1 1000 300 200 5 20 10 1 2 3\n"
        "totals: 1000 300 200 5 20 10 1 2 3\n"
    )
    events = dumped_events(dump)
    assert events["Ir"] == 1000 and events["DLmw"] == 3
    counted = Counted(events, tokens=10, frames=10, complete=1, streams=1)
    assert counted.cycles == 1000 + 10 * (5 + 20 + 10) + 100 * (1 + 2 + 3)
    assert counted.per_token(counted.instructions) == 100


def test_instructions_alone_give_no_cycle_estimate(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.2"
    dump.write_text("events: Ir\nsummary: 420\ntotals: 420\n")
    counted = Counted(dumped_events(dump), tokens=4, frames=2, complete=1, streams=1)
    assert counted.cycles is None and counted.per_token(counted.cycles) is None
    assert counted.per_token(counted.instructions) == 105


def test_the_gateways_own_timings_are_stretched_with_its_clock() -> None:
    as_is, slowed = stretched_settings(1), stretched_settings(50)
    assert set(slowed) == {"LOG_FLUSH_MS", "LEASE_TTL"}
    assert all(float(slowed[k]) == 50 * float(as_is[k]) > 0 for k in slowed)


def test_checkouts_alternate_round_by_round_and_default_to_this_one() -> None:
    order = [(turn, name) for turn, name, _ in alternated(["a=/x", "b=/y"], 3)]
    assert order == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    assert [(name, path) for _, name, path in alternated([], 1)] == [("this", ROOT)]
