"""The `grounded` agent: answers from the request's sources, with numbered citations.

Sources go into the system prompt in order until the token budget is spent; one that only
partly fits is cut (and said to be), the rest are left out (and listed). The final event's
metadata names the sources the answer cited.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.agents.base import AgentInput, build_messages
from gateway.events import AgentEvent, Finish, TextDelta
from gateway.protocol import Source

CHARS_PER_TOKEN = 4  # a coarse, tokenizer-free estimate; the budget is a guard, not a meter
MIN_PARTIAL_TOKENS = 50
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
INSTRUCTIONS = (
    "Answer using only the numbered sources below. Cite every claim with the source "
    "number in square brackets, like [1] or [2, 3]. If the sources do not contain the "
    "answer, say so."
)


@dataclass(frozen=True, slots=True)
class Included:
    number: int
    source: Source
    text: str
    trimmed: bool


@dataclass(frozen=True, slots=True)
class Selection:
    included: tuple[Included, ...]
    omitted: tuple[Source, ...]


def select_sources(sources: Sequence[Source], budget_tokens: int) -> Selection:
    """Sources in order while they fit the budget; cut the first that only partly fits."""
    left = budget_tokens * CHARS_PER_TOKEN
    included: list[Included] = []
    omitted: list[Source] = []
    for source in sources:
        too_little_left = left < MIN_PARTIAL_TOKENS * CHARS_PER_TOKEN
        if omitted or (too_little_left and len(source.content) > left):
            omitted.append(source)
            continue
        text, trimmed = source.content, len(source.content) > left
        if trimmed:
            text = text[:left].rstrip() + " …"
        included.append(Included(len(included) + 1, source, text, trimmed))
        left -= len(text)
        if trimmed:
            left = 0
    return Selection(tuple(included), tuple(omitted))


def grounded_prompt(system_prompt: str | None, selection: Selection) -> str:
    lines = [p for p in (system_prompt, INSTRUCTIONS) if p]
    if not selection.included:
        lines.append("No sources were given.")
    for item in selection.included:
        header = f"[{item.number}]"
        if item.source.title:
            header += f" {item.source.title}"
        if item.source.url:
            header += f" <{item.source.url}>"
        lines.append(f"{header}\n{item.text}")
    return "\n\n".join(lines)


def cited_numbers(text: str) -> list[int]:
    """Source numbers in the order the text first cites them."""
    seen: list[int] = []
    for match in _CITATION.finditer(text):
        for part in match.group(1).split(","):
            number = int(part)
            if number not in seen:
                seen.append(number)
    return seen


def citation_metadata(text: str, selection: Selection, project_id: str | None) -> dict[str, Any]:
    by_number = {item.number: item for item in selection.included}
    citations = [_reference(by_number[n].source, n) for n in cited_numbers(text) if n in by_number]
    return {
        "citations": citations,
        "sources": {
            "included": len(selection.included),
            "trimmed": [_reference(i.source, i.number) for i in selection.included if i.trimmed],
            "omitted": [_reference(s, None) for s in selection.omitted],
        },
        "project_id": project_id,
    }


def _reference(source: Source, number: int | None) -> dict[str, Any]:
    return {"n": number, "id": source.id, "title": source.title, "url": source.url}


class GroundedAgent:
    def __init__(self, name: str, system_prompt: str | None, budget_tokens: int) -> None:
        self.name = name
        self._system_prompt = system_prompt
        self._budget = budget_tokens

    async def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        selection = select_sources(given.sources, self._budget)
        messages = build_messages(grounded_prompt(self._system_prompt, selection), given)
        parts: list[str] = []
        async for event in given.model.stream(messages, given.params):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            if isinstance(event, Finish):
                metadata = citation_metadata("".join(parts), selection, given.project_id)
                yield Finish(event.reason, event.usage, {**event.metadata, **metadata})
            else:
                yield event
