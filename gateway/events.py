"""The event vocabulary, shared by agents, generations and every transport.

Agents yield `TextDelta`, `ToolCall`, `ToolResult` and one `Finish`. A generation numbers
what they yield and wraps it in `Start`, `Chunk`, `ToolCalled`, `ToolReturned`, `Done` or
`Failed`, each with a `seq` that increases by one per event and starts at 1 (so "after 0"
means "everything").

What a model is given is stated here too, in no provider's format: `Message`s, the tools
it may call as `ToolSpec`s with a `ToolChoice`, and the `OutputFormat` its answer must take.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]
Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Message:
    """One message as a model sees it. An assistant message may carry the tool calls it
    made; a `tool` message answers the call named by `tool_call_id`."""

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool a model may call, in no provider's format: each upstream dialect renders it as
    its API wants. The gateway's own tools and the ones a client passes both arrive as this.
    A field left None is left out of the request (an API may default it or refuse it)."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None  # a JSON Schema object for the arguments
    strict: bool | None = None  # arguments must match `parameters` exactly (where supported)


@dataclass(frozen=True, slots=True)
class UseTool:
    """A tool choice that makes the model call this one tool."""

    name: str


# Whether the model may call tools: as it likes, not at all, at least one, or a named one.
ToolChoice = Literal["auto", "none", "required"] | UseTool


OutputKind = Literal["text", "json_object", "json_schema"]


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """The shape a model's answer must take, in no provider's format: free text, any JSON
    object, or JSON matching `schema` (a JSON Schema object, named `name`; `strict` asks the
    model to follow it exactly, where the API supports that). Each dialect renders it as its
    API wants (OpenAI's chat completions: `response_format`). A model that is not declared
    `structured_outputs = true` is never given a JSON kind (see `needs_structured_outputs`)."""

    kind: OutputKind
    name: str | None = None
    schema: Mapping[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None

    @property
    def needs_structured_outputs(self) -> bool:
        return self.kind != "text"


# What agents yield.


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks for a tool; `arguments` is the JSON text the model wrote."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    name: str
    result: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Finish:
    reason: FinishReason
    usage: Usage
    metadata: dict[str, Any] = field(default_factory=dict)


AgentEvent = TextDelta | ToolCall | ToolResult | Finish


# What a generation publishes.


@dataclass(frozen=True, slots=True)
class Start:
    seq: int
    model: str
    agent: str


@dataclass(frozen=True, slots=True)
class Chunk:
    seq: int
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolCalled:
    seq: int
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolReturned:
    seq: int
    call_id: str
    name: str
    result: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class Done:
    seq: int
    finish_reason: FinishReason
    usage: Usage
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failed:
    seq: int
    code: str
    message: str
    retryable: bool
    retry_after: float | None = None  # seconds, when the failure says how long to wait


Event = Start | Chunk | ToolCalled | ToolReturned | Done | Failed


def is_final(event: Event) -> bool:
    return isinstance(event, Done | Failed)


@dataclass(frozen=True, slots=True)
class GenerationRef:
    """Which generation an event belongs to; rendered into every event on the wire."""

    generation_id: str
    conversation_id: str
