"""The upstream read path alone: paced streams read through the gateway's real model object (as
`ModelRegistry` builds it from a configuration), CPU per upstream token.

The fake upstream of the tests runs in its own process; each measurement runs in a fresh child
process that imports the gateway of one checkout (`--source`, default this one), so checkouts
are compared on one harness, alternated round by round. A child reads `--streams` streams of
`--tokens` tokens `--interval-ms` apart at once, `--turns` times after an unrecorded first
one, and reports its `time.process_time()` per token over each turn: the SDK building and
sending each request, the HTTP client, the body's bounds and the SSE reader, and nothing of
Redis, the generation or a client connection.

    .venv/bin/python -m bench.upstream_read --source before=/tmp/cg-before --source after=.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Only the standard library at the top: a child imports this module, then puts the checkout
# it measures first on the path, and only then imports the gateway (in `measure`).
ROOT = Path(__file__).resolve().parent.parent
CHILD_TIMEOUT_S = 300
CHILD = (
    "import json, sys; import bench.upstream_read as bench; sys.path.insert(0, sys.argv[1]); "
    "print(json.dumps(bench.measure(sys.argv[2], sys.argv[3], *map(int, sys.argv[4:]))))"
)


def measure(config: str, model_name: str, streams: int, tokens: int, turns: int) -> list[float]:
    """In a child, the gateway first on its path being the one measured: µs per token, per
    turn. `config` is a gateway configuration file naming the paced upstream model."""
    from gateway.config import Settings
    from gateway.events import Message, TextDelta
    from gateway.llm.base import ChatModel, ModelParams
    from gateway.llm.registry import ModelRegistry
    from gateway.obs.metrics import GatewayMetrics

    async def answer(model: ChatModel) -> str:
        parts = []
        async for event in model.stream([Message("user", "Count.")], ModelParams()):
            if isinstance(event, TextDelta):
                parts.append(event.text)
        return "".join(parts)

    async def run() -> list[float]:
        env = {**os.environ, "GATEWAY_CONFIG": config}  # the parent's `base_env`, and the key
        registry = ModelRegistry(Settings.from_env(env), GatewayMetrics())
        model = registry.get(model_name)
        if model is None:
            raise RuntimeError(f"the configuration has no model {model_name!r}")
        expected = "".join(f" t{i}" for i in range(tokens))  # the fake upstream's `fake-n`
        per_token = []
        try:
            for turn in range(turns + 1):  # the first pays first-use costs (imports, the pool)
                started = time.process_time()
                texts = await asyncio.gather(*(answer(model) for _ in range(streams)))
                used = time.process_time() - started
                if any(text != expected for text in texts):
                    raise RuntimeError("an answer differs from the upstream's")
                if turn:
                    per_token.append(used / (streams * tokens) * 1e6)
        finally:
            await registry.aclose()
        return per_token

    try:
        import uvloop  # the gateway's loop under uvicorn, where it is installed
    except ImportError:
        return asyncio.run(run())
    return uvloop.run(run())


def _child(source: Path, config: Path, options: argparse.Namespace) -> list[float]:
    from bench.procs import base_env
    from bench.services import MODEL, UPSTREAM_KEY, UPSTREAM_KEY_ENV

    args = [str(source), str(config), MODEL, str(options.streams), str(options.tokens)]
    done = subprocess.run(
        [sys.executable, "-c", CHILD, *args, str(options.turns)],
        cwd=ROOT,
        env=base_env(PYTHONPATH=str(ROOT), **{UPSTREAM_KEY_ENV: UPSTREAM_KEY}),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the measurement of {source} failed:\n{done.stderr[-2000:]}")
    return [float(v) for v in json.loads(done.stdout.strip().splitlines()[-1])]


def main(argv: list[str] | None = None) -> None:
    from bench.options import alternated
    from bench.procs import Workspace
    from bench.services import gateway_config, start_upstream

    parser = argparse.ArgumentParser(
        prog="python -m bench.upstream_read",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source", action="append", default=[], help="NAME=DIR, repeatable")
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--interval-ms", type=int, default=20)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4, help="alternations of the sources")
    options = parser.parse_args(argv)
    taken: dict[str, list[float]] = {}
    temporary = tempfile.TemporaryDirectory(prefix="bench-upstream-read-")
    with temporary as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        upstream = start_upstream(Workspace(folder, folder, stack))
        config = folder / "gateway.toml"
        model = f"fake-n{options.tokens}-i{options.interval_ms}"
        config.write_text(gateway_config(model, upstream.port))
        for turn, name, source in alternated(options.source, options.rounds):
            per_token = _child(source, config, options)
            taken.setdefault(name, []).append(statistics.median(per_token))
            shown = ", ".join(f"{v:.1f}" for v in per_token)
            print(f"round {turn + 1}, {name}: {shown} µs per token", flush=True)
    for name, values in taken.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name}: median {statistics.median(values):.1f} µs per token (rounds {runs})")


if __name__ == "__main__":
    main()
