"""Any OpenAI-compatible chat API, through the official SDK's `AsyncOpenAI`.

The SDK builds, authenticates and sends the request; the streamed body is read with our own
line parser (see `gateway.llm.sse`). Foreign errors become `UpstreamError` here and nowhere else.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx2
import openai

from gateway.config import ModelConfig
from gateway.errors import (
    ContextTooLong,
    RequestError,
    UpstreamCredentials,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from gateway.events import Finish, FinishReason, Message, TextDelta, ToolCall, Usage
from gateway.llm.base import ModelParams
from gateway.llm.echo import estimate_tokens
from gateway.llm.sse import StreamFormatError, ToolCallAssembler, parse_line, usage_of

log = logging.getLogger("gateway.upstream")


class OpenAIModel:
    def __init__(self, config: ModelConfig, client: openai.AsyncOpenAI) -> None:
        self.name = config.name
        self.streaming = config.streaming
        self._upstream = config.upstream_name
        self._client = client

    def stream(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        if self.streaming:
            return self._stream(messages, params)
        return self._whole(messages, params)

    async def _stream(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        finish: str | None = None
        usage: Usage | None = None
        completion = 0
        calls = ToolCallAssembler()
        with self._translated_errors():
            async with self._client.chat.completions.with_streaming_response.create(
                **self._body(messages, params),
                stream=True,
                stream_options={"include_usage": True},
            ) as response:
                ended = False
                async for line in response.iter_lines():
                    if ended:
                        continue  # read to the end, so the connection goes back to the pool
                    piece = parse_line(line)
                    if piece.end:
                        ended = True
                        continue
                    if piece.error is not None:
                        log.warning("model %s sent an error event: %s", self.name, piece.error)
                        raise UpstreamError("The model reported an error while answering.")
                    if piece.text:
                        completion += 1
                        yield TextDelta(piece.text)
                    calls.add(piece.tool_calls)
                    finish = piece.finish_reason or finish
                    usage = piece.usage or usage
                if not ended and finish is None:
                    raise UpstreamError("The model's stream ended before the answer did.")
        for call in calls.calls():
            yield ToolCall(call["id"], call["name"], call["arguments"])
        yield Finish(_finish_reason(finish), usage or _estimate(messages, completion))

    async def _whole(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        with self._translated_errors():
            response = await self._client.chat.completions.with_raw_response.create(
                **self._body(messages, params)
            )
            body = response.http_response.json()
        try:
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
            calls = [
                ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                for c in choice["message"].get("tool_calls") or ()
            ]
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamError("The model sent an answer the gateway cannot read.") from None
        if text:
            yield TextDelta(text)
        for call in calls:
            yield call
        usage = usage_of(body.get("usage")) or _estimate(messages, estimate_tokens(text))
        yield Finish(_finish_reason(choice.get("finish_reason")), usage)

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
            body["tools"] = list(params.tools)
            if params.tool_choice is not None:
                body["tool_choice"] = params.tool_choice
        return body

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except RequestError:
            raise
        except openai.APIStatusError as exc:
            log.warning("model %s answered HTTP %s", self.name, exc.status_code)
            raise _status_error(self.name, exc) from None
        except openai.APITimeoutError:
            raise UpstreamUnavailable(f"Model '{self.name}' did not answer in time.") from None
        except openai.APIConnectionError:
            raise UpstreamUnavailable(f"Model '{self.name}' could not be reached.") from None
        except httpx2.TimeoutException:  # silence while reading the stream
            raise UpstreamUnavailable(f"Model '{self.name}' stopped sending in time.") from None
        except (httpx2.HTTPError, openai.OpenAIError) as exc:
            log.warning("model %s stream failed: %s", self.name, type(exc).__name__)
            raise UpstreamError(f"Model '{self.name}' stopped answering mid-stream.") from None
        except (StreamFormatError, ValueError):
            raise UpstreamError(f"Model '{self.name}' sent a malformed stream.") from None

    async def aclose(self) -> None:
        return None  # the client is shared per upstream and closed by the registry


class _NotRetryable(UpstreamError):
    retryable = False


_CONTEXT_HINTS = ("context_length_exceeded", "context length", "maximum context", "too many tokens")


def _status_error(name: str, exc: openai.APIStatusError) -> RequestError:
    """One code per kind of upstream failure, so clients know whether to retry, wait, shorten
    the conversation, or call an operator. Messages never repeat the upstream's own text."""
    status = exc.status_code
    if status in (401, 403):
        return UpstreamCredentials(f"The upstream refused the gateway's credentials for '{name}'.")
    if status == 429:
        return UpstreamRateLimited(f"Model '{name}' is rate limited upstream; try again shortly.")
    said = f"{getattr(exc, 'code', '') or ''} {exc.message}".lower()
    if status in (400, 413, 422) and any(hint in said for hint in _CONTEXT_HINTS):
        return ContextTooLong(
            f"The conversation is too long for model '{name}'; start a new one or shorten it."
        )
    if 400 <= status < 500:
        return _NotRetryable(f"Model '{name}' rejected the request (HTTP {status}).")
    return UpstreamUnavailable(f"Model '{name}' is unavailable (HTTP {status}).")


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


def _finish_reason(raw: str | None) -> FinishReason:
    if raw in ("length", "tool_calls"):
        return raw  # type: ignore[return-value]
    return "stop"


def _estimate(messages: Sequence[Message], completion: int) -> Usage:
    prompt = sum(estimate_tokens(m.content) for m in messages)
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def make_client(
    config: ModelConfig, connect_timeout: float, read_timeout: float, max_retries: int
) -> openai.AsyncOpenAI:
    # Pass the key explicitly: the SDK would otherwise read the environment itself.
    api_key = config.api_key.reveal() if config.api_key else "no-key"
    timeout = httpx2.Timeout(read_timeout, connect=connect_timeout)
    return openai.AsyncOpenAI(
        api_key=api_key, base_url=config.base_url, timeout=timeout, max_retries=max_retries
    )
