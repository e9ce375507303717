"""The bench's command line: a preset, then any option given overrides the preset's value.

Pure: `parse_options(argv)` only reads `argv`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAX_STREAMS = 1000
MAX_IDLE_SOCKETS = 20_000
# Closed-loop paths: the upstream read directly, the gateway's WebSocket, its native SSE
# (`POST /completion`), its OpenAI-compatible SSE (chat completions and the Responses API),
# and LiteLLM's proxy.
PATHS = ("direct", "ws", "sse", "openai", "responses", "litellm")
# In the order a run takes them; "footprint" is each server's start, taken whatever is chosen.
PHASES = ("footprint", "closed", "workers", "open", "ceilings", "ingest", "redis", "idle")
# Two workers start a gateway of their own and take about a minute: only the full preset.
SINGLE_GATEWAY_PHASES = tuple(p for p in PHASES if p != "workers")
# The open loop's rate the capacity goals are judged at: it gets the whole `open_seconds`;
# the other rates, which only draw the curve around it, at most OPEN_OTHER_SECONDS.
OPEN_GOAL_RATE = 100
OPEN_OTHER_SECONDS = 5.0

USAGE = """\
presets (any option below overrides the preset's value):
  smoke   about a minute: levels 1,20; open loop 20/s; short streams; 200 idle sockets;
          no LiteLLM
  quick   about four minutes: levels 1,50,100; open loop 50,100/s; 1,000 idle sockets;
          no LiteLLM
  full    at most fifteen minutes: levels 1,50,100,500; open loop 1,50,100,500/s; two
          workers at 500; LiteLLM; 1k and 10k idle sockets
"""


@dataclass(frozen=True, slots=True)
class Options:
    preset: str
    phases: tuple[str, ...]
    streams: tuple[int, ...]
    paths: tuple[str, ...]
    tokens: int
    interval_ms: int
    rounds: int
    min_streams: int
    round_timeout: float
    max_seconds: float
    open_rate: tuple[int, ...]
    open_seconds: float
    burst_words: int
    burst_rounds: int
    idle_sockets: tuple[int, ...]
    idle_hold: float
    idle_ping: float
    ingest_answers: int
    ingest_tokens: int
    redis_seconds: float
    connect_concurrency: int
    litellm_venv: Path
    profile: bool
    results: Path
    docs: Path | None
    source: Path | None  # another checkout whose gateway package is run (None: this one)

    @property
    def upstream_model(self) -> str:
        return f"fake-n{self.tokens}-i{self.interval_ms}-stamp"

    @property
    def stream_seconds(self) -> float:
        return self.tokens * self.interval_ms / 1000

    def rounds_at(self, streams: int) -> int:
        """Rounds at a closed-loop level: `rounds`, or more where a level has too few streams
        for its percentiles (one stream at a time gives one time to first token a round)."""
        return max(self.rounds, -(-self.min_streams // streams))

    def open_seconds_at(self, rate: int) -> float:
        return arrival_seconds(rate, self.open_seconds, self.min_streams)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("litellm_venv", "results", "docs", "source"):
            out[key] = None if out[key] is None else str(out[key])
        out["upstream_model"] = self.upstream_model
        return out


PRESETS: Mapping[str, Mapping[str, Any]] = {
    "smoke": {
        "phases": SINGLE_GATEWAY_PHASES,
        "streams": (1, 20),
        "paths": ("direct", "ws", "sse", "openai"),
        "tokens": 20,
        "interval_ms": 20,
        "rounds": 2,
        "min_streams": 2,
        "round_timeout": 20.0,
        "max_seconds": 150.0,
        "open_rate": (20,),
        "open_seconds": 2.0,
        "burst_words": 2000,
        "burst_rounds": 3,
        "idle_sockets": (200,),
        "idle_hold": 3.0,
        "idle_ping": 1.0,
        "ingest_answers": 10,
        "ingest_tokens": 200,
        "redis_seconds": 2.0,
    },
    "quick": {
        "phases": SINGLE_GATEWAY_PHASES,
        "streams": (1, 50, 100),
        "paths": ("direct", "ws", "sse", "openai", "responses"),
        "tokens": 50,
        "interval_ms": 20,
        "rounds": 3,
        "min_streams": 6,
        "round_timeout": 30.0,
        "max_seconds": 300.0,
        "open_rate": (50, 100),
        "open_seconds": 5.0,
        "burst_words": 5000,
        "burst_rounds": 5,
        "idle_sockets": (1000,),
        "idle_hold": 10.0,
        "idle_ping": 5.0,
        "ingest_answers": 20,
        "ingest_tokens": 500,
        "redis_seconds": 3.0,
    },
    "full": {
        "phases": PHASES,
        "streams": (1, 50, 100, 500),
        "paths": PATHS,
        "tokens": 50,
        "interval_ms": 20,
        # Three rounds, not five, and no 5,000 idle sockets: the time the two workers, the
        # open loop and the in-process phases need within the fifteen minutes.
        "rounds": 3,
        "min_streams": 10,
        "round_timeout": 30.0,
        "max_seconds": 900.0,
        "open_rate": (1, 50, 100, 500),
        "open_seconds": 10.0,
        "burst_words": 20_000,
        "burst_rounds": 5,
        "idle_sockets": (1000, 10_000),
        "idle_hold": 45.0,
        "idle_ping": 20.0,
        "ingest_answers": 20,
        "ingest_tokens": 500,
        "redis_seconds": 5.0,
    },
}
COMMON: Mapping[str, Any] = {
    "connect_concurrency": 100,
    "litellm_venv": ROOT / "bench/.venv-litellm",
    "profile": False,
    "results": ROOT / "bench/results/latest.json",
    "docs": ROOT / "docs/performance.md",
    "source": None,
}


def parse_options(argv: Sequence[str]) -> Options:
    args = _parser().parse_args(argv)
    values = {**COMMON, **PRESETS[args.preset], "preset": args.preset}
    given = {f.name: getattr(args, f.name) for f in fields(Options) if hasattr(args, f.name)}
    values.update({k: v for k, v in given.items() if v is not None and k != "preset"})
    if args.no_docs:
        values["docs"] = None
    opts = Options(**values)
    if args.litellm is not None:
        others = tuple(p for p in opts.paths if p != "litellm")
        opts = replace(opts, paths=others + (("litellm",) if args.litellm else ()))
    if "direct" not in opts.paths:
        opts = replace(opts, paths=("direct", *opts.paths))  # every ratio needs the baseline
    return opts


def arrival_seconds(rate: int, open_seconds: float, min_streams: int) -> float:
    """How long streams keep starting at an open-loop rate: `open_seconds` at the goal's rate,
    at most OPEN_OTHER_SECONDS at the others, and at a low rate long enough for `min_streams`
    streams (one a second gives one time to first token a second)."""
    seconds = open_seconds if rate == OPEN_GOAL_RATE else min(open_seconds, OPEN_OTHER_SECONDS)
    return max(seconds, min_streams / rate)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ws_load",
        description="Measure the gateway against a direct baseline; see docs/performance.md.",
        epilog=USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--preset", choices=tuple(PRESETS), default="quick")
    add("--phases", type=_names(PHASES), help=f"some of {','.join(PHASES)}")
    add("--streams", type=_ints(1, MAX_STREAMS), help="closed-loop levels, e.g. 1,50,100,500")
    add("--paths", type=_names(PATHS), help=f"some of {','.join(PATHS)}")
    add("--litellm", action=argparse.BooleanOptionalAction, help="add or leave out LiteLLM")
    add("--tokens", type=_bounded(1, 10_000), help="tokens per stream")
    add("--interval-ms", type=_bounded(0, 1000), help="upstream pacing between tokens")
    add("--rounds", type=_bounded(1, 100), help="closed-loop rounds per level and path")
    add("--min-streams", type=_bounded(1, 1000), help="more rounds where a level has fewer")
    add("--round-timeout", type=_seconds, help="seconds one round may take")
    add("--max-seconds", type=_seconds, help="the whole run's budget; later work is skipped")
    add("--open-rate", type=_ints(1, 1000), help="open loop: new streams/s, e.g. 1,50,100,500")
    add(
        "--open-seconds",
        type=_seconds,
        help=f"open loop: seconds of arrivals at {OPEN_GOAL_RATE}/s",
    )
    add("--burst-words", type=_bounded(10, 100_000), help="ceilings: frames per burst")
    add("--burst-rounds", type=_bounded(1, 100), help="ceilings: bursts per side")
    add("--idle-sockets", type=_ints(1, MAX_IDLE_SOCKETS), help="e.g. 1000,5000,10000")
    add("--idle-hold", type=_seconds, help="seconds idle sockets are held open")
    add("--idle-ping", type=_seconds, help="the idle gateway's WS_PING_INTERVAL")
    add("--ingest-answers", type=_bounded(1, 1000), help="ingest: answers per side and turn")
    add("--ingest-tokens", type=_bounded(1, 10_000), help="ingest: tokens per answer")
    add("--redis-seconds", type=_seconds, help="redis: how long 50 generations write logs")
    add("--connect-concurrency", type=_bounded(1, 5000), help="handshakes in flight at once")
    add("--litellm-venv", type=Path, help="where LiteLLM is installed (made when missing)")
    add("--profile", action="store_true", default=None, help="py-spy the gateway at the top level")
    add("--results", type=Path, help="raw JSON (default bench/results/latest.json)")
    add("--docs", type=Path, help="the Markdown report (default docs/performance.md)")
    add("--no-docs", action="store_true", help="leave the Markdown report alone")
    add("--source", type=Path, help="run the gateway of another checkout (a before and after)")
    return parser


def _names(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(",") if part.strip())
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}")
        return tuple(n for n in allowed if n in names)  # a stable order

    return parse


def _ints(low: int, high: int) -> Callable[[str], tuple[int, ...]]:
    parse = _bounded(low, high)

    def parse_all(text: str) -> tuple[int, ...]:
        values = tuple(parse(part) for part in text.split(",") if part.strip())
        if not values:
            raise argparse.ArgumentTypeError("give at least one number")
        return values

    return parse_all


def _seconds(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{value} is not within 1..3600 seconds")
    return value


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not within {low}..{high}")
        return value

    return parse


def alternated(sources: Sequence[str], rounds: int) -> Iterator[tuple[int, str, Path]]:
    """(round, name, checkout) for `--source NAME=DIR` values (this checkout, named "this",
    where none is given), the order reversed every other round so that no checkout always
    runs first."""
    checkouts = [source.split("=", 1) for source in sources] or [["this", str(ROOT)]]
    for turn in range(rounds):
        for name, folder in checkouts if turn % 2 == 0 else checkouts[::-1]:
            yield turn, name, Path(folder).resolve()
