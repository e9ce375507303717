"""The model interface that agents call."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.events import (
    Finish,
    Message,
    OutputFormat,
    TextDelta,
    ToolCall,
    ToolChoice,
    ToolSpec,
)


@dataclass(frozen=True, slots=True)
class ModelParams:
    temperature: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    tools: tuple[ToolSpec, ...] = ()  # each dialect renders them in its API's shape
    tool_choice: ToolChoice | None = None
    # None: the API's default (free text). A JSON kind only reaches a model whose table says
    # `structured_outputs = true`; the core refuses it for any other.
    output_format: OutputFormat | None = None


class ChatModel(Protocol):
    name: str
    streaming: bool

    def stream(
        self, messages: Sequence[Message], params: ModelParams
    ) -> AsyncIterator[TextDelta | ToolCall | Finish]:
        """Yield the reply as TextDelta events, any ToolCall the model makes (whole, once its
        arguments are complete), then exactly one Finish.

        A non-streaming model yields its whole reply as one TextDelta. Failures raise
        UpstreamError; cancelling the consuming task closes the upstream request.
        """
        ...

    async def aclose(self) -> None:
        """Release connections; called once at shutdown."""
        ...
