"""OpenAI's chat completions API, and any API that speaks it: the OpenAI dialect.

The official SDK's `AsyncOpenAI` builds, authenticates and sends each request over the
bounded transport (`gateway.llm.transport`); `post` with a raw streamed response skips the
SDK's typed-parameter transform (about 1 ms of CPU per request) and its per-chunk objects
(about 100 µs each), so the streamed body is read by our own reader (`stream.py`). The SDK's
own retries are off: the gateway's policy (`gateway.llm.upstream`) decides.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import aiohttp
import httpx2
import openai

from gateway.config import ModelConfig, Secret
from gateway.errors import UpstreamError
from gateway.events import Message, OutputFormat, ToolChoice, ToolSpec, UseTool
from gateway.llm.base import ChatModel, ModelParams
from gateway.llm.bounds import StreamFormatError, UpstreamBounds
from gateway.llm.dialect import Body, Received, Reply
from gateway.llm.failures import Fault
from gateway.llm.openai.stream import ChatStream, ToolCallAssembler, finish_reason, usage_of
from gateway.llm.providers import ProviderContext
from gateway.llm.transport import ACCEPT_ENCODING, KEEPALIVE_SECONDS, BoundedBody, http_client


class OpenAIProvider:
    """The `openai` provider: one SDK client (and its connection pool) per base URL and key,
    shared by the models that use them."""

    def __init__(self, context: ProviderContext) -> None:
        self._context = context
        self._clients: dict[tuple[str | None, Secret | None], openai.AsyncOpenAI] = {}

    def model(self, config: ModelConfig) -> ChatModel:
        dialect = OpenAIDialect(config, self._client(config), self._context.bounds)
        return self._context.upstream(config, dialect)

    def _client(self, config: ModelConfig) -> openai.AsyncOpenAI:
        key = (config.base_url, config.api_key)
        if key not in self._clients:
            settings = self._context.settings
            self._clients[key] = make_client(
                config,
                settings.upstream_connect_timeout,
                settings.upstream_read_timeout,
                self._context.bounds,
            )
        return self._clients[key]

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.close()


class OpenAIDialect:
    def __init__(
        self, config: ModelConfig, client: openai.AsyncOpenAI, bounds: UpstreamBounds
    ) -> None:
        self._upstream = config.upstream_name
        self._client = client
        self._bounds = bounds

    def request(self, messages: Sequence[Message], params: ModelParams, *, stream: bool) -> Body:
        body: Body = {"model": self._upstream, "messages": [wire_message(m) for m in messages]}
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
        response_format = wire_response_format(params.output_format)
        if response_format is not None:
            body["response_format"] = response_format
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return body

    @asynccontextmanager
    async def send(self, request: Body, headers: Mapping[str, str]) -> AsyncIterator[Received]:
        # The trace context is injected here: no HTTP-client instrumentation sees this call.
        options: openai.RequestOptions = {"headers": dict(headers)} if headers else {}
        response = await self._client.post(
            "/chat/completions",
            body=request,
            cast_to=httpx2.Response,
            stream=True,
            options=options,
        )
        try:
            # Straight from its stream, which the transport's hook made a `BoundedBody`:
            # httpx's `aiter_bytes` adds two generators, a decoder and a chunker for every
            # network read.
            yield cast(BoundedBody, response.stream)
        finally:
            await response.aclose()

    def reader(self) -> ChatStream:
        return ChatStream(self._bounds)

    def reply(self, body: bytes) -> Reply:
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            raise StreamFormatError("the answer is not JSON") from None
        try:
            choice = answer["choices"][0]
            text = choice["message"].get("content") or ""
            calls = ToolCallAssembler(self._bounds)
            calls.add(
                tuple(
                    {**c, "index": i}
                    for i, c in enumerate(choice["message"].get("tool_calls") or ())
                )
            )
            if not isinstance(text, str):
                raise TypeError
        except (KeyError, IndexError, TypeError, AttributeError, StreamFormatError):
            raise UpstreamError("The model sent an answer the gateway cannot read.") from None
        finish = finish_reason(choice.get("finish_reason"))
        return Reply(text, tuple(calls.calls()), finish, usage_of(answer.get("usage")))

    def fault(self, exc: Exception) -> Fault | None:
        return fault(exc)


def fault(exc: Exception) -> Fault | None:
    """The SDK's, httpx's and aiohttp's exceptions in the policy's terms. The order matters:
    the aiohttp backend reports a refused connection as httpx's ConnectTimeout, which the SDK
    turns into APITimeoutError, so the cause is looked at before the timeout."""
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return UNREADABLE  # a head or body aiohttp could not parse (malformed, or past its bounds)
    if isinstance(exc, openai.APIStatusError):
        said = f"{getattr(exc, 'code', '') or ''} {exc.message}"
        return Fault("status", exc.status_code, exc.response.headers, said)
    if _caused_by(exc, aiohttp.ClientConnectorError):
        return UNREACHABLE
    if isinstance(exc, openai.APITimeoutError):
        return NO_ANSWER
    if isinstance(exc, openai.APIConnectionError):
        return UNREACHABLE
    if isinstance(exc, httpx2.TimeoutException):
        return SILENT
    if isinstance(exc, httpx2.HTTPError | openai.OpenAIError):
        return BROKEN
    return None


UNREADABLE = Fault("unreadable")
UNREACHABLE = Fault("unreachable")
NO_ANSWER = Fault("no_answer")
SILENT = Fault("silent")
BROKEN = Fault("broken")


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is among the exceptions that led to `exc` (its explicit causes)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain is short; a cycle is not followed for ever
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__
    return False


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


def wire_response_format(output: OutputFormat | None) -> dict[str, Any] | None:
    """The output format as OpenAI's `response_format`. Free text is the API's default and is
    left out, so an upstream that does not know the parameter is never sent it."""
    if output is None or output.kind == "text":
        return None
    if output.kind == "json_object":
        return {"type": "json_object"}
    schema: dict[str, Any] = {"name": output.name or "response"}
    if output.description is not None:
        schema["description"] = output.description
    if output.schema is not None:
        schema["schema"] = dict(output.schema)
    if output.strict is not None:
        schema["strict"] = output.strict
    return {"type": "json_schema", "json_schema": schema}


def make_client(
    config: ModelConfig,
    connect_timeout: float,
    read_timeout: float,
    bounds: UpstreamBounds,
    *,
    keepalive: float = KEEPALIVE_SECONDS,
) -> openai.AsyncOpenAI:
    """The SDK's client for one upstream (base URL and key), over the bounded transport."""
    # Pass the key explicitly: the SDK would otherwise read the environment itself.
    api_key = config.api_key.reveal() if config.api_key else "no-key"
    # max_retries=0: retries are the gateway's (before the first token only, see retry.py).
    return openai.AsyncOpenAI(
        api_key=api_key,
        base_url=config.base_url,
        timeout=httpx2.Timeout(read_timeout, connect=connect_timeout),
        max_retries=0,
        default_headers={"Accept-Encoding": ACCEPT_ENCODING},
        http_client=http_client(connect_timeout, read_timeout, bounds, keepalive=keepalive),
    )
