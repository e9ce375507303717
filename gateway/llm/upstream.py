"""A model behind an upstream API: the gateway's policy around one dialect, in no wire format.

The dialect (`gateway.llm.dialect`) builds, sends and reads; this module decides when to ask,
how long to wait and what a failure means:

- the per-model cap on requests in flight (`gateway.llm.gate`), held for the whole answer;
- retries before the first token only (`gateway.llm.retry`), so an answer is never repeated
  or spliced; failures are classified in `gateway.llm.failures`;
- one asyncio timeout per attempt bounds the time from sending the request to the first text
  or tool delta (UPSTREAM_FIRST_TOKEN_TIMEOUT); once the answer has started, the same timeout
  bounds the time without a complete line (UPSTREAM_READ_TIMEOUT, `LineDeadline`), so an
  upstream that drips a byte at a time never resets it;
- the latency and error metrics, and a usage estimate when the API sends none;
- a client span per call when tracing is on (`gateway.obs.tracing`), whose context the
  request carries; off, the call goes straight to the policy.

The hot path is one dialect reader call per network read: no layer sits between the
transport's body and the reader.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial

from gateway.config import ModelConfig
from gateway.errors import UpstreamError
from gateway.events import Finish, Message, TextDelta, ToolCall
from gateway.llm.base import ModelParams
from gateway.llm.dialect import Body, Dialect, Received, Reply
from gateway.llm.failures import StreamCutShort, classify
from gateway.llm.gate import ConcurrencyGate
from gateway.llm.retry import RetryPolicy
from gateway.llm.usage import estimate_tokens, estimate_usage
from gateway.obs import tracing
from gateway.obs.metrics import GatewayMetrics
from gateway.obs.tracing import NO_CALL, CallInfo, ModelCall

log = logging.getLogger("gateway.upstream")


class LineDeadline:
    """An attempt's timeout once the answer has started: at least `silence` seconds after the
    last complete line, and at most an eighth more. Moved on lazily, at most once per eighth
    of `silence`, so a stream pays a clock read per network read, not a timer. At the first
    line it takes over from the transport's timer on every read (`Received.timed_by_lines`)."""

    def __init__(self, timeout: asyncio.Timeout, silence: float, body: Received) -> None:
        self._timeout = timeout
        self._silence = silence
        self._slack = silence / 8
        self._moved = -math.inf
        self._clock = asyncio.get_running_loop().time
        self._body = body

    def line_arrived(self) -> None:
        now = self._clock()
        if now - self._moved >= self._slack:
            if self._moved == -math.inf:
                self._body.timed_by_lines()
            self._moved = now
            self._timeout.reschedule(now + self._silence + self._slack)


class UpstreamModel:
    def __init__(
        self,
        config: ModelConfig,
        dialect: Dialect,
        gate: ConcurrencyGate,
        policy: RetryPolicy,
        first_token_timeout: float,
        metrics: GatewayMetrics,
        *,
        read_timeout: float = 60.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.name = config.name
        self.streaming = config.streaming
        self._dialect = dialect
        self._gate = gate
        self._policy = policy
        self._first_token_timeout = first_token_timeout
        self._read_timeout = read_timeout
        self._jitter = jitter
        self._metrics = metrics
        self._latency = metrics.upstream_latency.labels(config.name)
        self._provider = config.provider
        self._upstream_name = config.upstream_name
        self._base_url = config.base_url
        self._tracing = tracing.active  # chosen at start-up, before the models are made

    def stream(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        answer = self._stream if self.streaming else self._whole
        if not self._tracing.enabled:
            return answer(messages, params, NO_CALL)
        info = CallInfo(
            self._provider,
            self.name,
            self._upstream_name,
            self._base_url,
            params.max_tokens,
            params.temperature,
        )
        return self._tracing.model_call(info, partial(answer, messages, params))

    async def _stream(
        self, messages: Sequence[Message], params: ModelParams, traced: ModelCall
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        request = self._dialect.request(messages, params, stream=True)
        async with self._gate.slot():
            retries = 0
            while True:
                stream = self._dialect.reader()
                try:
                    async with self._opened(request, traced) as (timeout, body):
                        deadline = LineDeadline(timeout, self._read_timeout, body)
                        async for piece in traced.body(aiter(body)):
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
                        if not stream.complete():
                            raise StreamCutShort
                        calls = stream.tool_calls()  # checked whole before any is yielded
                    break
                except Exception as exc:  # classified; a cancel is no Exception
                    retries = await self._after_failure(exc, stream.tokens > 0, retries)
        for call in calls:
            yield call
        usage = stream.usage or estimate_usage(messages, stream.tokens)
        yield Finish(stream.finish(), usage)

    @asynccontextmanager
    async def _opened(
        self, request: Body, traced: ModelCall
    ) -> AsyncIterator[tuple[asyncio.Timeout, Received]]:
        """One attempt: the response's body as it arrives, under the first-token deadline
        (which the caller moves on once the answer has started)."""
        async with asyncio.timeout(self._first_token_timeout) as deadline:
            sent = time.perf_counter()
            async with self._dialect.send(request, traced.headers) as body:
                self._latency.observe(time.perf_counter() - sent)
                yield deadline, body

    async def _whole(
        self, messages: Sequence[Message], params: ModelParams, traced: ModelCall
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        request = self._dialect.request(messages, params, stream=False)
        async with self._gate.slot():
            reply = await self._with_retries(lambda: self._fetch(request, traced))
        if reply.text:
            yield TextDelta(reply.text)
        for call in reply.tool_calls:
            yield call
        usage = reply.usage or estimate_usage(messages, estimate_tokens(reply.text))
        yield Finish(reply.finish, usage)

    async def _fetch(self, request: Body, traced: ModelCall) -> Reply:
        """A whole answer is its own first token: the deadline covers all of it. Its body is
        read through the same bounds as a stream's."""
        async with self._opened(request, traced) as (_, body):
            whole = b"".join([piece async for piece in traced.body(aiter(body))])
        return self._dialect.reply(whole)

    async def _with_retries(self, attempt: Callable[[], Awaitable[Reply]]) -> Reply:
        retries = 0
        while True:
            try:
                return await attempt()
            except Exception as exc:  # classified; a cancel is no Exception
                retries = await self._after_failure(exc, False, retries)

    async def _after_failure(self, exc: Exception, streamed: bool, retries: int) -> int:
        """Wait before the next attempt and return the retries made so far, or raise the
        client's error when giving up."""
        failure = classify(self.name, exc, streamed, self._dialect.fault(exc))
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

    async def aclose(self) -> None:
        return None  # the dialect's client is shared per upstream and closed by its provider
