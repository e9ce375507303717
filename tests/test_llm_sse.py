"""The lean reader of OpenAI stream lines."""

from __future__ import annotations

import pytest

from gateway.events import Usage
from gateway.llm.sse import (
    END,
    NOTHING,
    StreamFormatError,
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
    assert parse_line(line) == expected


@pytest.mark.parametrize("line", ["data: {not json", "data: [1]", 'data: "text"'])
def test_malformed_lines_raise(line: str) -> None:
    with pytest.raises(StreamFormatError):
        parse_line(line)


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
        assembler.add(parse_line(f"data: {line}").tool_calls)
    assert assembler.calls() == [
        {"id": "call_1", "name": "calc", "arguments": '{"x":1}'},
        {"id": "call_2", "name": "now", "arguments": "{}"},
    ]
