"""The Responses API's wire format, pure: requests as the core's, events as OpenAI's
streamed events and response object, checked against the openai SDK's own types."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.events import (
    Chunk,
    Done,
    Event,
    Failed,
    GenerationRef,
    OutputFormat,
    Start,
    ToolCalled,
    Usage,
)
from gateway.protocol.openai import InvalidParameter, ModelNotFound
from gateway.protocol.responses import (
    Echo,
    ResponseNotFound,
    generation_of,
    response_id,
    responses_call,
)
from gateway.protocol.responses_input import input_item_page, referenced_items, with_references
from gateway.protocol.responses_render import ResponseRenderer, response_object

MODELS = {"echo", "gpt"}
REF = GenerationRef("gen_abc-DEF_123", "conv_1")
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


def call(**body: Any) -> Any:
    return responses_call({"model": "echo", "input": "hi", **body}, MODELS)


def refused(**body: Any) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as caught:
        call(**body)
    return caught.value


def test_ids_map_onto_generation_ids() -> None:
    assert response_id("gen_abc-DEF_123") == "resp_abc-DEF_123"
    assert generation_of("resp_abc-DEF_123") == "gen_abc-DEF_123"
    for bad in ("gen_abc", "resp_", "resp_a/b", "x" * 300):
        with pytest.raises(ResponseNotFound):
            generation_of(bad)


def test_string_input_is_one_user_message_without_history() -> None:
    parsed = call(instructions="Be brief.", temperature=0.5, max_output_tokens=64)
    assert parsed.request.message == "hi"
    assert [(m.role, m.content) for m in parsed.request.conversation_history] == [
        ("system", "Be brief.")
    ]
    assert parsed.request.max_tokens == 64
    assert parsed.echo.store and not parsed.background


def test_message_items_with_text_parts_and_every_role() -> None:
    items = [
        {"role": "system", "content": [{"type": "input_text", "text": "S"}]},
        {"role": "developer", "content": "D"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "U1"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A"}]},
        {"role": "user", "content": "U2"},
    ]
    parsed = call(input=items)
    history = [(m.role, m.content) for m in parsed.request.conversation_history]
    assert history == [("system", "S"), ("system", "D"), ("user", "U1"), ("assistant", "A")]
    assert parsed.request.message == "U2"


def test_function_call_round_trip_items_continue_the_turn() -> None:
    items = [
        {"role": "user", "content": "weather?"},
        {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
        {"type": "function_call", "id": "fc_1", "call_id": "c2", "name": "w", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": "rain"},
    ]
    tools = [{"type": "function", "name": "w", "parameters": {"type": "object"}, "strict": True}]
    parsed = call(input=items, tools=tools, tool_choice="auto")
    request = parsed.request
    assert request.message is None
    roles = [m.role for m in request.conversation_history]
    assert roles == ["user", "assistant", "tool", "tool"]
    assert [c.call_id for c in request.conversation_history[1].tool_calls] == ["c1", "c2"]
    assert request.tools[0].name == "w" and request.tools[0].strict is True
    named = call(tools=tools, tool_choice={"type": "function", "name": "w"})
    assert named.request.tool_choice is not None


def test_previous_response_id_uses_the_stored_conversation() -> None:
    parsed = call(previous_response_id="resp_xyz")
    assert parsed.previous_generation == "gen_xyz"
    assert parsed.request.conversation_history is None
    assert refused(previous_response_id="gen_xyz").param == "previous_response_id"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format"),
        ({"text": {"format": {"type": "xml"}}}, "text.format"),
        ({"text": {"format": "json"}}, "text.format"),
        ({"text": {"style": 1}}, "text.style"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"background": True, "store": False}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, None),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "assistant", "content": "a"}]}, "input"),
        ({"input": []}, "input"),
        ({"max_output_tokens": 3}, "max_output_tokens"),
        ({"max_output_tokens": 2**31}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"conversation": "c"}, "conversation"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_refusals_name_the_parameter(body: dict[str, Any], param: str | None) -> None:
    error = refused(**body)
    if param is not None:
        assert error.param == param
    assert error.http_status == 400


def test_text_format_as_the_neutral_output_format() -> None:
    assert call(text={"format": {"type": "text"}}).request.output_format == OutputFormat("text")
    assert call(text={"format": {"type": "json_object"}}).request.output_format == OutputFormat(
        "json_object"
    )
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "name": "A", "schema": schema, "strict": True}
    parsed = call(text={"format": fmt, "verbosity": "low"})
    assert parsed.request.output_format == OutputFormat("json_schema", "A", schema, True)
    assert parsed.echo.text == {"format": fmt, "verbosity": "low"}
    assert call().echo.text == {"format": {"type": "text"}}


def test_unknown_models_are_not_found() -> None:
    with pytest.raises(ModelNotFound):
        call(model="nope")


def rendered(events: list[Event], after: int = -1) -> list[dict[str, Any]]:
    renderer = ResponseRenderer(Echo(model="echo", created_at=100), after)
    text = "".join(renderer.event(REF, event) for event in events)
    out = []
    for block in text.split("\n\n")[:-1]:
        kind, data = block.split("\n")
        event = STREAM_EVENT.validate_json(data.removeprefix("data: "))
        assert kind == f"event: {event.type}"
        out.append(event.model_dump())
    return out


TEXT_EVENTS: list[Event] = [
    Start(1, "echo", "chat"),
    Chunk(2, "Hel"),
    Chunk(3, "lo"),
    ToolCalled(4, "call_1", "lookup", '{"q":1}'),
    Done(5, "tool_calls", Usage(3, 2)),
]


def test_stream_follows_openais_event_sequence() -> None:
    events = rendered(TEXT_EVENTS)
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[4]["item_id"] == events[2]["item"]["id"]
    final = events[-1]["response"]
    assert final["id"] == "resp_abc-DEF_123" and final["status"] == "completed"
    assert final["output_text"] == "Hello"
    assert final["output"][1]["call_id"] == "call_1"
    assert final["usage"]["total_tokens"] == 5


def test_a_background_stream_opens_queued() -> None:
    renderer = ResponseRenderer(Echo(model="echo", background=True))
    opened = renderer.events(REF, Start(1, "echo", "chat"))
    assert [(e["type"], e["response"]["status"]) for e in opened] == [
        ("response.created", "queued"),
        ("response.queued", "queued"),
        ("response.in_progress", "in_progress"),
    ]
    assert [e["sequence_number"] for e in opened] == [0, 1, 2]
    for event in opened:
        STREAM_EVENT.validate_python(event)


def test_a_replay_after_n_is_exactly_the_rest() -> None:
    whole = rendered(TEXT_EVENTS)
    for after in range(len(whole)):
        assert rendered(TEXT_EVENTS, after) == whole[after + 1 :]


def test_endings_incomplete_cancelled_failed() -> None:
    base: list[Event] = [Start(1, "echo", "chat"), Chunk(2, "x")]
    length = rendered([*base, Done(3, "length", Usage())])[-1]
    assert length["type"] == "response.incomplete"
    assert length["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    cancelled = rendered([*base, Done(3, "cancelled", Usage())])[-1]
    assert cancelled["response"]["status"] == "cancelled"
    failed = rendered([*base, Failed(3, "upstream_error", "boom", True)])[-1]
    assert failed["type"] == "response.failed"
    error = failed["response"]["error"]
    assert (error["code"], error["message"]) == ("server_error", "boom")


def test_response_object_matches_the_sdk_type() -> None:
    obj = response_object(REF, Echo(model="echo", metadata={"a": "b"}), TEXT_EVENTS)
    parsed = Response.model_validate(obj)
    assert parsed.output_text == "Hello" and parsed.status == "completed"
    running = response_object(REF, Echo(model="echo"), TEXT_EVENTS[:2], "in_progress")
    assert Response.model_validate(running).status == "in_progress"


def test_item_references_name_output_items_of_a_generation() -> None:
    body = {
        "input": [
            {"role": "user", "content": "q"},
            {"type": "item_reference", "id": "msg_a-b_c"},
            {"type": "item_reference", "id": "fc_a-b_c_1"},
            {"role": "user", "content": "again"},
        ]
    }
    assert referenced_items(body) == {"gen_a-b_c": {"msg_a-b_c", "fc_a-b_c_1"}}
    message = {"id": "msg_a-b_c", "type": "message", "role": "assistant", "content": "A"}
    call_item = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    resolved = with_references(body, {"msg_a-b_c": message, "fc_a-b_c_1": call_item})
    assert resolved["input"][1:3] == [message, call_item]
    with pytest.raises(InvalidParameter) as missing:
        with_references(body, {"msg_a-b_c": message})
    assert missing.value.param == "input[2].id"
    for bad in ("rs_1", "fc_x", "msg_", 7):
        with pytest.raises(InvalidParameter):
            referenced_items({"input": [{"type": "item_reference", "id": bad}]})
    many = [{"type": "item_reference", "id": f"msg_{i}"} for i in range(65)]
    with pytest.raises(InvalidParameter):
        referenced_items({"input": many})


def test_input_items_are_listed_a_page_at_a_time() -> None:
    items = [
        {"role": "user", "content": "q"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "4"},
    ]
    page = input_item_page("resp_x", items, {"order": "asc", "limit": "2"})
    assert [item["id"] for item in page["data"]] == ["msg_x_in0", "fc_x_in1"]
    assert page["data"][0]["content"] == [{"type": "input_text", "text": "q"}]
    assert page["has_more"] and page["last_id"] == "fc_x_in1"
    rest = input_item_page("resp_x", items, {"order": "asc", "after": "fc_x_in1"})
    assert [item["id"] for item in rest["data"]] == ["fco_x_in2"] and not rest["has_more"]
    newest = input_item_page("resp_x", items, {})
    assert newest["first_id"] == "fco_x_in2"
    for query in ({"limit": "0"}, {"limit": "101"}, {"order": "up"}):
        with pytest.raises(InvalidParameter):
            input_item_page("resp_x", items, query)
    with pytest.raises(InvalidParameter):
        referenced_items({"input": [{"type": "item_reference", "id": "fc_x_in1"}]})
