"""What a running generation keeps in memory: the last events, and every unwritten one."""

from __future__ import annotations

from gateway.core.recent import RecentEvents
from gateway.events import Chunk, Done, Start, Usage


def filled(size: int, count: int) -> RecentEvents:
    recent = RecentEvents(size)
    recent.append(Start(1, "echo", "chat"))
    for seq in range(2, count + 1):
        recent.append(Chunk(seq, f"w{seq}"))
    return recent


def test_unwritten_events_are_kept_beyond_the_size() -> None:
    recent = filled(3, 10)
    assert len(recent) == 10 and recent.first_seq == 1 and recent.last_seq == 10


def test_written_events_beyond_the_size_are_dropped_oldest_first() -> None:
    recent = filled(3, 10)
    recent.written(5)
    assert (recent.first_seq, len(recent)) == (6, 5)  # 6-10 are not in the log yet
    recent.written(10)
    assert (recent.first_seq, len(recent)) == (8, 3)
    recent.written(4)  # an older report changes nothing
    assert recent.first_seq == 8


def test_events_are_found_by_seq_while_kept() -> None:
    recent = filled(3, 10)
    recent.written(10)
    assert recent.at(7) is None and recent.at(11) is None
    assert recent.at(8) == Chunk(8, "w8") and recent.at(10) == Chunk(10, "w10")


def test_the_last_event_is_always_kept() -> None:
    recent = filled(0, 4)
    recent.written(4)
    assert len(recent) == 1 and recent.at(4) == Chunk(4, "w4")
    recent.append(Done(5, "stop", Usage()))
    assert recent.last == Done(5, "stop", Usage()) and recent.at(4) is None  # 4 was written


def test_a_log_given_up_no_longer_holds_events_back() -> None:
    recent = filled(2, 6)
    recent.never_written()
    assert (recent.first_seq, len(recent)) == (5, 2)
    recent.append(Chunk(7, "w7"))
    assert recent.first_seq == 6


def test_nothing_kept_yet() -> None:
    recent = RecentEvents(4)
    assert (recent.last, recent.first_seq, recent.last_seq, recent.at(1)) == (None, 1, 0, None)
