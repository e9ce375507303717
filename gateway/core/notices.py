"""What a follower is: where a generation's events go (`Sink`), and the notices a subscriber
may show beside them: news about a generation that is not one of its events (no seq, not
stored), each with its code and the words clients see."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from gateway.events import Event, GenerationRef


@runtime_checkable
class NoticeSink(Protocol):
    """A subscriber that can also show notices: news about a generation that is not one of
    its events (it has no seq and is not stored)."""

    def notice(self, ref: GenerationRef, code: str, message: str) -> None: ...


PERSISTENCE_DEGRADED = "persistence_degraded"
PERSISTENCE_LOST = "persistence_lost"
STORE_UNREACHABLE = "store_unreachable"


NOTICES = {
    PERSISTENCE_DEGRADED: "The gateway cannot save this answer right now. It keeps streaming "
    "and saves the answer once its store is back; until then it cannot be resumed.",
    PERSISTENCE_LOST: "This answer could not be saved: it will be missing from the "
    "conversation and cannot be resumed.",
    STORE_UNREACHABLE: "The gateway cannot reach its store to follow this answer; the stream "
    "goes on from where it stopped once the store is back.",
}


class Sink(Protocol):
    """Where a follower delivers: a subscriber that can also say when it has room."""

    def __call__(self, ref: GenerationRef, event: Event) -> None: ...

    async def room(self) -> bool:
        """Wait for room for more events; False when the consumer has gone."""
        ...
