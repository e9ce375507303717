"""The Responses API end to end, with the official `openai` SDK as the client, against real
gateways on one Redis and the fake upstream."""

from __future__ import annotations

import asyncio
import json
import shutil
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.responses import FunctionToolParam, ResponseCreatedEvent
from pydantic import BaseModel

from gateway.config import Settings
from tests.conftest import GatewayFactory
from tests.support.polling import settle
from tests.upstream import FakeUpstream

Mint = Callable[..., str]
JS_DIR = Path(__file__).parent.parent / "js"
SLOW = "fake-i20-n200"  # 200 tokens over 4 s: still running while a test acts on it
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": False,
}


def sdk(url: str, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=20)


@pytest.fixture
async def clients(
    start_gateway: GatewayFactory, token: Mint
) -> AsyncIterator[tuple[openai.AsyncOpenAI, openai.AsyncOpenAI]]:
    """Alice's SDK on two gateway instances sharing one Redis."""
    with start_gateway() as first, start_gateway() as second:
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(sdk(first, token()))
            b = await stack.enter_async_context(sdk(second, token()))
            yield a, b


async def test_a_whole_response(
    clients: tuple[openai.AsyncOpenAI, Any], fake_upstream: FakeUpstream
) -> None:
    client = clients[0]
    response = await client.responses.create(
        model="fake",
        instructions="Be brief.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "hi there"}]}],
        temperature=0.5,
        metadata={"ticket": "42"},
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.output_text == "You said: hi there"
    assert response.metadata == {"ticket": "42"} and response.instructions == "Be brief."
    assert response.usage is not None and response.usage.output_tokens == 4
    assert response.usage.total_tokens == response.usage.input_tokens + 4
    assert fake_upstream.requests[-1].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi there"},
    ]
    again = await clients[1].responses.retrieve(response.id)  # the other instance
    assert again.model_dump() == response.model_dump()


async def test_a_streamed_response_follows_openais_sequence(
    clients: tuple[openai.AsyncOpenAI, Any],
) -> None:
    stream = await clients[0].responses.create(model="fake", input="a b", stream=True)
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "You said: a b"
    final = events[-1]
    assert final.type == "response.completed" and final.response.output_text == "You said: a b"


async def test_a_background_stream_resumes_on_another_instance_exactly(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI],
) -> None:
    first, second = clients
    stream = await first.responses.create(model=SLOW, input="x", stream=True, background=True)
    seen: list[Any] = []
    async for event in stream:
        seen.append(event)
        if len(seen) == 12:
            break
    await stream.close()  # the client leaves; a background response runs on
    last = seen[-1].sequence_number
    resumed = await second.responses.retrieve(seen[0].response.id, stream=True, starting_after=last)
    rest = [event async for event in resumed]
    numbers = [event.sequence_number for event in seen + rest]
    assert numbers == list(range(len(numbers)))  # no gap, no duplicate
    deltas = [e.delta for e in seen + rest if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "".join(f" t{i}" for i in range(200))
    assert rest[-1].type == "response.completed"


async def test_background_returns_at_once_and_cancels_from_another_instance(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI], fake_upstream: FakeUpstream
) -> None:
    first, second = clients
    before = fake_upstream.count(SLOW)
    queued = await first.responses.create(model=SLOW, input="x", background=True)
    assert queued.status in ("queued", "in_progress") and queued.background is True
    assert await asyncio.to_thread(fake_upstream.arrived, SLOW, before + 1)
    cancelled = await second.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert len(cancelled.output_text) < len(" t0") * 200
    assert (await first.responses.retrieve(queued.id)).status == "cancelled"
    left = fake_upstream.requests[-1].client_left
    assert await asyncio.to_thread(left.wait, 10)  # the upstream request was closed


async def test_a_running_response_is_retrieved_with_its_output_so_far(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI],
) -> None:
    first, second = clients
    queued = await first.responses.create(model=SLOW, input="x", background=True)
    seen: list[Any] = []

    async def some_output() -> bool:
        seen.append(await second.responses.retrieve(queued.id))  # the other instance
        return bool(seen[-1].output_text)

    assert await settle(some_output)
    assert seen[-1].status == "in_progress" and seen[-1].output_text.startswith(" t0")
    assert seen[-1].output[0].status == "in_progress"
    with pytest.raises(openai.BadRequestError) as refused:
        await first.responses.create(model="fake", input="y", previous_response_id=queued.id)
    assert refused.value.code == "previous_response_in_progress"
    await second.responses.cancel(queued.id)


async def test_previous_response_id_continues_its_conversation(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI], fake_upstream: FakeUpstream
) -> None:
    first, second = clients
    one = await first.responses.create(model="fake", input="one")
    two = await second.responses.create(model="fake", input="two", previous_response_id=one.id)
    assert two.previous_response_id == one.id and two.output_text == "You said: two"
    await first.responses.create(model="fake", input="three", previous_response_id=two.id)
    assert fake_upstream.requests[-1].messages == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "You said: one"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "You said: two"},
        {"role": "user", "content": "three"},
    ]
    # From the first again: a branch after its answer, which does not see two or three.
    await second.responses.create(model="fake", input="four", previous_response_id=one.id)
    assert fake_upstream.requests[-1].messages == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "You said: one"},
        {"role": "user", "content": "four"},
    ]


async def test_a_tool_round_trip(
    clients: tuple[openai.AsyncOpenAI, Any], fake_upstream: FakeUpstream
) -> None:
    client = clients[0]
    asked = '{"city": "Paris"}'  # the fake model calls the first tool with this
    first = await client.responses.create(model="fake", input=asked, tools=[WEATHER])
    call = first.output[-1]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == asked
    second = await client.responses.create(
        model="fake",
        tools=[WEATHER],
        tool_choice="auto",
        input=[
            {"role": "user", "content": asked},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": asked,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text == "Result: sunny"
    sent = fake_upstream.requests[-1].messages
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


async def test_another_users_response_is_not_found(
    clients: tuple[openai.AsyncOpenAI, Any], start_gateway: GatewayFactory, token: Mint
) -> None:
    mine = await clients[0].responses.create(model="fake", input="secret")
    with start_gateway() as url:
        async with sdk(url, token("mallory")) as other:
            for ask in (
                other.responses.retrieve(mine.id),
                other.responses.cancel(mine.id),
                other.responses.delete(mine.id),
                other.responses.input_items.list(mine.id),
                other.responses.retrieve("resp_unknown"),
            ):
                with pytest.raises(openai.NotFoundError):
                    await ask
            with pytest.raises(openai.BadRequestError) as refused:
                await other.responses.create(model="fake", input="x", previous_response_id=mine.id)
            assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]


async def test_input_items_and_delete(clients: tuple[openai.AsyncOpenAI, Any]) -> None:
    first, second = clients
    response = await first.responses.create(
        model="fake",
        input=[{"role": "developer", "content": "D"}, {"role": "user", "content": "U"}],
    )
    items = await second.responses.input_items.list(response.id, order="asc")
    assert [item.role for item in items.data] == ["developer", "user"]
    await second.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        await first.responses.retrieve(response.id)


async def test_a_tool_round_trip_by_previous_response_id(
    clients: tuple[openai.AsyncOpenAI, openai.AsyncOpenAI], fake_upstream: FakeUpstream
) -> None:
    first, second = clients
    asked = '{"city": "Oslo"}'
    called = await first.responses.create(
        model="fake", instructions="Use tools.", input=asked, tools=[WEATHER]
    )
    call = called.output[-1]
    assert call.type == "function_call"
    answer = await second.responses.create(
        model="fake",
        previous_response_id=called.id,
        tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "snow"}],
    )
    assert answer.output_text == "Result: snow"
    sent = fake_upstream.requests[-1].messages
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[1]["content"] == asked and sent[2]["tool_calls"][0]["id"] == call.call_id


async def test_the_node_sdk(start_gateway: GatewayFactory, token: Mint) -> None:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "openai").exists():
        pytest.skip("Node.js and tests/js's openai package (scripts/install dev) are needed")
    with start_gateway() as first, start_gateway() as second:
        options = {"first": first, "second": second, "token": token(), "model": "fake-i5-n20"}
        process = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / "responses_sdk.mjs"), json.dumps(options), stdout=PIPE, stderr=PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 40)
    assert process.returncode == 0, err.decode()
    got = json.loads(out)
    tokens = "".join(f" t{i}" for i in range(20))
    assert got["whole"]["status"] == "completed" and got["whole"]["text"] == tokens
    assert got["numbers"] == list(range(len(got["numbers"])))  # resumed on the second
    assert got["types"][-1] == "response.completed" and got["text"] == tokens


async def test_a_background_stream_outlives_its_client_under_on_disconnect_cancel(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(on_disconnect="cancel") as url:
        async with sdk(url, token()) as client:
            stream = await client.responses.create(
                model="fake-i5-n20", input="x", stream=True, background=True
            )
            async for event in stream:
                assert isinstance(event, ResponseCreatedEvent)
                response_id = event.response.id
                break
            await stream.close()
            resumed = await client.responses.retrieve(response_id, stream=True)
            events = [event async for event in resumed]
    assert events[-1].type == "response.completed"  # not cancelled by the client's leaving


async def test_a_bound_refused_while_another_users_response_is_served(
    clients: tuple[openai.AsyncOpenAI, Any], start_gateway: GatewayFactory, token: Mint
) -> None:
    alice = clients[0]
    with start_gateway() as url:
        async with sdk(url, token("bob")) as bob:
            served = await bob.responses.create(model="fake-i5-n20", input="x", stream=True)
            with pytest.raises(openai.BadRequestError) as refused:
                await alice.responses.create(
                    model="fake", input="x", metadata={f"k{i}": "v" for i in range(17)}
                )
            assert refused.value.body["param"] == "metadata"  # type: ignore[index]
            events = [event async for event in served]
    assert events[-1].type == "response.completed"


class Place(BaseModel):
    city: str
    days: int


async def test_structured_outputs_by_text_format(
    start_gateway: GatewayFactory, settings: Settings, token: Mint, fake_upstream: FakeUpstream
) -> None:
    structured = "fake-verbatim-so"  # answers the user's message as it is; takes JSON formats
    model = replace(
        settings.models["fake"],
        name=structured,
        upstream_model=structured,
        structured_outputs=True,
    )
    with start_gateway(models={**settings.models, structured: model}) as url:
        async with sdk(url, token()) as client:
            parsed = await client.responses.parse(
                model=structured, input='{"city": "Lisbon", "days": 3}', text_format=Place
            )
            assert parsed.output_parsed == Place(city="Lisbon", days=3)
            sent = fake_upstream.requests[-1].body["response_format"]
            assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "Place"
            assert parsed.text is not None and parsed.text.format is not None
            assert parsed.text.format.type == "json_schema"
            echoed = await client.responses.create(
                model="echo", input="hi", text={"format": {"type": "json_object"}}
            )
            assert isinstance(json.loads(echoed.output_text), dict)
            with pytest.raises(openai.BadRequestError) as refused:
                await client.responses.create(
                    model="fake", input="x", text={"format": {"type": "json_object"}}
                )
    assert refused.value.body["param"] == "text.format"  # type: ignore[index]
    assert "structured_outputs = true" in refused.value.message


async def test_the_ai_sdks_default_openai_provider(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    """`openai(model)` of @ai-sdk/openai calls the Responses API; its earlier answers come
    back as `item_reference`s."""
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "@ai-sdk" / "openai").exists():
        pytest.skip("Node.js and tests/js's @ai-sdk/openai (scripts/install dev) are needed")
    options = {"url": gateway, "token": token(), "model": "fake"}
    process = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / "ai_sdk_responses.mjs"), json.dumps(options), stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 40)
    assert process.returncode == 0, err.decode()
    got = json.loads(out)
    assert got["whole"]["text"] == "You said: hi there"
    assert got["whole"]["finishReason"] == "stop"
    assert got["again"] == "You said: again"
    # The suite shares the fake upstream: this test's request is the latest "again".
    again = next(
        r for r in reversed(fake_upstream.requests) if r.messages[-1]["content"] == "again"
    )
    assert again.messages == [
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "You said: hi there"},
        {"role": "user", "content": "again"},
    ]
    assert got["streamed"] == {"text": "You said: a b", "finishReason": "stop"}
    assert got["called"] == [{"name": "weather", "input": {"city": "Paris"}}]
    assert set(got["object"]) == {"city", "days"}  # echo's minimal instance of the schema
