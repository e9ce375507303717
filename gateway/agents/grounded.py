"""The `grounded` agent: answers from the request's sources, with numbered citations.

Sources go into the system prompt in order until the token budget is spent; one that only
partly fits is cut (and said to be), the rest are left out (and listed). The final event's
metadata names the sources the answer cited, read as the answer streams: the model (or, with
`echo`, the user) writes the answer, so reading it costs time in proportion to its length and
memory bounded by a constant, whatever it holds.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.agents.base import AgentInput, build_messages
from gateway.config import AgentConfig
from gateway.events import AgentEvent, Finish, TextDelta
from gateway.protocol.frames import MAX_SOURCES, Source
from gateway.tools.runner import ToolRunner

CHARS_PER_TOKEN = 4  # a coarse, tokenizer-free estimate; the budget is a guard, not a meter
MIN_PARTIAL_TOKENS = 50
# A marker names 1 to MAX_SOURCES numbers of at most 4 digits: nothing longer can name a
# source, and a bounded marker can be neither long to match nor long to carry between chunks.
# The parse is unambiguous (each repetition starts with a comma), so a failed match backtracks
# at most once over what it read.
MAX_DIGITS = 4
MAX_SPACES = 3
_NUMBER = rf"\d{{1,{MAX_DIGITS}}}"
_MORE = rf"\s{{0,{MAX_SPACES}}},\s{{0,{MAX_SPACES}}}{_NUMBER}"
_CITATION = re.compile(rf"\[({_NUMBER}(?:{_MORE}){{0,{MAX_SOURCES - 1}}})\]")
MAX_MARKER_CHARS = 2 + MAX_DIGITS + (MAX_SOURCES - 1) * (2 * MAX_SPACES + 1 + MAX_DIGITS)
_MARKER_BODY = re.compile(r"[\d\s,]*")  # what may follow an unclosed "[" of a marker
SLICE_CHARS = 16 * 1024  # read between two turns of the event loop: about a millisecond
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


class CitationScanner:
    """The source numbers an answer cites, in the order it first cites them, read a piece at
    a time as the answer streams.

    Only numbers from 1 to `sources` count (the others name no source), so at most `sources`
    are kept, and once each has been cited the rest of the answer is not read. However the
    answer is cut into pieces, each character goes through a regular expression at most four
    times (a marker cut between pieces is read again once it closes) and only an unclosed
    marker, at most MAX_MARKER_CHARS, is kept between pieces. `read` counts the characters
    matched, for the tests that hold it to this.
    """

    def __init__(self, sources: int) -> None:
        self._sources = sources
        self._cited: dict[int, None] = {}  # insertion-ordered, with O(1) membership
        self._open = ""  # a marker begun and not yet closed at the end of the last piece
        self.read = 0

    @property
    def complete(self) -> bool:
        """Every source is cited: nothing more needs reading."""
        return len(self._cited) >= self._sources

    def feed(self, text: str) -> None:
        if self.complete:
            return
        if "]" in text:
            self._close(self._open + text)
        elif "[" in text:  # a new "[" ends any marker begun before it
            self._open = self._unclosed(text, text.rfind("["))
        elif self._open:
            grown = len(self._open) + len(text) <= MAX_MARKER_CHARS and self._body(text, 0)
            self._open = self._open + text if grown else ""

    def numbers(self) -> list[int]:
        return list(self._cited)

    def _close(self, text: str) -> None:
        self.read += len(text)
        # An answer may repeat one marker a million times: each distinct one is parsed once.
        for marker in dict.fromkeys(_CITATION.findall(text)):
            for part in marker.split(","):
                number = int(part)  # at most MAX_DIGITS digits, spaces around them allowed
                if 1 <= number <= self._sources:
                    self._cited.setdefault(number)
        opening = text.rfind("[")  # markers end with "]": one after the last "]" is unclosed
        self._open = self._unclosed(text, opening) if opening > text.rfind("]") else ""

    def _unclosed(self, text: str, opening: int) -> str:
        """`text` from `opening` (a "[") on, if that may still become a marker; else ""."""
        if len(text) - opening > MAX_MARKER_CHARS or not self._body(text, opening + 1):
            return ""
        return text[opening:]

    def _body(self, text: str, start: int) -> bool:
        self.read += len(text) - start
        return _MARKER_BODY.fullmatch(text, start) is not None


def cited_numbers(text: str, sources: int) -> list[int]:
    """Source numbers from 1 to `sources` in the order the text first cites them."""
    scanner = CitationScanner(sources)
    scanner.feed(text)
    return scanner.numbers()


def citation_metadata(
    cited: Sequence[int], selection: Selection, project_id: str | None
) -> dict[str, Any]:
    """`cited`: numbers of included sources, in the order the answer first cites them."""
    by_number = {item.number: item for item in selection.included}
    citations = [_reference(by_number[n].source, n) for n in cited if n in by_number]
    return {
        "citations": citations,
        "sources": {
            "included": len(selection.included),
            "trimmed": [_reference(i.source, i.number) for i in selection.included if i.trimmed],
            "omitted": [_reference(s, None) for s in selection.omitted],
        },
        "project_id": project_id,
    }


async def _read(citations: CitationScanner, text: str) -> None:
    """Feed one piece of the answer to `citations`; a long one (an upstream may send a
    megabyte at once) a slice at a time, letting other streams run in between."""
    for start in range(0, len(text), SLICE_CHARS):
        if start:
            await asyncio.sleep(0)
        if citations.complete:
            return
        citations.feed(text[start : start + SLICE_CHARS])


def _reference(source: Source, number: int | None) -> dict[str, Any]:
    return {"n": number, "id": source.id, "title": source.title, "url": source.url}


class GroundedAgent:
    def __init__(self, name: str, system_prompt: str | None, budget_tokens: int) -> None:
        self.name = name
        self._system_prompt = system_prompt
        self._budget = budget_tokens

    @classmethod
    def from_config(cls, config: AgentConfig, runner: ToolRunner) -> GroundedAgent:
        return cls(config.name, config.system_prompt, config.source_budget)

    async def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        selection = select_sources(given.sources, self._budget)
        messages = build_messages(grounded_prompt(self._system_prompt, selection), given)
        citations = CitationScanner(len(selection.included))
        async for event in given.model.stream(messages, given.params):
            if isinstance(event, TextDelta):
                await _read(citations, event.text)
            if isinstance(event, Finish):
                metadata = citation_metadata(citations.numbers(), selection, given.project_id)
                yield Finish(event.reason, event.usage, {**event.metadata, **metadata})
            else:
                yield event
