"""What the upstream policy needs of a provider's API: its dialect, a small interface.

A dialect knows one API's wire format and none of the gateway's policy. It builds a request
from provider-neutral messages, parameters and tool specs; sends it and hands over the
response's body as it arrives; reads that body, streamed or whole, into provider-neutral text,
tool calls, a finish reason and usage; and names its own exceptions in neutral terms. The
policy (`gateway.llm.upstream`) owns the rest: the per-model gate, retries before the first
token, the first-token and per-line deadlines, metrics and the usage estimate.

A second API is a dialect module and a stream-reader module in a package beside
`gateway/llm/openai/`, and a line in `gateway/llm/providers.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.events import FinishReason, Message, ToolCall, Usage
from gateway.llm.base import ModelParams
from gateway.llm.failures import Fault

# A request's JSON body: built once per answer, sent again by every retry.
Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole answer, from a model that does not stream."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    finish: FinishReason = "stop"
    usage: Usage | None = None  # None: the API did not say, and the policy estimates it


class Received(Protocol):
    """A response's body as it arrives, a network read at a time."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def timed_by_lines(self) -> None:
        """The caller bounds the wait for each complete line from now on, so a timer the
        transport moves on every read may stop."""
        ...


class StreamReader(Protocol):
    """One attempt's streamed body, fed a network read at a time.

    Bodies are line-framed (server-sent events): the policy moves the read deadline on at
    complete lines, so a reader needs no clock. The three attributes are read once per
    network read, so they are plain attributes, never computed."""

    answering: bool  # text or a tool call has started: the first-token deadline is over
    tokens: int  # pieces of text so far; after the first, a failure is mid-answer
    error: str | None  # the API reported an error in the stream; nothing after it is read
    usage: Usage | None  # as the API reported it; None: the policy estimates it

    def feed(self, piece: bytes) -> str:
        """The text in the complete lines so far. StreamFormatError for what is not the
        API's format; Overrun past a bound (`UpstreamBounds`)."""
        ...

    def close(self) -> str:
        """The text in a last line left without its newline, once the body has ended."""
        ...

    def complete(self) -> bool:
        """Whether the stream said it was done (a finish reason or an end marker); a body
        that ends before that was cut short."""
        ...

    def finish(self) -> FinishReason: ...

    def tool_calls(self) -> list[ToolCall]:
        """The calls the model made, whole, once the stream is done."""
        ...


class Dialect(Protocol):
    """One API's wire format, bound to one configured model (its upstream name, its client)."""

    def request(self, messages: Sequence[Message], params: ModelParams, *, stream: bool) -> Body:
        """The request's body; `stream` asks for a streamed answer (with usage, if the API
        can send it)."""
        ...

    def send(
        self, request: Body, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[Received]:
        """One attempt: the response's body as it arrives, a network read at a time, bounded
        by the transport (`gateway.llm.transport`); the response is closed on leaving. An
        error status raises, as any failure does, the API's own exception (see `fault`).
        `headers` go with the request (the trace context, when tracing is on)."""
        ...

    def reader(self) -> StreamReader:
        """A reader for one attempt's streamed body."""
        ...

    def reply(self, body: bytes) -> Reply:
        """A whole answer's body read: StreamFormatError when it is not the API's format at
        all, UpstreamError when it is but holds no answer."""
        ...

    def fault(self, exc: Exception) -> Fault | None:
        """What one of this dialect's own exceptions (its SDK's, its HTTP client's) means;
        None for any other."""
        ...
