"""Any OpenAI-compatible chat API, through the official SDK's `AsyncOpenAI`.

The SDK builds, authenticates and sends the request over its aiohttp backend, every body
bounded (see `gateway.llm.transport`); the streamed body is read with our own line parser (see
`gateway.llm.sse`). Failures are translated in `gateway.llm.failures`; the retry policy is ours
(`gateway.llm.retry`; the SDK's own retries are off), and so are the deadlines and the
per-model cap on requests in flight (`gateway.llm.gate`).

One asyncio timeout per attempt bounds the time from sending the request to the first text or
tool delta (UPSTREAM_FIRST_TOKEN_TIMEOUT); once the answer has started, the same timeout bounds
the time without a complete line (UPSTREAM_READ_TIMEOUT), so an upstream that drips a byte at
a time never resets it. aiohttp bounds connecting (UPSTREAM_CONNECT_TIMEOUT) and every silence
on the socket (UPSTREAM_READ_TIMEOUT).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx2
import openai

from gateway.config import ModelConfig
from gateway.errors import UpstreamError
from gateway.events import (
    Finish,
    FinishReason,
    Message,
    TextDelta,
    ToolCall,
    ToolChoice,
    ToolSpec,
    Usage,
    UseTool,
)
from gateway.llm.base import ModelParams
from gateway.llm.bounds import StreamFormatError, UpstreamBounds
from gateway.llm.echo import estimate_tokens
from gateway.llm.failures import StreamCutShort, classify
from gateway.llm.gate import ConcurrencyGate
from gateway.llm.retry import RetryPolicy
from gateway.llm.sse import DEFAULT_BOUNDS, ChatStream, ToolCallAssembler, usage_of
from gateway.metrics import GatewayMetrics

log = logging.getLogger("gateway.upstream")


class LineDeadline:
    """An attempt's timeout once the answer has started: at least `silence` seconds after the
    last complete line, and at most an eighth more. Moved on lazily, at most once per eighth
    of `silence`, so a stream pays a clock read per network read, not a timer."""

    def __init__(self, timeout: asyncio.Timeout, silence: float) -> None:
        self._timeout = timeout
        self._silence = silence
        self._slack = silence / 8
        self._moved = -math.inf
        self._clock = asyncio.get_running_loop().time

    def line_arrived(self) -> None:
        now = self._clock()
        if now - self._moved >= self._slack:
            self._moved = now
            self._timeout.reschedule(now + self._silence + self._slack)


class OpenAIModel:
    def __init__(
        self,
        config: ModelConfig,
        client: openai.AsyncOpenAI,
        gate: ConcurrencyGate,
        policy: RetryPolicy,
        first_token_timeout: float,
        metrics: GatewayMetrics,
        *,
        read_timeout: float = 60.0,
        bounds: UpstreamBounds = DEFAULT_BOUNDS,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.name = config.name
        self.streaming = config.streaming
        self._upstream = config.upstream_name
        self._client = client
        self._gate = gate
        self._policy = policy
        self._first_token_timeout = first_token_timeout
        self._read_timeout = read_timeout
        self._bounds = bounds
        self._jitter = jitter
        self._metrics = metrics
        self._latency = metrics.upstream_latency.labels(config.name)

    def stream(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        if self.streaming:
            return self._stream(messages, params)
        return self._whole(messages, params)

    async def _stream(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        request = self._body(messages, params)
        request.update(stream=True, stream_options={"include_usage": True})
        async with self._gate.slot():
            retries = 0
            while True:
                stream = ChatStream(self._bounds)
                try:
                    async with self._opened(request) as (timeout, pieces):
                        deadline = LineDeadline(timeout, self._read_timeout)
                        async for piece in pieces:
                            text = stream.feed(piece)
                            if stream.answering and b"\n" in piece:
                                deadline.line_arrived()  # the first token, or a line after it
                            if text:
                                yield TextDelta(text)
                            if stream.error is not None:
                                break
                        if text := stream.close():
                            yield TextDelta(text)
                        if stream.error is not None:
                            log.warning("model %s sent an error event: %s", self.name, stream.error)
                            raise UpstreamError("The model reported an error while answering.")
                        if not stream.ended and stream.finish_reason is None:
                            raise StreamCutShort
                    break
                except Exception as exc:  # classified; a cancel is no Exception
                    retries = await self._after_failure(exc, stream.tokens > 0, retries)
        for call in stream.calls.calls():
            yield ToolCall(call["id"], call["name"], call["arguments"])
        usage = stream.usage or _estimate(messages, stream.tokens)
        yield Finish(_finish_reason(stream.finish_reason), usage)

    @asynccontextmanager
    async def _opened(
        self, request: dict[str, Any]
    ) -> AsyncIterator[tuple[asyncio.Timeout, AsyncIterator[bytes]]]:
        """One attempt: the response's body as it arrives, under the first-token deadline
        (which the caller moves on once the answer has started). The SDK builds,
        authenticates and sends the request; `post` with a raw response skips its
        typed-parameter transform (about 1 ms of CPU per request) and its per-chunk objects."""
        async with asyncio.timeout(self._first_token_timeout) as deadline:
            sent = time.perf_counter()
            response = await self._client.post(
                "/chat/completions", body=request, cast_to=httpx2.Response, stream=True
            )
            self._latency.observe(time.perf_counter() - sent)
            try:
                yield deadline, _body(response)
            finally:
                await response.aclose()

    async def _whole(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        request = self._body(messages, params)
        async with self._gate.slot():
            body = await self._with_retries(lambda: self._fetch(request))
        try:
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
            assembler = ToolCallAssembler(self._bounds)
            assembler.add(
                tuple(
                    {**c, "index": i}
                    for i, c in enumerate(choice["message"].get("tool_calls") or ())
                )
            )
            if not isinstance(text, str):
                raise TypeError
        except (KeyError, IndexError, TypeError, AttributeError, StreamFormatError):
            raise UpstreamError("The model sent an answer the gateway cannot read.") from None
        if text:
            yield TextDelta(text)
        for call in assembler.calls():
            yield ToolCall(call["id"], call["name"], call["arguments"])
        usage = usage_of(body.get("usage")) or _estimate(messages, estimate_tokens(text))
        yield Finish(_finish_reason(choice.get("finish_reason")), usage)

    async def _fetch(self, request: dict[str, Any]) -> Any:
        """A whole answer is its own first token: the deadline covers all of it. Its body is
        read through the same bounds as a stream's."""
        async with self._opened(request) as (_, pieces):
            body = b"".join([piece async for piece in pieces])
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise StreamFormatError("the answer is not JSON") from None

    async def _with_retries(self, attempt: Callable[[], Awaitable[Any]]) -> Any:
        retries = 0
        while True:
            try:
                return await attempt()
            except Exception as exc:  # classified; a cancel is no Exception
                retries = await self._after_failure(exc, False, retries)

    async def _after_failure(self, exc: Exception, streamed: bool, retries: int) -> int:
        """Wait before the next attempt and return the retries made so far, or raise the
        client's error when giving up."""
        failure = classify(self.name, exc, streamed)
        self._metrics.upstream_errors.labels(failure.error.code).inc()
        delay = None
        if failure.retry:
            delay = self._policy.delay(retries, failure.error.retry_after, self._jitter)
        if delay is None:
            raise failure.error from None
        log.info(
            "model %s: %s; retry %d in %.2f s", self.name, failure.error.code, retries + 1, delay
        )
        await asyncio.sleep(delay)
        return retries + 1

    def _body(self, messages: Sequence[Message], params: ModelParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._upstream,
            "messages": [wire_message(m) for m in messages],
        }
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        if params.tools:
            body["tools"] = [wire_tool(spec) for spec in params.tools]
            if params.tool_choice is not None:
                body["tool_choice"] = wire_tool_choice(params.tool_choice)
        return body

    async def aclose(self) -> None:
        return None  # the client is shared per upstream and closed by the registry


def _body(response: httpx2.Response) -> AsyncIterator[bytes]:
    """The response's body as it arrives, straight from its (bounded) stream: httpx's
    `aiter_bytes` adds two generators, a decoder and a chunker for every network read."""
    return aiter(cast(AsyncIterable[bytes], response.stream))


def wire_message(message: Message) -> dict[str, Any]:
    """A message in OpenAI's chat format, tool calls and tool answers included."""
    wire: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        wire["content"] = message.content or None
        wire["tool_calls"] = [
            {
                "id": c.call_id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def wire_tool(spec: ToolSpec) -> dict[str, Any]:
    """A tool in OpenAI's function-tool shape; fields the spec leaves None are left out."""
    function: dict[str, Any] = {"name": spec.name}
    if spec.description is not None:
        function["description"] = spec.description
    if spec.parameters is not None:
        function["parameters"] = dict(spec.parameters)
    if spec.strict is not None:
        function["strict"] = spec.strict
    return {"type": "function", "function": function}


def wire_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if isinstance(choice, UseTool):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def _finish_reason(raw: str | None) -> FinishReason:
    if raw in ("length", "tool_calls"):
        return raw  # type: ignore[return-value]
    return "stop"


def _estimate(messages: Sequence[Message], completion: int) -> Usage:
    prompt = sum(estimate_tokens(m.content) for m in messages)
    return Usage(prompt_tokens=prompt, completion_tokens=completion)
