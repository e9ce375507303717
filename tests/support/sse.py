"""The tests' one reader of server-sent events: lines in, events out, for a whole body or a
stream read as it arrives."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SseEvent:
    data: str
    id: int | None = None
    event: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseParser:
    """Collects one event's fields; a blank line ends it. Comments (`:` lines, heartbeats)
    and events without data are passed over."""

    fields: dict[str, str] = field(default_factory=dict)

    def feed(self, line: str) -> SseEvent | None:
        if line:
            if not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                self.fields[name] = (
                    f"{self.fields[name]}\n{value}" if name in self.fields else value
                )
            return None
        fields, self.fields = self.fields, {}
        if "data" not in fields:
            return None
        seq = fields.get("id")
        return SseEvent(fields["data"], int(seq) if seq else None, fields.get("event"))


def events_of(body: str) -> list[SseEvent]:
    """Every event of a whole body."""
    parser = SseParser()
    found = (parser.feed(line) for line in [*body.splitlines(), ""])
    return [event for event in found if event is not None]


def sse_events(body: str) -> list[tuple[int, dict[str, Any]]]:
    """A native stream's events with their ids; every event of one has an id."""
    found = []
    for event in events_of(body):
        assert event.id is not None, event
        found.append((event.id, event.json()))
    return found


async def stream_events(lines: AsyncIterable[str]) -> AsyncIterator[SseEvent]:
    """Events as they arrive (from `response.aiter_lines()`), the last one even if the
    stream ends without its blank line."""
    parser = SseParser()
    async for line in lines:
        if (event := parser.feed(line)) is not None:
            yield event
    if (event := parser.feed("")) is not None:
        yield event


async def stream_json(lines: AsyncIterable[str]) -> AsyncIterator[Any]:
    """The JSON data of each event as it arrives."""
    async for event in stream_events(lines):
        yield event.json()
