"""The agent interface: the gateway's extension point for what produces a reply."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.config import AgentConfig
from gateway.events import AgentEvent, Message
from gateway.llm.base import ChatModel, ModelParams
from gateway.protocol.frames import Source
from gateway.tools.runner import ToolRunner


@dataclass(frozen=True, slots=True)
class AgentInput:
    message: str
    history: Sequence[Message]
    model: ChatModel
    params: ModelParams
    sources: Sequence[Source] = ()
    project_id: str | None = None
    continuation: bool = False  # no new message: answer the history as it stands


class Agent(Protocol):
    name: str

    def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        """Yield TextDelta, ToolCall and ToolResult events and end with exactly one Finish.

        Raise a RequestError (usually UpstreamError) to fail the generation; what was
        yielded before stays with the user as an incomplete answer.
        """
        ...


class AgentClass(Protocol):
    """An agent kind (`gateway.agents.registry.AGENT_KINDS`): its class, which builds an
    agent from the agent's configuration. `runner` runs the gateway's tools."""

    def from_config(self, config: AgentConfig, runner: ToolRunner) -> Agent:
        """ConfigError when the configuration cannot make an agent of the kind."""
        ...


def build_messages(system_prompt: str | None, given: AgentInput) -> list[Message]:
    """System prompt (if any), the history, then the user's message (unless continuing)."""
    head = [Message("system", system_prompt)] if system_prompt else []
    tail = [] if given.continuation else [Message("user", given.message)]
    return [*head, *given.history, *tail]
