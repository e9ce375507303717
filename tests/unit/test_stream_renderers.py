"""The HTTP streams' renderers, pure: what each writes for an event, a notice, a keep-alive
and a stream whose outbox closed before its end, and how many events a piece holds."""

from __future__ import annotations

import json

from gateway.events import Chunk, Done, Event, Failed, GenerationRef, Start, Usage
from gateway.protocol.ai_sdk import PartsState, UiParts, event_parts
from gateway.protocol.openai_response import ChunkTranslator
from gateway.protocol.sse import DONE_LINE, KEEP_ALIVE, NativeEvents, event_count, sse_data

REF = GenerationRef("gen_abc", "conv_xyz")
DONE = Done(4, "stop", Usage(prompt_tokens=3, completion_tokens=2))
FAILED = Failed(3, "upstream_error", "The model failed.", retryable=True)
ANSWER: list[Event] = [Start(1, "fake", "chat"), Chunk(2, "a "), Chunk(3, "b"), DONE]


def blocks(text: str) -> list[str]:
    assert text.endswith("\n\n")
    return text.removesuffix("\n\n").split("\n\n")


def test_events_are_counted_by_their_blank_lines() -> None:
    assert event_count("") == 0
    assert event_count(sse_data([{"a": "x\n\ny"}, {"b": 1}])) == 2  # JSON escapes newlines
    assert event_count(sse_data([{}]) + DONE_LINE) == 2


def test_native_events_carry_their_seq_as_the_sse_id() -> None:
    renderer = NativeEvents("req-1")
    text = renderer.event(REF, Chunk(7, "hé"))
    assert text.startswith("id: 7\ndata: ") and event_count(text) == 1
    event = json.loads(text.splitlines()[1].removeprefix("data: "))
    assert event["id"] == "req-1" and event["seq"] == 7 and event["content"] == "hé"
    assert event["generation_id"] == "gen_abc"


def test_native_notices_and_ends() -> None:
    renderer = NativeEvents(None)
    notice = renderer.notice(REF, "store_unreachable", "The store is unreachable.")
    assert notice.startswith("event: notice\ndata: ") and event_count(notice) == 1
    assert json.loads(notice.splitlines()[1][6:])["code"] == "store_unreachable"
    assert renderer.closed() == ""  # the client resumes from its last id
    assert renderer.heartbeat == KEEP_ALIVE


def test_openai_chunks_end_with_done_only_when_the_answer_finished() -> None:
    renderer = ChunkTranslator(created=1)
    texts = [renderer.event(REF, event) for event in ANSWER]
    assert texts[-1].endswith(DONE_LINE)
    assert not any(text.endswith(DONE_LINE) for text in texts[:-1])
    failed = ChunkTranslator(created=1)
    failed.event(REF, ANSWER[0])
    ending = failed.event(REF, FAILED)
    assert not ending.endswith(DONE_LINE)
    assert json.loads(ending.removeprefix("data: "))["error"]["code"] == "upstream_error"


def test_openai_streams_show_no_notices_and_end_a_slow_client_with_an_error() -> None:
    renderer = ChunkTranslator(created=1)
    assert renderer.notice(REF, "persistence_degraded", "x") == ""
    [error] = blocks(renderer.closed())
    assert json.loads(error.removeprefix("data: "))["error"]["code"] == "slow_client"


def test_ui_parts_write_the_parts_of_each_event_then_done() -> None:
    renderer = UiParts()
    text = "".join(renderer.event(REF, event) for event in ANSWER)
    parts, state = [], PartsState()
    for event in ANSWER:
        more, state = event_parts(event, REF, state)
        parts += more
    assert text == sse_data(parts) + DONE_LINE
    failed = UiParts()
    assert failed.event(REF, FAILED).endswith(DONE_LINE)


def test_ui_parts_close_the_open_text_when_a_slow_client_is_dropped() -> None:
    renderer = UiParts()
    renderer.event(REF, ANSWER[0])
    renderer.event(REF, ANSWER[1])
    *parts, done = blocks(renderer.closed())
    assert done + "\n\n" == DONE_LINE
    types = [json.loads(part.removeprefix("data: "))["type"] for part in parts]
    assert types[:2] == ["text-end", "finish-step"] and types[-1] == "finish"
    assert renderer.notice(REF, "persistence_lost", "x") == ""
