"""The lean reader of OpenAI stream lines."""

from __future__ import annotations

import pytest

from gateway.events import ToolCall, Usage
from gateway.llm.bounds import Overrun, StreamFormatError, UpstreamBounds
from gateway.llm.openai.stream import (
    END,
    NOTHING,
    ChatStream,
    StreamPiece,
    ToolCallAssembler,
    parse_line,
)

CHUNK = (
    '{"id":"c","object":"chat.completion.chunk",'
    '"choices":[{"index":0,"delta":%s,"finish_reason":%s}]}'
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", NOTHING),
        (": keep-alive", NOTHING),
        ("event: message", NOTHING),
        ("data: [DONE]", END),
        ("data:[DONE]", END),
        ("data: " + CHUNK % ('{"content":"Hi"}', "null"), StreamPiece(text="Hi")),
        ("data: " + CHUNK % ('{"role":"assistant","content":""}', "null"), StreamPiece()),
        ("data: " + CHUNK % ('{"content":null}', "null"), StreamPiece()),
        ("data: " + CHUNK % ("{}", '"length"'), StreamPiece(finish_reason="length")),
        (
            'data: {"choices":[],'
            '"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}',
            StreamPiece(usage=Usage(3, 4)),
        ),
        ('data: {"choices":[],"usage":null}', StreamPiece()),
        (
            'data: {"error":{"message":"overloaded","type":"server_error"}}',
            StreamPiece(error="overloaded"),
        ),
        ('data: {"error":"x"}', StreamPiece(error="the model reported an error")),
    ],
)
def test_lines(line: str, expected: StreamPiece) -> None:
    assert parse_line(line.encode()) == expected


@pytest.mark.parametrize("line", ["data: {not json", "data: [1]", 'data: "text"'])
def test_malformed_lines_raise(line: str) -> None:
    with pytest.raises(StreamFormatError):
        parse_line(line.encode())


def test_tool_call_fragments_are_assembled_by_index() -> None:
    assembler = ToolCallAssembler()
    lines = [
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function",'
        '"function":{"name":"calc","arguments":""}}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function",'
        '"function":{"name":"now","arguments":"{}"}}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"x\\":"}}]}}]}',
        '{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"1}"}}]}}]}',
    ]
    for line in lines:
        assembler.add(parse_line(f"data: {line}".encode()).tool_calls)
    assert assembler.calls() == [
        ToolCall(call_id="call_1", name="calc", arguments='{"x":1}'),
        ToolCall(call_id="call_2", name="now", arguments="{}"),
    ]


def event(content: str) -> bytes:
    return b"data: " + (CHUNK % (f'{{"content":"{content}"}}', "null")).encode() + b"\n\n"


def test_tokens_that_arrive_together_come_out_as_one_text() -> None:
    stream = ChatStream()
    assert stream.feed(event("a") + event("b") + event("c")) == "abc"
    assert stream.tokens == 3 and stream.answering


def test_a_line_split_across_pieces_is_read_once_whole() -> None:
    stream = ChatStream()
    body = event("Hello") + event(" world") + b"data: [DONE]\n\n"
    texts = [stream.feed(body[i : i + 7]) for i in range(0, len(body), 7)]
    assert "".join(texts) == "Hello world"
    assert [t for t in texts if t] == ["Hello", " world"]
    assert stream.ended and stream.close() == ""


def test_crlf_line_endings_and_a_last_line_without_newline() -> None:
    stream = ChatStream()
    assert stream.feed(event("a").replace(b"\n", b"\r\n") + b"data: [DO") == "a"
    assert not stream.ended
    assert stream.feed(b"NE]") == ""
    assert stream.close() == "" and stream.ended


def test_what_follows_done_or_an_error_is_ignored() -> None:
    stream = ChatStream()
    assert stream.feed(event("a") + b"data: [DONE]\n\n" + event("late")) == "a"
    errored = ChatStream()
    body = event("a") + b'data: {"error":{"message":"overloaded"}}\n\n' + event("b")
    assert errored.feed(body) == "a"
    assert errored.error == "overloaded" and errored.tokens == 1


def test_finish_reason_usage_and_tool_calls_are_kept() -> None:
    stream = ChatStream()
    call = (
        b'data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c1",'
        b'"function":{"name":"calc","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}\n\n'
    )
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n'
    assert stream.feed(call + usage) == ""
    assert stream.answering and stream.tokens == 0
    assert stream.finish_reason == "tool_calls" and stream.usage == Usage(3, 4)
    assert stream.calls.calls() == [ToolCall(call_id="c1", name="calc", arguments="{}")]


def test_blank_lines_and_comments_carry_nothing() -> None:
    stream = ChatStream()
    noise = b"\n" * 1000 + b": keep-alive\n" + b"event: ping\n"
    for _ in range(100):
        assert stream.feed(noise) == ""
    assert stream.feed(event("a")) == "a" and not stream.ended


def test_a_line_without_end_is_an_overrun_however_it_is_split() -> None:
    stream = ChatStream(UpstreamBounds(max_line_bytes=1000))
    assert stream.feed(event("a") + b"data: {") == "a"
    for _ in range(1000 - len(b"data: {")):
        assert stream.feed(b"x") == ""
    with pytest.raises(Overrun, match="a line longer than 1000 bytes"):
        stream.feed(b"x")


def test_a_line_dripped_a_byte_at_a_time_is_gathered_whole() -> None:
    stream = ChatStream()
    line = event("dripped")
    assert "".join(stream.feed(line[i : i + 1]) for i in range(len(line))) == "dripped"


def test_tool_calls_past_their_bounds_are_overruns() -> None:
    calls = ToolCallAssembler(UpstreamBounds(max_tool_calls=2))
    calls.add(({"index": 0, "id": "a"}, {"index": 1, "id": "b"}, {"index": 0}))
    with pytest.raises(Overrun, match="more than 2 tool calls in one turn"):
        calls.add(({"index": 2, "id": "c"},))
    arguments = ToolCallAssembler(UpstreamBounds(max_tool_argument_bytes=10))
    arguments.add(({"index": 0, "function": {"arguments": "é" * 5}},))  # 10 bytes
    with pytest.raises(Overrun, match="more than 10 bytes of tool call arguments"):
        arguments.add(({"index": 0, "function": {"arguments": "x"}},))


@pytest.mark.parametrize(
    "fragment",
    ["text", {"index": "0"}, {"index": True}, {"function": "f"}, {"function": {"name": 3}}],
)
def test_malformed_tool_call_fragments_are_format_errors(fragment: object) -> None:
    with pytest.raises(StreamFormatError):
        ToolCallAssembler().add((fragment,))


@pytest.mark.parametrize(
    "line",
    [
        'data: {"choices":{"delta":{}}}',
        'data: {"choices":["x"]}',
        'data: {"choices":[{"delta":"x"}]}',
        'data: {"choices":[{"delta":{"content":["a"]}}]}',
        'data: {"choices":[{"delta":{},"finish_reason":1}]}',
        'data: {"choices":[{"delta":{"tool_calls":"x"}}]}',
        "data: " + "[" * 100_000 + "]" * 100_000,
    ],
)
def test_chunks_of_the_wrong_shape_are_format_errors(line: str) -> None:
    with pytest.raises(StreamFormatError):
        parse_line(line.encode())


def test_a_tool_call_without_a_name_is_a_format_error_and_one_without_an_id_gets_one() -> None:
    nameless = ToolCallAssembler()
    nameless.add(({"index": 0, "id": "c", "function": {"arguments": "{}"}},))
    with pytest.raises(StreamFormatError, match="no function name"):
        nameless.calls()
    idless = ToolCallAssembler()
    idless.add(({"index": 3, "function": {"name": "calc", "arguments": "{}"}},))
    assert idless.calls() == [ToolCall("call_3", "calc", "{}")]
