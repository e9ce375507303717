"""Stored event records: version 2 written and read back, version 1 (the former encoder's
output, the event's WebSocket payload) still read, anything else refused clearly."""

from __future__ import annotations

import json

import pytest

from gateway.events import Chunk, Done, Event, Failed, Start, ToolCalled, ToolReturned, Usage
from gateway.store import records

EVENTS: list[Event] = [
    Start(1, "m", "a"),
    Chunk(2, "x"),
    Chunk(3, 'ünï \n "quoted"'),
    Chunk(4, "x", {"k": [1]}),
    ToolCalled(5, "c", "n", "{}"),
    ToolReturned(6, "c", "n", "r", True),
    Done(7, "length", Usage(1, 2), {"m": 1}),
    Failed(8, "interrupted", "stopped", True),
    Failed(9, "rate_limited", "slow down", True, 2.5),
]


@pytest.mark.parametrize("event", EVENTS)
def test_a_stored_event_reads_back_the_same(event: Event) -> None:
    stored = records.encode(event)
    assert json.loads(stored)["v"] == records.VERSION
    assert records.decode(stored) == event


# As version 1 wrote them: the event's WebSocket payload, byte for byte as `dumps` made it.
VERSION_1: list[tuple[str, Event]] = [
    ('{"type":"start","seq":1,"content":"","done":false,"model":"m","agent":"a"}', EVENTS[0]),
    ('{"type":"chunk","seq":2,"content":"x","done":false,"metadata":{}}', EVENTS[1]),
    ('{"type":"chunk","seq":4,"content":"x","done":false,"metadata":{"k":[1]}}', EVENTS[3]),
    (
        '{"type":"tool_call","seq":5,"content":"","done":false,"call_id":"c","name":"n",'
        '"arguments":"{}"}',
        EVENTS[4],
    ),
    (
        '{"type":"tool_result","seq":6,"content":"","done":false,"call_id":"c","name":"n",'
        '"result":"r","is_error":true}',
        EVENTS[5],
    ),
    (
        '{"type":"done","seq":7,"content":"","done":true,"finish_reason":"length",'
        '"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3},"metadata":{"m":1}}',
        EVENTS[6],
    ),
    (
        '{"type":"error","seq":8,"content":"","done":true,"code":"interrupted",'
        '"message":"stopped","retryable":true,"error":"stopped"}',
        EVENTS[7],
    ),
]


@pytest.mark.parametrize(("stored", "event"), VERSION_1)
def test_a_record_of_the_previous_version_is_read(stored: str, event: Event) -> None:
    """During a rolling deploy an instance reads logs that the previous version wrote."""
    assert records.decode(stored) == event


@pytest.mark.parametrize(
    "stored",
    ["[1]", "not json", '{"v":3,"k":"chunk","s":1,"text":"x"}', '{"v":2,"k":"nope","s":1}', "{}"],
)
def test_a_record_this_version_cannot_read_is_a_clear_error(stored: str) -> None:
    with pytest.raises(records.RecordError, match="a stored event"):
        records.decode(stored)
