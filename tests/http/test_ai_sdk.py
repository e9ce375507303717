"""The Vercel AI SDK's UI message stream: the pure event→parts mapping, then `POST /api/chat`
and `GET /api/chat/{id}/stream` read by the `ai` package's own client code (tests/js)."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from subprocess import DEVNULL, PIPE
from typing import Any

import httpx2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.agents.base import Agent, AgentInput
from gateway.agents.registry import build_agents
from gateway.config import AgentConfig, Settings
from gateway.errors import BadRequest
from gateway.events import (
    AgentEvent,
    Chunk,
    Done,
    Event,
    Failed,
    Finish,
    GenerationRef,
    Start,
    TextDelta,
    ToolCall,
    ToolCalled,
    ToolResult,
    ToolReturned,
    Usage,
)
from gateway.protocol.ai_sdk import (
    Part,
    PartsState,
    chat_request,
    event_data,
    event_parts,
    fell_behind_parts,
)
from gateway.protocol.sse import DONE_LINE, sse_data
from gateway.store.conversations import ConversationStore
from gateway.tools.pool import WorkerPool
from tests.conftest import GatewayFactory
from tests.upstream import FakeUpstream

Mint = Callable[..., str]
REF = GenerationRef("gen_abc", "chat-1")
JS_DIR = Path(__file__).resolve().parents[1] / "js"
READER = JS_DIR / "read_ui_stream.mjs"
PINNED_AI = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["ai"]
SLOW = "fake-i20-n100"  # 100 tokens, 20 ms apart
SLOW_TEXT = "".join(f" t{i}" for i in range(100))


def parts_of(events: list[Event], ref: GenerationRef = REF) -> list[Part]:
    parts: list[Part] = []
    state = PartsState()
    for event in events:
        more, state = event_parts(event, ref, state)
        parts += more
    return parts


def types(parts: list[Part]) -> list[str]:
    return [part["type"] for part in parts]


def user_message(text: str, message_id: str = "u1") -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


# The mapping, pure.


def test_a_text_answer() -> None:
    parts = parts_of(
        [Start(1, "fake", "chat"), Chunk(2, "Hel"), Chunk(3, "lo"), Done(4, "stop", Usage(2, 3))]
    )
    assert parts == [
        {
            "type": "start",
            "messageId": "gen_abc",
            "messageMetadata": {
                "conversationId": "chat-1",
                "generationId": "gen_abc",
                "model": "fake",
                "agent": "chat",
            },
        },
        {"type": "start-step"},
        {"type": "text-start", "id": "text-2"},
        {"type": "text-delta", "id": "text-2", "delta": "Hel"},
        {"type": "text-delta", "id": "text-2", "delta": "lo"},
        {"type": "text-end", "id": "text-2"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "stop",
            "messageMetadata": {
                "finishReason": "stop",
                "usage": {"inputTokens": 2, "outputTokens": 3, "totalTokens": 5},
            },
        },
    ]


def test_empty_chunks_add_nothing_and_done_metadata_is_kept() -> None:
    done = Done(3, "length", Usage(), {"citations": [1]})
    parts = parts_of([Start(1, "m", "a"), Chunk(2, ""), done])
    assert types(parts) == ["start", "start-step", "finish-step", "finish"]
    assert parts[-1]["finishReason"] == "length"
    assert parts[-1]["messageMetadata"]["metadata"] == {"citations": [1]}


def test_tool_results_then_text_begin_a_new_step() -> None:
    parts = parts_of(
        [
            Start(1, "m", "a"),
            Chunk(2, "Looking."),
            ToolCalled(3, "c1", "weather", '{"city": "Paris"}'),
            ToolCalled(4, "c2", "clock", ""),
            ToolReturned(5, "c1", "weather", '{"temp": 21}', False),
            ToolReturned(6, "c2", "clock", "12:00", False),
            Chunk(7, "Warm."),
            Done(8, "stop", Usage()),
        ]
    )
    assert types(parts) == [
        "start",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "tool-input-available",
        "tool-input-available",
        "tool-output-available",
        "tool-output-available",
        "finish-step",
        "start-step",
        "text-start",
        "text-delta",
        "text-end",
        "finish-step",
        "finish",
    ]
    assert parts[5] == {
        "type": "tool-input-available",
        "toolCallId": "c1",
        "toolName": "weather",
        "input": {"city": "Paris"},
    }
    assert parts[6]["input"] == {}
    assert parts[7] == {"type": "tool-output-available", "toolCallId": "c1", "output": {"temp": 21}}
    assert parts[8]["output"] == "12:00"
    assert parts[11] == {"type": "text-start", "id": "text-7"}


def test_a_tool_call_after_tool_results_begins_a_new_step() -> None:
    parts = parts_of(
        [
            Start(1, "m", "a"),
            ToolCalled(2, "c1", "t", "{}"),
            ToolReturned(3, "c1", "t", "x", False),
            ToolCalled(4, "c2", "t", "{}"),
        ]
    )
    assert types(parts)[-3:] == ["finish-step", "start-step", "tool-input-available"]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a": 1}', {"type": "tool-input-available", "input": {"a": 1}}),
        ("  ", {"type": "tool-input-available", "input": {}}),
        ("[1, 2]", {"type": "tool-input-available", "input": [1, 2]}),
        (
            '{"a": ',
            {
                "type": "tool-input-error",
                "input": '{"a": ',
                "errorText": "The tool arguments are not valid JSON.",
            },
        ),
    ],
)
def test_tool_input(arguments: str, expected: dict[str, Any]) -> None:
    part = event_parts(ToolCalled(2, "c1", "calc", arguments), REF, PartsState())[0][0]
    assert part == {"toolCallId": "c1", "toolName": "calc", **expected}


@pytest.mark.parametrize(
    ("result", "is_error", "expected"),
    [
        ('{"a": 1}', False, {"type": "tool-output-available", "output": {"a": 1}}),
        ("[1, 2]", False, {"type": "tool-output-available", "output": [1, 2]}),
        ("plain words", False, {"type": "tool-output-available", "output": "plain words"}),
        ("42", False, {"type": "tool-output-available", "output": "42"}),
        ('"quoted"', False, {"type": "tool-output-available", "output": '"quoted"'}),
        ("no such city", True, {"type": "tool-output-error", "errorText": "no such city"}),
    ],
)
def test_tool_output(result: str, is_error: bool, expected: dict[str, Any]) -> None:
    part = event_parts(ToolReturned(3, "c1", "calc", result, is_error), REF, PartsState())[0][0]
    assert part == {"toolCallId": "c1", **expected}


def test_a_failure_closes_the_text_then_errors_and_finishes() -> None:
    failed = Failed(3, "upstream_error", "The model failed.", True)
    parts = parts_of([Start(1, "m", "a"), Chunk(2, "Hi"), failed])
    assert parts[-5:] == [
        {"type": "text-end", "id": "text-2"},
        {"type": "finish-step"},
        {
            "type": "message-metadata",
            "messageMetadata": {"error": {"code": "upstream_error", "retryable": True}},
        },
        {"type": "error", "errorText": "The model failed."},
        {"type": "finish", "finishReason": "error"},
    ]


def test_a_cancelled_answer_aborts_then_finishes() -> None:
    parts = parts_of([Start(1, "m", "a"), Chunk(2, "Hi"), Done(3, "cancelled", Usage())])
    assert types(parts)[-4:] == ["text-end", "finish-step", "abort", "finish"]
    assert parts[-2] == {"type": "abort", "reason": "cancelled"}
    assert parts[-1]["finishReason"] == "other"
    assert parts[-1]["messageMetadata"]["finishReason"] == "cancelled"


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("stop", "stop"), ("length", "length"), ("tool_calls", "tool-calls"), ("cancelled", "other")],
)
def test_finish_reasons(ours: Any, theirs: str) -> None:
    parts, _ = event_parts(Done(2, ours, Usage()), REF, PartsState())
    assert parts[-1]["finishReason"] == theirs


def test_a_client_that_fell_behind_is_told_so() -> None:
    parts = fell_behind_parts(PartsState(text_id="text-2"))
    assert types(parts) == ["text-end", "finish-step", "message-metadata", "error", "finish"]
    assert parts[2]["messageMetadata"]["error"]["code"] == "slow_client"


def test_sse_data_is_one_line_per_part() -> None:
    text = sse_data([{"type": "text-delta", "id": "t", "delta": "é\n"}, {"type": "finish"}])
    assert text == (
        'data: {"type":"text-delta","id":"t","delta":"é\\n"}\n\ndata: {"type":"finish"}\n\n'
    )
    assert DONE_LINE == "data: [DONE]\n\n"


# Any code point, lone surrogates included, with quotes, backslashes and control characters
# drawn often.
any_text = st.text(st.characters(exclude_categories=()) | st.sampled_from('"\\\x00\x1fé'))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    content=any_text,
    state=st.builds(PartsState, st.none() | any_text, st.booleans()),
)
def test_a_text_chunk_line_is_the_sse_data_of_its_parts(content: str, state: PartsState) -> None:
    chunk = Chunk(2, content)
    parts, after = event_parts(chunk, REF, state)
    assert event_data(chunk, REF, state) == (sse_data(parts), after)


def test_the_request_maps_to_a_completion() -> None:
    body = {
        "id": "chat_1-A",
        "messages": [
            user_message("earlier"),
            {"id": "a1", "role": "assistant", "parts": [{"type": "text", "text": "ok"}]},
            {
                "id": "u2",
                "role": "user",
                "parts": [
                    {"type": "text", "text": "first line"},
                    {"type": "file", "mediaType": "image/png", "url": "data:,"},
                    {"type": "text", "text": "second line"},
                ],
            },
        ],
        "trigger": "submit-message",
        "messageId": None,
        "model": "fake",
        "agent": "pirate",
        "temperature": 0.5,
        "unrelated": "ignored",
    }
    request = chat_request(body, "key-1")
    assert request.message == "first line\nsecond line"
    assert request.conversation_id == "chat_1-A"
    assert (request.model, request.agent, request.temperature) == ("fake", "pirate", 0.5)
    assert request.stream and request.idempotency_key == "key-1"
    assert request.conversation_history is None and request.id is None


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"messages": [user_message("x")]}, "'id' (the chat id)"),
        ({"id": "a/b", "messages": [user_message("x")]}, "'id' (the chat id)"),
        ({"id": "x" * 65, "messages": [user_message("x")]}, "'id' (the chat id)"),
        ({"id": "c"}, "'messages' must be"),
        ({"id": "c", "messages": []}, "'messages' must be"),
        (
            {"id": "c", "messages": [{"role": "assistant", "parts": []}]},
            "The last message must be a user message",
        ),
        ({"id": "c", "messages": [user_message("  ")]}, "The last message must be a user message"),
        ({"id": "c", "messages": [{"role": "user"}]}, "A UI message needs a 'parts' list."),
        ({"id": "c", "messages": [user_message("x")], "model": 3}, "'model' must be a string"),
    ],
)
def test_bad_requests(body: dict[str, Any], detail: str) -> None:
    with pytest.raises(BadRequest) as caught:
        chat_request(body)
    assert caught.value.message.startswith(detail)


# The `ai` package's own reader, run with Node.


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail(
            "Node.js is not on PATH: these tests read the gateway's streams with the `ai` "
            "package. Install Node.js 20 or newer with npm, then run scripts/install dev."
        )
    installed = JS_DIR / "node_modules" / "ai" / "package.json"
    if not installed.exists():
        pytest.fail(
            "The `ai` package is not installed in tests/js: run scripts/install dev "
            "(it runs npm ci --prefix tests/js; it needs npm)."
        )
    version = json.loads(installed.read_text())["version"]
    if version != PINNED_AI:
        pytest.fail(
            f"tests/js has ai {version}, not the pinned {PINNED_AI}: run scripts/install dev."
        )
    return path


async def run_reader(
    node: str, mode: str, options: Mapping[str, Any] | None = None, stdin: bytes | None = None
) -> dict[str, Any]:
    args = [node, str(READER), mode]
    if options is not None:
        args.append(json.dumps(options))
    process = await asyncio.create_subprocess_exec(
        *args, stdin=PIPE if stdin is not None else DEVNULL, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 40)
    assert process.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


def chat_options(url: str, token: str, chat_id: str, **more: Any) -> dict[str, Any]:
    return {"api": f"{url}/api/chat", "token": token, "chatId": chat_id, **more}


def text_of(message: dict[str, Any]) -> str:
    return "".join(part["text"] for part in message["parts"] if part["type"] == "text")


def new_chat_id() -> str:
    return f"chat-{uuid.uuid4().hex[:10]}"


async def test_the_reader_accepts_every_part_we_emit(node: str) -> None:
    events: list[Event] = [
        Start(1, "m", "a"),
        Chunk(2, "Looking."),
        ToolCalled(3, "c1", "weather", '{"city": "Paris"}'),
        ToolCalled(4, "c2", "weather", "{broken"),
        ToolReturned(5, "c1", "weather", '{"temp": 21}', False),
        ToolReturned(6, "c2", "weather", "bad arguments", True),
        Chunk(7, "Warm."),
        Done(8, "cancelled", Usage(1, 2), {"citations": []}),
    ]
    stream = sse_data(parts_of(events)) + DONE_LINE
    result = await run_reader(node, "parse", stdin=stream.encode())
    assert result["errors"] == [] and result["valid"] is True
    message = result["message"]
    assert message["id"] == "gen_abc" and message["role"] == "assistant"
    assert message["metadata"]["finishReason"] == "cancelled"
    assert [p["type"] for p in message["parts"]] == [
        "step-start",
        "text",
        "tool-weather",
        "tool-weather",
        "step-start",
        "text",
    ]
    good, bad = message["parts"][2:4]
    assert good["state"] == "output-available" and good["output"] == {"temp": 21}
    assert good["input"] == {"city": "Paris"}
    assert bad["state"] == "output-error" and bad["errorText"] == "bad arguments"
    assert bad["rawInput"] == "{broken"


async def test_use_chat_gets_a_streamed_answer(
    gateway: str, token: Mint, node: str, conversations: ConversationStore
) -> None:
    chat_id = new_chat_id()
    options = chat_options(gateway, token(), chat_id, text="hello there", body={"model": "fake"})
    result = await run_reader(node, "chat", options)
    assert result["status"] == "ready" and result["error"] is None and result["valid"] is True
    request = result["requests"][0]
    assert request["status"] == 200
    assert request["headers"]["x-vercel-ai-ui-message-stream"] == "v1"
    assert request["headers"]["content-type"].startswith("text/event-stream")
    assert request["body"]["id"] == chat_id and request["body"]["trigger"] == "submit-message"
    assert request["body"]["model"] == "fake"
    user, answer = result["messages"]
    assert user["role"] == "user" and answer["role"] == "assistant"
    assert text_of(answer) == "You said: hello there"
    assert answer["id"].startswith("gen_") and answer["id"] == answer["metadata"]["generationId"]
    assert answer["metadata"]["conversationId"] == chat_id
    assert answer["metadata"]["model"] == "fake" and answer["metadata"]["agent"] == "chat"
    assert answer["metadata"]["usage"]["totalTokens"] > 0
    assert result["finish"]["finishReason"] == "stop" and not result["finish"]["isError"]
    chunk_types = [c["type"] for c in result["chunks"]]
    assert chunk_types[:3] == ["start", "start-step", "text-start"]
    assert chunk_types[-3:] == ["text-end", "finish-step", "finish"]
    stored = await conversations.messages("alice", chat_id)
    assert [m.content for m in stored] == ["hello there", "You said: hello there"]


async def test_the_next_message_continues_the_conversation(
    gateway: str, token: Mint, node: str, fake_upstream: FakeUpstream
) -> None:
    chat_id = new_chat_id()
    first = await run_reader(node, "chat", chat_options(gateway, token(), chat_id, text="one"))
    options = chat_options(gateway, token(), chat_id, text="two", messages=first["messages"])
    second = await run_reader(node, "chat", options)
    assert second["status"] == "ready"
    assert [text_of(m) for m in second["messages"]] == [
        "one",
        "You said: one",
        "two",
        "You said: two",
    ]
    assert [m["content"] for m in fake_upstream.requests[-1].messages] == [
        "one",
        "You said: one",
        "two",
    ]


class ToolScript:
    """An agent that uses two tools, one of which fails."""

    name = "tools"

    async def run(self, given: AgentInput) -> AsyncIterator[AgentEvent]:
        yield TextDelta("Let me look.")
        yield ToolCall("call_1", "weather", '{"city": "Paris"}')
        yield ToolCall("call_2", "weather", '{"city": "Atlantis"}')
        yield ToolResult("call_1", "weather", '{"temp": 21}')
        yield ToolResult("call_2", "weather", "No such city.", is_error=True)
        yield TextDelta("It is 21 in Paris.")
        yield Finish("stop", Usage(3, 9))


@pytest.fixture
def with_tool_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateways started in this test also have the agent `tools` (a ToolScript)."""

    def with_tools(
        settings: Settings, tools: WorkerPool
    ) -> Mapping[str, tuple[Agent, AgentConfig]]:
        return {**build_agents(settings, tools), "tools": (ToolScript(), AgentConfig("tools"))}

    monkeypatch.setattr("gateway.services.build_agents", with_tools)


@pytest.mark.usefixtures("with_tool_agent")
async def test_tool_parts_reach_use_chat(
    start_gateway: GatewayFactory, token: Mint, node: str
) -> None:
    with start_gateway() as url:
        options = chat_options(
            url, token(), new_chat_id(), text="weather?", body={"agent": "tools"}
        )
        result = await run_reader(node, "chat", options)
    assert result["status"] == "ready" and result["valid"] is True
    answer = result["messages"][-1]
    assert [p["type"] for p in answer["parts"]] == [
        "step-start",
        "text",
        "tool-weather",
        "tool-weather",
        "step-start",
        "text",
    ]
    paris, atlantis = answer["parts"][2:4]
    assert paris["toolCallId"] == "call_1" and paris["state"] == "output-available"
    assert paris["input"] == {"city": "Paris"} and paris["output"] == {"temp": 21}
    assert atlantis["state"] == "output-error" and atlantis["errorText"] == "No such city."
    assert atlantis["input"] == {"city": "Atlantis"}
    assert text_of(answer) == "Let me look.It is 21 in Paris."


async def test_the_tools_agent_through_use_chat(gateway: str, token: Mint, node: str) -> None:
    text = '{"expression": "6*7"}'  # the fake model calls the first tool with this
    options = chat_options(gateway, token(), new_chat_id(), text=text, body={"agent": "tools"})
    result = await run_reader(node, "chat", options)
    assert result["status"] == "ready" and result["valid"] is True
    answer = result["messages"][-1]
    assert [p["type"] for p in answer["parts"]] == [
        "step-start",
        "tool-calculate",
        "step-start",
        "text",
    ]
    call = answer["parts"][1]
    assert call["state"] == "output-available"
    assert call["input"] == {"expression": "6*7"} and call["output"] == "42"
    assert text_of(answer) == "Result: 42"


async def test_a_failed_answer_is_an_error_in_use_chat(
    gateway: str, token: Mint, node: str
) -> None:
    options = chat_options(
        gateway, token(), new_chat_id(), text="a b c", body={"model": "fake-drop2"}
    )
    result = await run_reader(node, "chat", options)
    error = next(c for c in result["chunks"] if c["type"] == "error")
    assert result["status"] == "error" and result["error"] == error["errorText"]
    assert result["finish"]["isError"] is True
    assert text_of(result["messages"][-1]) == "You said:"
    metadata = next(c for c in result["chunks"] if c["type"] == "message-metadata")
    assert metadata["messageMetadata"]["error"]["code"] == "upstream_error"
    assert [c["type"] for c in result["chunks"]][-3:] == [
        "finish-step",
        "message-metadata",
        "error",
    ]


async def test_a_refused_request_is_an_error_in_use_chat(
    gateway: str, token: Mint, node: str
) -> None:
    options = chat_options(gateway, token(), new_chat_id(), text="x", body={"model": "nope"})
    result = await run_reader(node, "chat", options)
    assert result["status"] == "error" and result["requests"][0]["status"] == 400
    assert json.loads(result["error"])["error"] == "bad_request"
    assert "Unknown model 'nope'" in result["error"]


async def post_chat(url: str, body: Any, token: str | None = None) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(timeout=20) as client:
        content = body if isinstance(body, str) else json.dumps(body)
        return await client.post(f"{url}/api/chat", content=content, headers=headers)


def ui_parts(body: str) -> list[Part]:
    """The parts of a whole UI message stream; checks it ends with [DONE]."""
    blocks = [b for b in body.split("\n\n") if b and not b.startswith(":")]
    assert blocks[-1] == "data: [DONE]"
    return [json.loads(block.removeprefix("data: ")) for block in blocks[:-1]]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{broken", 400, "bad_request"),
        ({"id": "bad id", "messages": [user_message("x")]}, 400, "bad_request"),
        ({"id": "ok", "messages": [{"role": "assistant", "parts": []}]}, 400, "bad_request"),
        (
            {"id": "alices-chat", "messages": [user_message("x")], "model": "nope"},
            400,
            "bad_request",
        ),
    ],
)
async def test_errors_before_the_stream_are_json(
    gateway: str, token: Mint, body: Any, status: int, code: str
) -> None:
    await post_chat(gateway, {"id": "alices-chat", "messages": [user_message("mine")]}, token())
    response = await post_chat(gateway, body, token("bob"))
    assert response.status_code == status
    assert response.json()["error"] == code and response.json()["timestamp"].endswith("Z")


async def test_no_token_is_401(gateway: str) -> None:
    response = await post_chat(gateway, {"id": "c", "messages": [user_message("x")]})
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    async with httpx2.AsyncClient() as client:
        resumed = await client.get(f"{gateway}/api/chat/c/stream")
    assert resumed.status_code == 401


async def test_a_model_that_cannot_stream_sends_one_delta(gateway: str, token: Mint) -> None:
    body = {"id": new_chat_id(), "messages": [user_message("whole")], "model": "fake-whole"}
    response = await post_chat(gateway, body, token())
    assert response.status_code == 200
    deltas = [p["delta"] for p in ui_parts(response.text) if p["type"] == "text-delta"]
    assert deltas == ["You said: whole"]


def with_slow_model(settings: Settings) -> dict[str, Any]:
    slow = replace(settings.models["fake-i20-n200"], name=SLOW, upstream_model=SLOW)
    return {"models": {**settings.models, SLOW: slow}}


@pytest.fixture
def slow_gateway(start_gateway: GatewayFactory, settings: Settings) -> Iterator[str]:
    with start_gateway(**with_slow_model(settings)) as url:
        yield url


async def read_parts_until(
    url: str, token: str, body: dict[str, Any], stop: Callable[[list[Part]], bool]
) -> list[Part]:
    """POST /api/chat and read parts until `stop` says so; then drop the stream."""
    parts: list[Part] = []
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        client.stream(
            "POST",
            f"{url}/api/chat",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                parts.append(json.loads(line[6:]))
                if stop(parts):
                    break
    return parts


async def test_cancelling_the_generation_aborts_the_stream(slow_gateway: str, token: Mint) -> None:
    body = {"id": new_chat_id(), "messages": [user_message("x")], "model": SLOW}
    parts: list[Part] = []
    async with (
        httpx2.AsyncClient(timeout=30) as client,
        client.stream(
            "POST",
            f"{slow_gateway}/api/chat",
            json=body,
            headers={"Authorization": f"Bearer {token()}"},
        ) as response,
    ):
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data: {"):
                parts.append(json.loads(line[6:]))
            if parts and parts[-1]["type"] == "text-delta":
                break
        cancelled = await client.post(
            f"{slow_gateway}/generations/{parts[0]['messageId']}/cancel",
            headers={"Authorization": f"Bearer {token()}"},
        )
        assert cancelled.status_code == 202
        rest = [line async for line in lines if line]
    assert rest[-1] == "data: [DONE]"
    tail = [json.loads(line[6:]) for line in rest[:-1]]
    assert types(tail)[-4:] == ["text-end", "finish-step", "abort", "finish"]
    assert tail[-1]["finishReason"] == "other"


async def test_on_disconnect_cancel_applies_to_chat_streams(
    start_gateway: GatewayFactory,
    settings: Settings,
    token: Mint,
    conversations: ConversationStore,
) -> None:
    chat_id = new_chat_id()
    with start_gateway(on_disconnect="cancel", **with_slow_model(settings)) as url:
        body = {"id": chat_id, "messages": [user_message("x")], "model": SLOW}
        await read_parts_until(url, token(), body, lambda p: p[-1]["type"] == "text-delta")
        for _ in range(100):
            stored = await conversations.messages("alice", chat_id)
            if len(stored) == 2:
                break
            await asyncio.sleep(0.05)
    assert stored[-1].status == "cancelled"


# Resume: GET /api/chat/{id}/stream.


async def get_resume(url: str, chat_id: str, token: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as client:
        return await client.get(
            f"{url}/api/chat/{chat_id}/stream", headers={"Authorization": f"Bearer {token}"}
        )


async def test_resume_is_204_when_nothing_runs(slow_gateway: str, token: Mint, node: str) -> None:
    finished = new_chat_id()
    await post_chat(slow_gateway, {"id": finished, "messages": [user_message("x")]}, token())
    bobs = new_chat_id()
    body = {"id": bobs, "messages": [user_message("x")], "model": SLOW}
    await read_parts_until(slow_gateway, token("bob"), body, lambda p: len(p) == 1)
    for chat_id in (new_chat_id(), finished, bobs):
        response = await get_resume(slow_gateway, chat_id, token())
        assert response.status_code == 204, chat_id
    assert (await get_resume(slow_gateway, "bad.id", token())).status_code == 400
    mine = [user_message("x"), {"id": "a", "role": "assistant", "parts": []}]
    options = chat_options(slow_gateway, token(), finished, messages=mine)
    result = await run_reader(node, "resume", options)
    assert result["status"] == "ready" and result["error"] is None
    assert result["requests"][0]["status"] == 204
    assert result["requests"][0]["url"] == f"{slow_gateway}/api/chat/{finished}/stream"
    assert result["messages"] == mine


@pytest.mark.parametrize("where", ["same instance", "other instance"])
async def test_resume_replays_from_the_start_and_follows_live(
    start_gateway: GatewayFactory, settings: Settings, token: Mint, node: str, where: str
) -> None:
    slow = with_slow_model(settings)
    chat_id = new_chat_id()
    with start_gateway(**slow) as first, start_gateway(**slow) as second:
        body = {"id": chat_id, "messages": [user_message("x")], "model": SLOW}
        seen = await read_parts_until(
            first, token(), body, lambda p: types(p).count("text-delta") == 5
        )  # then the page reloads: the stream is dropped, the generation runs on
        resumer = first if where == "same instance" else second
        async with httpx2.AsyncClient() as client:
            view = (
                await client.get(
                    f"{resumer}/conversations/{chat_id}",
                    headers={"Authorization": f"Bearer {token()}"},
                )
            ).json()
        assert view["generation"]["status"] == "running"
        options = chat_options(resumer, token(), chat_id, messages=[user_message("x")])
        result = await run_reader(node, "resume", options)
    assert result["status"] == "ready" and result["error"] is None and result["valid"] is True
    assert result["requests"][0]["headers"]["x-vercel-ai-ui-message-stream"] == "v1"
    user, answer = result["messages"]
    assert user == user_message("x")
    assert answer["id"] == seen[0]["messageId"] == view["generation"]["id"]
    assert text_of(answer) == SLOW_TEXT
    replayed = result["chunks"]
    assert replayed[: len(seen)] == seen  # the same parts, from the start
    assert types(replayed)[-2:] == ["finish-step", "finish"]
    assert result["finish"]["finishReason"] == "stop"
