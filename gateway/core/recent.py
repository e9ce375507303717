"""The events a running generation keeps in memory for resumes on its own process.

Pure. It keeps the last `size` events (GENERATION_MEMORY_EVENTS), and also every event its log
in Redis does not hold yet: an event is dropped only once it is both old and written, so a
resume from further back finds each older event in the log, with no gap. Unwritten events are
the log writer's own buffer (the same objects, capped per process), so keeping them here costs
a reference each. Once the writer has given a generation's log up, nothing will be written:
old events are dropped regardless, and a resume from before them cannot be served.
"""

from __future__ import annotations

from collections import deque

from gateway.events import Event


class RecentEvents:
    def __init__(self, size: int) -> None:
        self._size = max(1, size)  # the last event is always kept: it says whether it ended
        self._events: deque[Event] = deque()
        self._written = 0  # the highest seq the log is known to hold
        self._unwritten_forever = False
        self.last_seq = 0

    def append(self, event: Event) -> None:
        """Keep a newly published event; seqs come in order, one apart."""
        self._events.append(event)
        self.last_seq = event.seq
        self._drop_old()

    def written(self, seq: int) -> None:
        """The log now holds every event up to `seq`."""
        self._written = max(self._written, seq)
        self._drop_old()

    def never_written(self) -> None:
        """The log will get no more events: keep only the last `size`."""
        self._unwritten_forever = True
        self._drop_old()

    @property
    def last(self) -> Event | None:
        return self._events[-1] if self._events else None

    @property
    def first_seq(self) -> int:
        """The oldest seq still kept (last_seq + 1 when none is)."""
        return self._events[0].seq if self._events else self.last_seq + 1

    def at(self, seq: int) -> Event | None:
        """The event numbered `seq`, if it is still kept."""
        index = seq - self.first_seq
        return self._events[index] if 0 <= index < len(self._events) else None

    def __len__(self) -> int:
        return len(self._events)

    def _drop_old(self) -> None:
        events = self._events
        while len(events) > self._size and (
            self._unwritten_forever or events[0].seq <= self._written
        ):
            events.popleft()
