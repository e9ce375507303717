"""Upstream ingest, in the bench's own process: what the gateway's upstream client costs per
chunk against the least any client must do with the same SSE answer.

The gateway's side is its real model object, built by `ModelRegistry` from a configuration,
as the gateway builds it, and read through `.stream()`. The raw side is an asyncio protocol
that sends the same POST and, per piece received, splits lines and `json.loads` each `data:`
line. Both read the same answers from the fake upstream (no pacing), by turns, one answer at
a time; the CPU is `time.process_time()` of this process, so the upstream's own is not in it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import cast

from bench.paths import openai_body
from bench.phases import INGEST_TURNS, Context, fits, say
from bench.procs import HOST, BenchError
from bench.results import Ingest
from bench.services import MODEL, UPSTREAM_KEY, UPSTREAM_KEY_ENV, gateway_config
from bench.wire import http_post
from gateway.config import ConfigError, Settings
from gateway.errors import UpstreamError
from gateway.events import Message, TextDelta
from gateway.llm.base import ChatModel, ModelParams
from gateway.llm.registry import ModelRegistry
from gateway.obs.metrics import GatewayMetrics

PROMPT = "Count for me, please."
ANSWER_TIMEOUT_S = 30.0

Read = Callable[[], Awaitable[str]]


def expected_answer(tokens: int) -> str:
    """The fake upstream's reply of `tokens` tokens (`fake-n<tokens>`)."""
    return "".join(f" t{i}" for i in range(tokens))


async def ingest_phase(ctx: Context) -> None:
    if not fits(ctx, "ingest"):
        return
    opts = ctx.opts
    say(
        f"ingest: {opts.ingest_answers} answers of {opts.ingest_tokens} tokens a side, by turns ..."
    )
    upstream_model = f"fake-n{opts.ingest_tokens}-i0"
    try:
        registry = _registry(ctx, upstream_model)
    except ConfigError as exc:
        raise BenchError(f"the gateway refused the configuration: {exc}") from None
    model = registry.get(MODEL)
    if model is None:
        raise BenchError(f"the gateway's configuration has no model {MODEL!r}")
    body = openai_body(upstream_model, PROMPT)
    request = http_post(ctx.upstream.port, "/v1/chat/completions", body, UPSTREAM_KEY)
    sides: tuple[Read, Read] = (lambda: _through_gateway(model), lambda: _raw(ctx, request))
    taken: tuple[list[float], list[float]] = ([], [])
    try:
        for turn in range(INGEST_TURNS + 1):
            for side, read in enumerate(sides):
                used = await _cpu_of(read, opts.ingest_answers, opts.ingest_tokens)
                if turn:  # the first turn pays first-use costs (imports, the pool)
                    taken[side].append(used)
    except (UpstreamError, OSError, TimeoutError) as exc:
        raise BenchError(f"an answer failed: {exc!r}") from None
    finally:
        await registry.aclose()
    answers, tokens = opts.ingest_answers, opts.ingest_tokens
    ctx.run.ingest = Ingest(answers, tokens, tuple(taken[0]), tuple(taken[1]))


def _registry(ctx: Context, upstream_model: str) -> ModelRegistry:
    """The gateway's models from the same kind of configuration the bench gives the gateway,
    with the unpaced upstream model."""
    config = ctx.work.tmp / "ingest.toml"
    config.write_text(gateway_config(upstream_model, ctx.upstream.port))
    env = {"GATEWAY_CONFIG": str(config), UPSTREAM_KEY_ENV: UPSTREAM_KEY}
    return ModelRegistry(Settings.from_env(env), GatewayMetrics())


async def _cpu_of(read: Read, answers: int, tokens: int) -> float:
    """CPU seconds of this process to read `answers` answers one after another; each answer
    is checked after the clock stops."""
    started = time.process_time()
    texts = [await asyncio.wait_for(read(), ANSWER_TIMEOUT_S) for _ in range(answers)]
    used = time.process_time() - started
    wrong = [text for text in texts if text != expected_answer(tokens)]
    if wrong:
        raise BenchError(f"{len(wrong)} answers differ from the upstream's: {wrong[0][:80]!r}")
    return used


async def _through_gateway(model: ChatModel) -> str:
    parts: list[str] = []
    messages = [Message("user", PROMPT)]
    async for event in model.stream(messages, ModelParams()):
        if isinstance(event, TextDelta):
            parts.append(event.text)
    return "".join(parts)


async def _raw(ctx: Context, request: bytes) -> str:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: RawSse(request, answer), HOST, ctx.upstream.port
    )
    try:
        return await answer
    finally:
        transport.close()


class RawSse(asyncio.Protocol):
    """The baseline: split lines, `json.loads` every `data:` line, keep the delta's text.
    The response is chunked, one SSE event per chunk (uvicorn), so the chunk-size lines fall
    between events and, like blank lines and the head, are not `data:` lines."""

    def __init__(self, request: bytes, answer: asyncio.Future[str]) -> None:
        self._request = request
        self._answer = answer
        self._tail = b""
        self._parts: list[str] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self._request)

    def data_received(self, data: bytes) -> None:
        lines = (self._tail + data).split(b"\n")
        self._tail = lines.pop()
        for line in lines:
            if not line.startswith(b"data: "):
                continue
            if line.startswith(b"data: [DONE]"):
                if not self._answer.done():
                    self._answer.set_result("".join(self._parts))
                continue
            choices = json.loads(line[6:]).get("choices")
            if choices and (text := (choices[0].get("delta") or {}).get("content")):
                self._parts.append(text)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._answer.done():
            self._answer.set_exception(BenchError("the upstream closed before [DONE]"))
