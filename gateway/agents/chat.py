"""The built-in `chat` agent: system prompt, history, sources and the message to the model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from gateway.agents.base import AgentInput
from gateway.events import AgentEvent, Message
from gateway.protocol import Source


class ChatAgent:
    def __init__(self, name: str, system_prompt: str | None = None) -> None:
        self.name = name
        self._system_prompt = system_prompt

    async def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        messages = build_messages(self._system_prompt, given)
        async for event in given.model.stream(messages, given.params):
            yield event


def build_messages(system_prompt: str | None, given: AgentInput) -> list[Message]:
    system = "\n\n".join(p for p in (system_prompt, _sources_text(given.sources)) if p)
    head = [Message("system", system)] if system else []
    return [*head, *given.history, Message("user", given.message)]


def _sources_text(sources: Sequence[Source]) -> str:
    if not sources:
        return ""
    lines = ["Answer using these sources, citing them as [n]:"]
    for n, source in enumerate(sources, start=1):
        title = f" {source.title}" if source.title else ""
        url = f" <{source.url}>" if source.url else ""
        lines.append(f"[{n}]{title}{url}: {source.content}")
    return "\n".join(lines)
