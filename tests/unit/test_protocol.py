"""Frame parsing and event encoding: pure, table-driven."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.errors import BadRequest, ErrorCode, InternalError, status_of
from gateway.events import (
    Chunk,
    Done,
    Failed,
    GenerationRef,
    Message,
    Start,
    ToolCalled,
    ToolReturned,
    ToolSpec,
    Usage,
    UseTool,
)
from gateway.protocol.frames import (
    Auth,
    Cancel,
    CompletionRequest,
    Ping,
    Source,
    dumps,
    encode_event,
    encode_text_chunk,
    error_frame,
    event_object,
    parse_after,
    parse_client_frame,
    parse_frame_object,
    parse_json_object,
    parse_tool_choice,
    parse_tools,
    ready_frame,
    refused_id,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"ping"}', Ping()),
        ('{"type":"cancel","id":"a"}', Cancel("a")),
        ('{"type":"auth","token":"x.y.z"}', Auth("x.y.z")),
        (
            '{"type":"completion","id":"r1","message":"hi"}',
            CompletionRequest(id="r1", message="hi"),
        ),
        (
            '{"type":"completion","id":"r1","message":"hi","model":"m","agent":"a",'
            '"conversation_id":"c_1-x","temperature":0.5,"max_tokens":10,"project_id":"p",'
            '"conversation_history":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],'
            '"sources":["plain",{"content":"c","title":"t","url":"u"}],"unknown":1}',
            CompletionRequest(
                id="r1",
                message="hi",
                model="m",
                agent="a",
                conversation_id="c_1-x",
                temperature=0.5,
                max_tokens=10,
                project_id="p",
                conversation_history=(Message("user", "q"), Message("assistant", "a")),
                sources=(Source("plain"), Source("c", "t", "u")),
            ),
        ),
        (
            '{"type":"completion","id":"r","message":"x","temperature":2}',
            CompletionRequest(id="r", message="x", temperature=2.0),
        ),
    ],
)
def test_valid_frames_parse(text: str, expected: object) -> None:
    assert parse_client_frame(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "not valid JSON"),
        ("[1,2]", "JSON object"),
        ('{"id":"a"}', "'type'"),
        ('{"type":"dance"}', "Unknown frame type"),
        ('{"type":"completion","message":"hi"}', "'id'"),
        ('{"type":"completion","id":"","message":"hi"}', "'id'"),
        ('{"type":"completion","id":"' + "x" * 129 + '","message":"hi"}', "'id'"),
        ('{"type":"completion","id":"r"}', "'message'"),
        ('{"type":"completion","id":"r","message":"   "}', "'message'"),
        ('{"type":"completion","id":"r","message":5}', "'message'"),
        ('{"type":"completion","id":"r","message":"x","conversation_id":"a b"}', "conversation_id"),
        (  # `$` alone would let a trailing newline through
            '{"type":"completion","id":"r","message":"x","conversation_id":"c\\n"}',
            "conversation_id",
        ),
        ('{"type":"resume","generation_id":"gen_1\\n"}', "generation_id"),
        (
            '{"type":"completion","id":"r","message":"x","conversation_id":"' + "a" * 65 + '"}',
            "conversation_id",
        ),
        ('{"type":"completion","id":"r","message":"x","temperature":3}', "temperature"),
        ('{"type":"completion","id":"r","message":"x","temperature":true}', "temperature"),
        ('{"type":"completion","id":"r","message":"x","max_tokens":0}', "max_tokens"),
        ('{"type":"completion","id":"r","message":"x","max_tokens":1.5}', "max_tokens"),
        ('{"type":"completion","id":"r","message":"x","max_tokens":2147483648}', "2147483647"),
        ('{"type":"completion","id":"r","message":"a\\ud800b"}', "half a character"),
        ('{"type":"completion","id":"\\udfff","message":"x"}', "half a character"),
        ('{"type":"completion","id":"r","message":"x","model":"\\uDBFF"}', "half a character"),
        (
            '{"type":"completion","id":"r","message":"x","max_tokens":' + "9" * 4300 + "}",
            "max_tokens",
        ),
        ('{"type":"completion","id":"r","message":"x","model":7}', "'model'"),
        ('{"type":"completion","id":"r","message":"x","conversation_history":{}}', "history"),
        (
            '{"type":"completion","id":"r","message":"x","conversation_history":[{"role":"tool",'
            '"content":"x"}]}',
            "history",
        ),
        ('{"type":"completion","id":"r","message":"x","sources":[1]}', "source"),
        ('{"type":"completion","id":"r","message":"x","stream":"yes"}', "stream"),
        ('{"type":"cancel"}', "'id'"),
        ('{"type":"auth","token":""}', "token"),
        ('{"type":"completion","id":"r","message":"x","stop":[1]}', "'stop'"),
        ('{"type":"completion","id":"r","message":"x","stop":["a","b","c","d","e"]}', "'stop'"),
        ('{"type":"completion","id":"r","message":"x","tools":[{"type":"function"}]}', "tool"),
        ('{"type":"completion","id":"r","message":"x","tools":{}}', "'tools'"),
        ('{"type":"completion","id":"r","message":"x","tools":["x"]}', "tool"),
        ('{"type":"completion","id":"r","message":"x","tool_choice":"auto"}', "tool_choice"),
        ('{"type":"completion","id":"r","message":"x","tool_choice":"always"}', "tool_choice"),
        ('{"type":"resume","generation_id":"x"}', "generation_id"),
        ('{"type":"resume","generation_id":"gen_a","after":-1}', "'after'"),
        ('{"type":"cancel","generation_id":"nope"}', "generation_id"),
        ('{"type":"resume","generation_id":"gen_a","after":"\u00b2"}', "'after'"),
        ('{"type":"completion","id":"r","message":"x","stream":0}', "stream"),
    ],
)
def test_invalid_frames_are_bad_requests(text: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_client_frame(text)
    assert fragment in caught.value.message


def test_client_tools_become_provider_neutral_specs() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [
        {"type": "function", "function": {"name": "a"}},
        {
            "type": "function",
            "function": {"name": "b", "description": "B", "parameters": schema, "strict": True},
        },
    ]
    assert parse_tools(tools) == (ToolSpec("a"), ToolSpec("b", "B", schema, True))
    assert parse_tool_choice("required") == "required"
    assert parse_tool_choice({"type": "function", "function": {"name": "b"}}) == UseTool("b")


@pytest.mark.parametrize(
    "function",
    [
        {"name": "a", "description": 1},
        {"name": "a", "parameters": "object"},
        {"name": "a", "parameters": []},
        {"name": "a", "strict": "yes"},
    ],
)
def test_a_function_tool_of_the_wrong_field_types_is_refused(function: dict[str, Any]) -> None:
    with pytest.raises(BadRequest, match="'description' must be a string"):
        parse_tools([{"type": "function", "function": function}])


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"type": "completion", "id": "r"}, ("r", True)),
        ({"type": "cancel", "id": "r"}, ("r", False)),
        ({"type": "resume", "id": "r"}, ("r", True)),
        ({"type": "completion", "id": 5}, (None, False)),
        ({}, (None, False)),
    ],
)
def test_refused_id(obj: dict[str, Any], expected: tuple[str | None, bool]) -> None:
    assert refused_id(obj) == expected


def test_invalid_utf8_body_is_bad_request() -> None:
    with pytest.raises(BadRequest):
        parse_json_object(b"\xff\xfe")


def test_a_pair_of_surrogate_escapes_is_the_character_it_makes() -> None:
    """What `json.dumps` writes by default (ensure_ascii) for a character beyond the BMP."""
    text = json.dumps({"type": "completion", "id": "r", "message": "hi 😀"})
    assert "\\ud83d\\ude00" in text
    frame = parse_client_frame(text)
    assert isinstance(frame, CompletionRequest) and frame.message == "hi 😀"
    assert parse_json_object(text.encode()) == {"type": "completion", "id": "r", "message": "hi 😀"}


REF = GenerationRef("gen_1", "conv_1")
# Any code point, lone surrogates included (json writes them as they are, like any other
# non-ASCII character), with quotes, backslashes and control characters drawn often.
any_text = st.text(
    st.characters(exclude_categories=()) | st.sampled_from('"\\/\x00\x1f\x7f\u2028é😀')
)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (
            Start(1, "m", "chat"),
            {
                "type": "start",
                "seq": 1,
                "done": False,
                "content": "",
                "model": "m",
                "agent": "chat",
            },
        ),
        (
            Chunk(2, "hé", {"k": 1}),
            {"type": "chunk", "seq": 2, "done": False, "content": "hé", "metadata": {"k": 1}},
        ),
        (
            Done(3, "stop", Usage(2, 3), {"citations": []}),
            {
                "type": "done",
                "seq": 3,
                "done": True,
                "content": "",
                "finish_reason": "stop",
                "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
                "metadata": {"citations": []},
            },
        ),
        (
            ToolCalled(5, "call_1", "clock", '{"tz":"UTC"}'),
            {
                "type": "tool_call",
                "seq": 5,
                "done": False,
                "content": "",
                "call_id": "call_1",
                "name": "clock",
                "arguments": '{"tz":"UTC"}',
            },
        ),
        (
            ToolReturned(6, "call_1", "clock", "12:00", False),
            {
                "type": "tool_result",
                "seq": 6,
                "done": False,
                "content": "",
                "call_id": "call_1",
                "name": "clock",
                "result": "12:00",
                "is_error": False,
            },
        ),
        (
            Failed(4, "upstream_error", "gone", True),
            {
                "type": "error",
                "seq": 4,
                "done": True,
                "content": "",
                "code": "upstream_error",
                "message": "gone",
                "retryable": True,
                "error": "gone",
            },
        ),
    ],
)
def test_events_encode_with_their_generation(event: Any, expected: dict[str, Any]) -> None:
    frame = json.loads(encode_event(event, REF, "r1"))
    assert frame == {"id": "r1", "generation_id": "gen_1", "conversation_id": "conv_1", **expected}


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(
    content=any_text,
    seq=st.integers(min_value=0),
    request_id=st.none() | any_text,
    ref=st.builds(GenerationRef, any_text, any_text),
)
@example(content='a"\\\ud800\n\x00é', seq=0, request_id=None, ref=REF)
def test_a_text_chunk_encodes_as_the_general_path_does(
    content: str, seq: int, request_id: str | None, ref: GenerationRef
) -> None:
    chunk = Chunk(seq, content)
    expected = dumps(event_object(chunk, ref, request_id))
    assert encode_text_chunk(chunk, ref, request_id) == expected
    assert encode_event(chunk, ref, request_id) == expected


def test_error_and_ready_frames() -> None:
    assert json.loads(error_frame(None, InternalError(), done=False)) == {
        "type": "error",
        "id": None,
        "code": "internal",
        "message": "The gateway failed to handle this request.",
        "retryable": False,
        "done": False,
    }
    assert json.loads(ready_frame("alice", "conn_1", 99)) == {
        "type": "ready",
        "protocol": 1,
        "user": "alice",
        "connection_id": "conn_1",
        "expires_at": 99,
        "running": None,
        "activity_id": None,
    }


@pytest.mark.parametrize("after", [-1, 2**53, 2**64, "9" * 5000, "1e3", "0x10", " 1", True, 1.5])
def test_an_after_no_generation_can_reach_is_a_bad_request(after: object) -> None:
    with pytest.raises(BadRequest, match="'after' must be a whole number from 0 to"):
        parse_after(after)


@pytest.mark.parametrize(("after", "seq"), [(None, 0), (0, 0), ("17", 17), (2**53 - 1, 2**53 - 1)])
def test_an_after_is_a_seq(after: object, seq: int) -> None:
    assert parse_after(after) == seq


def test_every_error_code_has_one_http_status_from_the_error_tree() -> None:
    """Every transport answers a code with the same status: the error tree's."""
    statuses = {code: status_of(code) for code in get_args(ErrorCode)}
    assert statuses["bad_request"] == 400  # not PayloadTooLarge's 413: the general class
    assert statuses["rate_limited"] == 429 and statuses["upstream_unavailable"] == 503
    assert statuses["internal"] == 500 and status_of("no such code") == 500
    assert all(400 <= status < 600 for status in statuses.values())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("message", "\ud800"),
        ("id", "a\udfff"),
        ("model", "\ud800"),
        ("stop", ["\ud800"]),
        ("sources", ["\ud800"]),
        ("tools", [{"type": "function", "function": {"name": "\ud800"}}]),
    ],
)
def test_a_lone_surrogate_is_text_like_any_other(field: str, value: Any) -> None:
    """JSON's escapes can make one; the checks count it as one character, as before."""
    frame = {"type": "completion", "id": "r", "message": "hi", field: value}
    assert isinstance(parse_frame_object(frame), CompletionRequest)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (7, "'conversation_id' must be a string of 1-128 characters."),
        ("x" * 129, "'conversation_id' must be a string of 1-128 characters."),
        ("a b", "'conversation_id' must be 1-64 characters of A-Z, a-z, 0-9, _ or -."),
        ("x" * 65, "'conversation_id' must be 1-64 characters of A-Z, a-z, 0-9, _ or -."),
    ],
)
def test_a_conversation_id_that_is_no_id_at_all_says_so(value: object, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_frame_object(
            {"type": "completion", "id": "r", "message": "x", "conversation_id": value}
        )
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("frame", "message"),
    [  # several problems at once: the first in the order the fields are checked
        ({"type": "completion", "max_tokens": 0}, "'message' must be a non-empty string."),
        (
            {"type": "completion", "message": "x", "model": 1},
            "'id' must be a string of 1-128 characters.",
        ),
        (
            {"type": "completion", "id": "r", "message": "x", "stop": 1, "agent": 2},
            "'agent' must be a string of 1-128 characters.",
        ),
        (
            {"type": "resume", "generation_id": "gen_a", "after": -1, "id": 5},
            "'after' must be a whole number from 0 to 9007199254740991.",
        ),
        ({"type": "cancel", "generation_id": "gen_a", "id": 5}, None),
    ],
)
def test_the_first_problem_is_named_whatever_else_is_wrong(
    frame: dict[str, Any], message: str | None
) -> None:
    if message is None:
        assert parse_frame_object(frame) == Cancel(generation_id="gen_a")
        return
    with pytest.raises(BadRequest) as caught:
        parse_frame_object(frame)
    assert caught.value.message == message
