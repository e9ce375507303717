"""The OpenAI-compatible API: pure translation tables, then end to end with the official
`openai` SDK as the client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from gateway.config import Settings
from gateway.errors import BadRequest, NotFound, RateLimited, Unauthorized, UpstreamError
from gateway.events import (
    Chunk,
    Done,
    Event,
    Failed,
    GenerationRef,
    Message,
    Start,
    ToolCall,
    ToolCalled,
    ToolReturned,
    ToolSpec,
    Usage,
)
from gateway.protocol.openai import InvalidParameter, ModelNotFound, chat_call
from gateway.protocol.openai_response import (
    ChunkTranslator,
    completion_object,
    error_of,
    failure_of,
    model_list,
)
from gateway.protocol.sse import sse_data
from gateway.store.conversations import ConversationStore
from tests.conftest import GatewayFactory
from tests.upstream import FakeUpstream

Mint = Callable[..., str]
MODELS = ("fake", "echo")
REF = GenerationRef("gen_abc", "conv_xyz")
DROP: Any = object()  # a table row's way to leave a field out
USAGE = Usage(prompt_tokens=3, completion_tokens=2)
WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


# Requests: pure.


def test_the_last_user_message_is_the_message_and_the_rest_the_history() -> None:
    call = chat_call(
        {
            "model": "fake",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
                {"role": "assistant", "content": [{"type": "text", "text": "It is 42."}]},
                {"role": "user", "content": "Thanks!"},
            ],
            "temperature": 0.5,
            "max_tokens": 50,
            "max_completion_tokens": 20,
            "stop": "END",
            "tools": [WEATHER],
            "tool_choice": "auto",
            "n": 1,
            "top_p": 0.9,
            "user": "ignored",
        },
        MODELS,
        agent="pirate",
        idempotency_key="key-1",
    )
    request = call.request
    assert request.message == "Thanks!"
    assert request.conversation_history == (
        Message("system", "Be brief."),
        Message("user", "a\nb"),
        Message("assistant", "", tool_calls=(ToolCall("call_1", "f", "{}"),)),
        Message("tool", "42", tool_call_id="call_1"),
        Message("assistant", "It is 42."),
    )
    assert request.conversation_id is None and request.agent == "pirate"
    assert request.model == "fake" and request.temperature == 0.5 and request.max_tokens == 20
    assert request.stop == ("END",) and request.tools == (
        ToolSpec(
            "get_weather", None, {"type": "object", "properties": {"city": {"type": "string"}}}
        ),
    )
    assert request.tool_choice == "auto" and request.idempotency_key == "key-1"
    assert call.request.stream is False and call.include_usage is False


def test_a_single_message_has_an_empty_history() -> None:
    call = chat_call({"model": "fake", "messages": [{"role": "user", "content": "hi"}]}, MODELS)
    assert call.request.message == "hi" and call.request.conversation_history == ()


def test_a_bound_conversation_keeps_its_stored_history() -> None:
    body = {
        "model": "fake",
        "messages": [
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "now"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    call = chat_call(body, MODELS, conversation_id="conv-1")
    assert call.request.conversation_id == "conv-1"
    assert call.request.conversation_history is None and call.request.message == "now"
    assert call.request.stream is True and call.include_usage is True


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": DROP}, "model", "missing_required_parameter"),
        ({"model": 7}, "model", "invalid_type"),
        ({"messages": DROP}, "messages", "missing_required_parameter"),
        ({"model": "fake", "messages": []}, "messages", "empty_array"),
        ({"n": 2}, "n", "unsupported_value"),
        ({"logprobs": True}, "logprobs", "unsupported_value"),
        ({"top_logprobs": 3}, "top_logprobs", "unsupported_value"),
        ({"response_format": {"type": "xml"}}, "response_format", "invalid_value"),
        ({"modalities": ["text", "audio"]}, "modalities", "unsupported_value"),
        ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
        ({"frobnicate": 1}, "frobnicate", "unknown_parameter"),
        ({"temperature": 3}, "temperature", "invalid_value"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
        ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
        ({"max_tokens": 10**4299}, "max_tokens", "integer_above_max_value"),
        ({"max_completion_tokens": 1.5}, "max_completion_tokens", "invalid_type"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "invalid_value"),
        ({"tools": [{"type": "custom"}]}, "tools", "invalid_value"),
        ({"tool_choice": "auto"}, "tool_choice", "invalid_value"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].type",
            "unsupported_value",
        ),
        (
            {"messages": [{"role": "function", "content": "x"}]},
            "messages[0].role",
            "unsupported_value",
        ),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"messages": [{"role": "user"}]}, "messages[0].content", "invalid_type"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
            "missing_required_parameter",
        ),
        (
            {"messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": "c"}]}]},
            "messages[0].tool_calls[0]",
            "invalid_value",
        ),
        ({"messages": [{"role": "assistant", "content": "prefill"}]}, "messages", "invalid_value"),
        ({"messages": [{"role": "system", "content": "only"}]}, "messages", "invalid_value"),
    ],
)
def test_invalid_requests_name_the_parameter(body: dict[str, Any], param: str, code: str) -> None:
    full = {"model": "fake", "messages": [{"role": "user", "content": "x"}], **body}
    with pytest.raises(InvalidParameter) as caught:
        chat_call({k: v for k, v in full.items() if v is not DROP}, MODELS)
    assert (caught.value.param, caught.value.openai_code) == (param, code)
    status, error = error_of(caught.value)
    assert status == 400 and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["param"] == param and error["error"]["code"] == code


def test_an_unknown_model_is_not_found_like_openai() -> None:
    with pytest.raises(ModelNotFound) as caught:
        chat_call({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}, MODELS)
    assert error_of(caught.value) == (
        404,
        {
            "error": {
                "message": "The model `gpt-9` does not exist or you do not have access to it.",
                "type": "invalid_request_error",
                "param": None,
                "code": "model_not_found",
            }
        },
    )


def test_a_tool_result_as_the_last_message_continues_without_a_new_message() -> None:
    body = {
        "model": "fake",
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": []},
            {"role": "tool", "tool_call_id": "c", "content": "r"},
        ],
    }
    request = chat_call(body, MODELS).request
    assert request.message is None
    assert request.conversation_history is not None
    assert [m.role for m in request.conversation_history] == ["user", "assistant", "tool"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"conversation_id": "bad id!"}, "X-Conversation-Id"),
        ({"agent": "a" * 200}, "X-Agent"),
        ({"idempotency_key": ""}, "Idempotency-Key"),
    ],
)
def test_bad_headers_are_400(headers: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        chat_call(
            {"model": "fake", "messages": [{"role": "user", "content": "x"}]}, MODELS, **headers
        )


# Responses: pure.


def _run(translator: ChunkTranslator, events: list[Event]) -> list[dict[str, Any]]:
    return [chunk for event in events for chunk in translator.chunks(REF, event)]


def test_events_become_chunks() -> None:
    events: list[Event] = [
        Start(1, "fake", "chat"),
        Chunk(2, "Hel"),
        Chunk(3, ""),
        Chunk(4, "lo"),
        Done(5, "stop", USAGE),
    ]
    chunks = _run(ChunkTranslator(created=1700000000), events)
    head = {
        "id": "chatcmpl-gen_abc",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake",
        "system_fingerprint": None,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**head, "choices": [choice]}

    assert chunks == [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({}, "stop"),
    ]


def test_include_usage_adds_a_last_chunk_without_choices() -> None:
    events: list[Event] = [Start(1, "fake", "chat"), Chunk(2, "a"), Done(3, "length", USAGE)]
    chunks = _run(ChunkTranslator(created=1, include_usage=True), events)
    assert [c["usage"] for c in chunks[:-1]] == [None, None, None]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_client_tool_calls_come_as_deltas_and_the_agents_own_are_hidden() -> None:
    events: list[Event] = [
        Start(1, "fake", "tools"),
        ToolCalled(2, "call_own", "calculate", '{"x":1}'),
        ToolReturned(3, "call_own", "calculate", "2", False),
        Chunk(4, "Now the weather."),
        ToolCalled(5, "call_a", "get_weather", '{"city":"Paris"}'),
        ToolCalled(6, "call_b", "get_time", "{}"),
        Done(7, "tool_calls", USAGE),
    ]
    chunks = _run(ChunkTranslator(created=1), events)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[2:4] == [
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ]
        },
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{}"},
                }
            ]
        },
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    body = completion_object(REF, events, 1)
    message = body["choices"][0]["message"]
    assert message["content"] == "Now the weather."
    assert [c["id"] for c in message["tool_calls"]] == ["call_a", "call_b"]
    assert "index" not in message["tool_calls"][0]


# Any code point, lone surrogates included, with quotes, backslashes and control characters
# drawn often.
any_text = st.text(st.characters(exclude_categories=()) | st.sampled_from('"\\\x00\x1fé'))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    content=any_text,
    model=any_text,
    generation_id=any_text,
    created=st.integers(min_value=0),
    include_usage=st.booleans(),
)
def test_a_text_chunk_line_is_the_sse_data_of_its_chunks(
    content: str, model: str, generation_id: str, created: int, include_usage: bool
) -> None:
    translator = ChunkTranslator(created, include_usage, model)
    ref, chunk = GenerationRef(generation_id, "conv_xyz"), Chunk(2, content)
    assert translator.data(ref, chunk) == sse_data(translator.chunks(ref, chunk))


def test_a_failure_becomes_an_error_object() -> None:
    translator = ChunkTranslator(created=1)
    _run(translator, [Start(1, "fake", "chat"), Chunk(2, "par")])
    failed = Failed(3, "upstream_error", "Model 'fake' stopped answering mid-stream.", True)
    assert translator.chunks(REF, failed) == [
        {
            "error": {
                "message": "Model 'fake' stopped answering mid-stream.",
                "type": "server_error",
                "param": None,
                "code": "upstream_error",
            }
        }
    ]


def test_a_whole_answer_is_a_chat_completion() -> None:
    events: list[Event] = [
        Start(1, "fake", "chat"),
        Chunk(2, "Hi"),
        Chunk(3, "!"),
        Done(4, "cancelled", USAGE),
    ]
    assert completion_object(REF, events, 1700000000) == {
        "id": "chatcmpl-gen_abc",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi!", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "system_fingerprint": None,
    }


@pytest.mark.parametrize(
    ("code", "status", "error_type", "openai_code"),
    [
        ("bad_request", 400, "invalid_request_error", None),
        ("unauthorized", 401, "invalid_request_error", "invalid_api_key"),
        ("not_found", 404, "invalid_request_error", "not_found"),
        ("rate_limited", 429, "requests", "rate_limit_exceeded"),
        ("upstream_error", 502, "server_error", "upstream_error"),
        ("interrupted", 503, "server_error", "interrupted"),
        ("unavailable", 503, "server_error", "unavailable"),
        ("internal", 500, "server_error", "internal_error"),
        ("something_new", 500, "server_error", "something_new"),
    ],
)
def test_failures_map_to_openai_statuses(
    code: str, status: int, error_type: str, openai_code: str | None
) -> None:
    got_status, body = failure_of(Failed(9, code, "msg", False))
    assert got_status == status
    assert body == {
        "error": {"message": "msg", "type": error_type, "param": None, "code": openai_code}
    }


@pytest.mark.parametrize(
    ("error", "status", "openai_code"),
    [
        (BadRequest("x"), 400, None),
        (Unauthorized("x"), 401, "invalid_api_key"),
        (NotFound("x"), 404, "not_found"),
        (RateLimited("x"), 429, "rate_limit_exceeded"),
        (UpstreamError("x"), 502, "upstream_error"),
    ],
)
def test_errors_map_to_openai_statuses(error: Any, status: int, openai_code: str | None) -> None:
    got_status, body = error_of(error)
    assert got_status == status and body["error"]["code"] == openai_code


def test_models_are_an_openai_list() -> None:
    assert model_list(["fake"]) == {
        "object": "list",
        "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "chat-gateway"}],
    }


# End to end, with the official SDK.


@pytest.fixture
async def client(gateway: str, token: Mint) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{gateway}/v1", api_key=token(), max_retries=0, timeout=20
    ) as sdk:
        yield sdk


def user(text: str) -> ChatCompletionMessageParam:
    return {"role": "user", "content": text}


async def test_a_whole_answer(client: openai.AsyncOpenAI, fake_upstream: FakeUpstream) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="fake",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "first"}]},
            {"role": "assistant", "content": "ok"},
            user("hi there"),
        ],
        temperature=0.5,
        stop=["zzz"],
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-gen_") and completion.model == "fake"
    assert raw.headers["x-conversation-id"].startswith("conv_")
    assert raw.headers["x-generation-id"] == completion.id.removeprefix("chatcmpl-")
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason == "stop"
    assert choice.message.role == "assistant" and choice.message.content == "You said: hi there"
    assert choice.message.tool_calls is None and choice.message.refusal is None
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    sent = fake_upstream.requests[-1]
    assert sent.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "hi there"},
    ]
    assert sent.body["temperature"] == 0.5 and sent.body["stop"] == ["zzz"]


async def test_a_stream_assembled_by_the_sdk(client: openai.AsyncOpenAI) -> None:
    deltas = []
    async with client.chat.completions.stream(model="fake", messages=[user("a b")]) as stream:
        async for event in stream:
            if event.type == "content.delta":
                deltas.append(event.delta)
        completion = await stream.get_final_completion()
    assert "".join(deltas) == "You said: a b"
    assert completion.choices[0].message.content == "You said: a b"
    assert completion.choices[0].finish_reason == "stop"


async def test_stream_chunks_and_usage(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="fake",
        messages=[user("a b")],
        stream=True,
        stream_options={"include_usage": True},
        max_completion_tokens=2,
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" and c.model == "fake" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said:"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert all(c.usage is None for c in chunks[:-1])


async def test_the_sse_wire_format(gateway: str, token: Mint) -> None:
    async with httpx2.AsyncClient(timeout=20) as http:
        response = await http.post(
            f"{gateway}/v1/chat/completions",
            json={"model": "fake", "messages": [user("x")], "stream": True},
            headers={"Authorization": f"Bearer {token()}"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-conversation-id"].startswith("conv_")
    blocks = response.text.split("\n\n")
    assert blocks[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(b.removeprefix("data: ")) for b in blocks[:-2]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all("usage" not in c for c in chunks)


async def test_a_model_that_cannot_stream_streams_one_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="fake-whole", messages=[user("whole")], stream=True
    )
    contents = [c.choices[0].delta.content async for c in stream if c.choices[0].delta.content]
    assert contents == ["You said: whole"]


async def test_tool_calls(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model="fake", messages=[user('{"city": "Paris"}')], tools=[WEATHER]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and call.function.arguments == '{"city": "Paris"}'

    async with client.chat.completions.stream(
        model="fake", messages=[user('{"city": "Rome"}')], tools=[WEATHER], tool_choice="auto"
    ) as stream:
        streamed = await stream.get_final_completion()
    assert streamed.choices[0].finish_reason == "tool_calls"
    calls = streamed.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    assert calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == '{"city": "Rome"}'


async def test_a_tool_result_continues_the_answer(
    client: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    messages: list[ChatCompletionMessageParam] = [user('{"city": "Paris"}')]
    first = await client.chat.completions.create(model="fake", messages=messages, tools=[WEATHER])
    calls = first.choices[0].message.tool_calls
    assert calls is not None
    call = calls[0]
    assert call.type == "function"
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = await client.chat.completions.create(model="fake", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "Result: sunny"
    assert fake_upstream.requests[-1].messages[-1] == {
        "role": "tool",
        "content": "sunny",
        "tool_call_id": call.id,
    }


async def test_a_bound_conversation_uses_and_extends_its_history(
    client: openai.AsyncOpenAI, fake_upstream: FakeUpstream, conversations: ConversationStore
) -> None:
    bound = {"X-Conversation-Id": "oa-conv"}
    raw = await client.chat.completions.with_raw_response.create(
        model="fake", messages=[user("one")], extra_headers=bound
    )
    assert raw.headers["x-conversation-id"] == "oa-conv"
    stream = await client.chat.completions.create(
        model="fake",
        messages=[user("ignored earlier message"), user("two")],
        stream=True,
        extra_headers=bound,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text == "You said: two"
    assert fake_upstream.requests[-1].messages == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "You said: one"},
        {"role": "user", "content": "two"},
    ]
    stored = await conversations.messages("alice", "oa-conv")
    assert [m.content for m in stored] == ["one", "You said: one", "two", "You said: two"]


async def test_a_conversation_id_is_the_users_own(
    client: openai.AsyncOpenAI, gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    """Bob's X-Conversation-Id of alice's conversation names one of bob's own: the model sees
    bob's history only."""
    await client.chat.completions.create(
        model="fake", messages=[user("alice's secret")], extra_headers={"X-Conversation-Id": "oa"}
    )
    async with openai.AsyncOpenAI(
        base_url=f"{gateway}/v1", api_key=token("bob"), max_retries=0
    ) as bob:
        await bob.chat.completions.create(
            model="fake", messages=[user("bob here")], extra_headers={"X-Conversation-Id": "oa"}
        )
    assert fake_upstream.requests[-1].messages == [{"role": "user", "content": "bob here"}]


async def test_x_agent_picks_the_agent(
    client: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    await client.chat.completions.create(
        model="fake", messages=[user("ahoy")], extra_headers={"X-Agent": "pirate"}
    )
    assert fake_upstream.requests[-1].messages[0] == {
        "role": "system",
        "content": "Talk like a pirate.",
    }
    with pytest.raises(openai.BadRequestError, match="Unknown agent 'nobody'"):
        await client.chat.completions.create(
            model="fake", messages=[user("x")], extra_headers={"X-Agent": "nobody"}
        )


async def test_an_idempotency_key_answers_the_same_generation(client: openai.AsyncOpenAI) -> None:
    key = {"Idempotency-Key": "oa-idem-1"}
    first = await client.chat.completions.create(
        model="fake", messages=[user("once")], extra_headers=key
    )
    again = await client.chat.completions.create(
        model="fake", messages=[user("once")], extra_headers=key
    )
    assert again.id == first.id
    assert again.choices[0].message.content == first.choices[0].message.content


async def test_refused_parameters_raise_bad_request(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="fake", messages=[user("x")], n=2)
    assert caught.value.status_code == 400 and caught.value.param == "n"
    assert caught.value.type == "invalid_request_error" and caught.value.code == "unsupported_value"
    with pytest.raises(openai.BadRequestError) as unknown:
        await client.chat.completions.create(
            model="fake", messages=[user("x")], extra_body={"top_k": 5}
        )
    assert unknown.value.code == "unknown_parameter" and unknown.value.param == "top_k"


async def test_ignored_parameters_are_accepted(
    client: openai.AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    completion = await client.chat.completions.create(
        model="fake",
        messages=[user("x")],
        top_p=0.5,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        seed=7,
        user="someone",
        n=1,
    )
    assert completion.choices[0].message.content == "You said: x"
    assert "top_p" not in fake_upstream.requests[-1].body


async def test_an_unknown_model_is_not_found(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model="gpt-9", messages=[user("x")])
    assert caught.value.code == "model_not_found"
    assert caught.value.message.endswith(
        "The model `gpt-9` does not exist or you do not have access to it."
    )


async def test_a_bad_token_is_an_authentication_error(gateway: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{gateway}/v1", api_key="not-a-jwt", max_retries=0
    ) as sdk:
        with pytest.raises(openai.AuthenticationError) as caught:
            await sdk.chat.completions.create(model="fake", messages=[user("x")])
        assert caught.value.code == "invalid_api_key"
        assert caught.value.type == "invalid_request_error"
        with pytest.raises(openai.AuthenticationError):
            await sdk.models.list()


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_failure_is_a_status_error(
    client: openai.AsyncOpenAI, stream: bool
) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(
            model="fake-err500", messages=[user("x")], stream=stream
        )
    assert caught.value.status_code == 503 and caught.value.code == "upstream_unavailable"
    assert caught.value.response.headers["x-should-retry"] == "true"


async def test_a_failure_mid_stream_raises_when_its_line_is_read(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="fake-drop2", messages=[user("a b c")], stream=True
    )
    received: list[str] = []

    async def read_all() -> None:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError) as caught:
        await read_all()
    assert "".join(received) == "You said:"
    assert caught.value.code == "upstream_error" and caught.value.type == "server_error"


async def test_models_are_listed_and_retrieved(
    client: openai.AsyncOpenAI, settings: Settings
) -> None:
    page = await client.models.list()
    assert [m.id for m in page.data] == list(settings.models)
    assert all(m.object == "model" and m.owned_by == "chat-gateway" for m in page.data)
    assert (await client.models.retrieve("fake-whole")).id == "fake-whole"
    with pytest.raises(openai.NotFoundError) as caught:
        await client.models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"


async def test_other_v1_paths_are_not_found_in_openai_shape(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.embeddings.create(model="fake", input="x")
    assert caught.value.message.endswith("Invalid URL (POST /v1/embeddings)")
    assert caught.value.type == "invalid_request_error"


async def test_on_disconnect_cancel_applies_to_v1_streams(
    start_gateway: GatewayFactory, token: Mint, fake_upstream: FakeUpstream
) -> None:
    body = {"model": "fake-i20-n200", "stream": True, "messages": [user("x")]}
    with start_gateway(on_disconnect="cancel") as url:
        async with (
            httpx2.AsyncClient(timeout=30) as http,
            http.stream(
                "POST",
                f"{url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {token()}"},
            ) as response,
        ):
            async for line in response.aiter_lines():
                if '"content":" t0"' in line:
                    break
        assert await asyncio.to_thread(fake_upstream.requests[-1].client_left.wait, 10)
