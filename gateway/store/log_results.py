"""What a write's results say, pure: which of a pipeline's commands landed, how far each
generation's log now reaches, and what is left to write again. On a Redis Cluster a pipeline
goes to several nodes, and one that cannot be reached leaves its error among the results while
the others' commands land."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import NoScriptError

from gateway.events import Event
from gateway.store.client import StorePipeline
from gateway.store.errors import UNREACHABLE
from gateway.store.records import Status

log = logging.getLogger("gateway.store")

# A pipeline's command that answered one of these did not run (or, timed out, may not have):
# it is written again. NOSCRIPT: the server had forgotten the script (see `Lua`).
NOT_LANDED = (*UNREACHABLE, NoScriptError)

ExtraCommands = Callable[[StorePipeline], object]  # what it returns is not used
# stored: written now; pending: buffered, written when Redis is back; lost: never written.


@dataclass(slots=True)
class Ending:
    """A finish that could not be written yet: its last events, the final one last."""

    events: list[Event]
    status: Status
    extra: ExtraCommands | None
    # Those of the extra commands that may run twice (storing the answer): sent again when a
    # write of the end failed without saying what landed, and its final event had.
    again: ExtraCommands | None = None
    tried: bool = False  # a write of it failed, and may yet land (a timeout)
    # Its final event and status landed but its extra commands did not (on a Redis Cluster
    # they go to other nodes, one of which failed): only the extra commands are left to write.
    finished: bool = False


@dataclass(slots=True)
class Positions:
    """Where each generation's commands sit in a write's pipeline, to read their results.
    On a Redis Cluster a pipeline goes to several nodes, and one that cannot be reached leaves
    its error among the results while the others' commands land."""

    appends: dict[str, int] = field(default_factory=dict)
    finishes: dict[str, int] = field(default_factory=dict)
    extras: dict[str, range] = field(default_factory=dict)


def was_refused(generation_id: str, result: object) -> bool:
    """The append script answers 0 when the generation no longer runs; an error reply (other
    than one that means it did not run, and is written again) is logged and that batch
    dropped, not retried forever."""
    if isinstance(result, NOT_LANDED):
        return False
    if isinstance(result, Exception):
        log.error("generation %s: the store refused its log entries: %s", generation_id, result)
        return False
    return result == 0


def written_up_to(
    batch: dict[str, list[Event]],
    endings: dict[str, Ending],
    results: list[object],
    where: Positions,
) -> list[tuple[str, int]]:
    """How far the log of each generation whose append landed now reaches: (id, seq)."""
    reached: list[tuple[str, int]] = []
    for generation_id, index in where.appends.items():
        events = batch[generation_id]
        if results[index] == 1 and events:
            reached.append((generation_id, events[-1].seq))
    for generation_id, index in where.finishes.items():
        events = endings[generation_id].events
        if results[index] == 1 and events:
            reached.append((generation_id, events[-1].seq))
    return reached


def drop_landed(
    batch: dict[str, list[Event]],
    endings: dict[str, Ending],
    results: list[object],
    where: Positions,
) -> int:
    """After a write that landed in part (a Cluster node unreachable, or NOSCRIPT): forget
    what landed, so that only the rest is written again, and return how many events that
    was. An end whose final event landed but whose extra commands did not keeps only
    those (storing the answer is idempotent); one whose extra commands landed but not its
    final event keeps only that (correcting the token count is not)."""

    def landed(index: int) -> bool:
        return not isinstance(results[index], NOT_LANDED)

    dropped = 0
    for generation_id, index in where.appends.items():
        if landed(index):
            dropped += len(batch.pop(generation_id))
    for generation_id, ending in list(endings.items()):
        extras_landed = all(landed(index) for index in where.extras[generation_id])
        finish = where.finishes.get(generation_id)
        if finish is not None and not landed(finish):
            if extras_landed:
                ending.extra = None
            continue
        dropped += len(ending.events)
        ending.events, ending.finished = [], True
        if extras_landed:
            del endings[generation_id]
    return dropped
