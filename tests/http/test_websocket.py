"""The WebSocket protocol end to end: uvicorn on a free port, the real websockets client,
a real Redis and the fake OpenAI upstream driven through the openai SDK."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any, cast

import httpx2
import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from gateway.handlers.expiry import next_step
from gateway.handlers.ws_session import origin_allowed
from gateway.store.conversations import ConversationStore
from tests.client import close_code, connected, open_socket, receive, send, text_of, until_done
from tests.conftest import TEST_SECRET, GatewayFactory, free_port, kinds
from tests.upstream import FakeUpstream

Mint = Callable[..., str]


@pytest.mark.parametrize("carrier", ["subprotocol", "header", "query", "frame"])
async def test_every_token_carrier_authenticates(gateway: str, token: Mint, carrier: str) -> None:
    ws = await open_socket(gateway, token("alice"), carrier=carrier)
    ready = await receive(ws)
    assert ready["type"] == "ready" and ready["protocol"] == 1 and ready["user"] == "alice"
    assert ready["connection_id"].startswith("conn_")
    assert ready["expires_at"] > time.time()
    assert ws.subprotocol == "chat-gateway.v1"
    await ws.close()


def _claims(**changes: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "sub": "alice",
        "exp": int(time.time()) + 3600,
    }  # lives through a full session
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


BAD_TOKENS = {
    "expired": jwt.encode(_claims(exp=int(time.time()) - 10), TEST_SECRET, "HS256"),
    "wrong-signature": jwt.encode(_claims(), "k" * 43, "HS256"),
    "alg-none": jwt.encode(_claims(), cast(Any, None), "none"),
    "no-sub": jwt.encode(_claims(sub=None), TEST_SECRET, "HS256"),
    "malformed": "not.a.token",
}


@pytest.mark.parametrize("name", list(BAD_TOKENS))
@pytest.mark.parametrize("carrier", ["subprotocol", "frame"])
async def test_bad_tokens_close_4401_and_process_nothing(
    gateway: str, fake_upstream: FakeUpstream, name: str, carrier: str
) -> None:
    before = len(fake_upstream.requests)
    ws = await open_socket(gateway, BAD_TOKENS[name], carrier=carrier)
    with contextlib.suppress(ConnectionClosed):  # the server may have closed already
        await send(ws, type="completion", id="r", message="should never run")
    assert await close_code(ws) == 4401
    assert len(fake_upstream.requests) == before


async def test_a_first_frame_that_is_not_auth_closes_4401(gateway: str) -> None:
    ws = await open_socket(gateway, None, carrier="none")
    await send(ws, type="ping")
    assert await close_code(ws) == 4401


async def test_no_auth_frame_in_time_closes_4408(start_gateway: GatewayFactory) -> None:
    with start_gateway(auth_timeout=0.2) as url:
        ws = await open_socket(url, None, carrier="none")
        assert await close_code(ws) == 4408


async def test_a_completion_streams_start_chunks_done(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    ws = await connected(gateway, token())
    await send(
        ws, type="completion", id="r1", message="hello world", temperature=0.3, max_tokens=50
    )
    frames = await until_done(ws, "r1")
    start, done = frames[0], frames[-1]
    assert start["type"] == "start" and start["model"] == "fake" and start["agent"] == "chat"
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert {f["generation_id"] for f in frames} == {start["generation_id"]}
    assert {f["conversation_id"] for f in frames} == {start["conversation_id"]}
    assert all(f["type"] == "chunk" and f["metadata"] == {} for f in frames[1:-1])
    assert text_of(frames) == "You said: hello world"
    assert done["type"] == "done" and done["done"] is True and done["finish_reason"] == "stop"
    assert done["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    sent = fake_upstream.requests[-1].body
    assert sent["temperature"] == 0.3 and sent["max_tokens"] == 50
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert fake_upstream.requests[-1].authorization == "Bearer sk-test"


async def test_max_tokens_is_capped_by_the_model_and_length_is_reported(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="r", message="go", model="fake-capped", max_tokens=500)
    frames = await until_done(ws, "r")
    assert fake_upstream.requests[-1].body["max_tokens"] == 5
    assert frames[-1]["finish_reason"] == "length"
    assert "".join(f["content"] for f in frames if f["type"] == "chunk") == " t0 t1 t2 t3 t4"


async def test_several_completions_are_multiplexed(gateway: str, token: Mint) -> None:
    ws = await connected(gateway, token())
    ids = ["a", "b", "c"]
    for rid in ids:
        await send(ws, type="completion", id=rid, message=rid, model="fake-i5-n20")
    order: list[str] = []
    finished: set[str] = set()
    per_id: dict[str, list[int]] = {rid: [] for rid in ids}
    while finished != set(ids):
        frame = await receive(ws)
        order.append(frame["id"])
        per_id[frame["id"]].append(frame["seq"])
        if frame["done"]:
            finished.add(frame["id"])
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in per_id.values())
    # Interleaved: every stream had frames on the wire before the first one finished.
    first_done = min(len(order) - order[::-1].index(rid) for rid in ids)
    assert set(order[:first_done]) == set(ids)


async def test_cancel_stops_the_upstream_and_ends_with_cancelled(
    gateway: str, token: Mint, fake_upstream: FakeUpstream, conversations: ConversationStore
) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="r", message="long", model="fake-i20-n200")
    frames = [await receive(ws), await receive(ws)]
    assert [f["type"] for f in frames] == ["start", "chunk"]
    await send(ws, type="cancel", id="r")
    frames += await until_done(ws, "r")
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    assert await asyncio.to_thread(fake_upstream.requests[-1].client_left.wait, 10)
    stored = await conversations.messages("alice", done["conversation_id"])
    assert [(m.role, m.status) for m in stored] == [
        ("user", "complete"),
        ("assistant", "cancelled"),
    ]
    assert stored[1].content == text_of(frames)
    await send(ws, type="cancel", id="r")  # idempotent: a finished id is ignored
    await send(ws, type="ping")
    assert await receive(ws) == {"type": "pong"}


async def test_ping_pong(gateway: str, token: Mint) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="ping")
    assert await receive(ws) == {"type": "pong"}


@pytest.mark.parametrize(
    ("raw", "code", "request_id", "done"),
    [
        ("{oops", "bad_request", None, False),
        ('{"type":"dance","id":"x"}', "bad_request", "x", False),
        ('{"type":"completion","id":"m"}', "bad_request", "m", True),
        ('{"type":"completion","id":"e","message":""}', "bad_request", "e", True),
        ('{"type":"completion","id":"u","message":"hi","model":"nope"}', "bad_request", "u", True),
        ('{"type":"completion","id":"g","message":"hi","agent":"nope"}', "bad_request", "g", True),
        ('{"type":"auth","token":"x"}', "unauthorized", None, False),
        # Half a character, where the error would name it (its id) or the store would hold
        # it: refused before either, so the error frame can be written.
        ('{"type":"completion","id":"\\ud800","message":"hi"}', "bad_request", None, False),
        ('{"type":"completion","id":"s","message":"a\\udc00"}', "bad_request", None, False),
        (
            '{"type":"completion","id":"s","message":"hi","model":"\\ud800"}',
            "bad_request",
            None,
            False,
        ),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_open(
    gateway: str, token: Mint, raw: str, code: str, request_id: str | None, done: bool
) -> None:
    ws = await connected(gateway, token())
    await ws.send(raw)
    error = await receive(ws)
    assert error["type"] == "error" and error["code"] == code and error["id"] == request_id
    assert error["done"] is done and error["retryable"] is False and error["message"]
    await send(ws, type="ping")
    assert await receive(ws) == {"type": "pong"}


async def test_unknown_model_lists_the_available_ones(gateway: str, token: Mint) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="u", message="hi", model="nope")
    error = await receive(ws)
    assert "Unknown model 'nope'" in error["message"] and "echo" in error["message"]


async def test_a_duplicate_in_flight_id_is_refused_and_the_first_runs_on(
    gateway: str, token: Mint
) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="a", message="x", model="fake-i5-n20")
    assert (await receive(ws))["type"] == "start"
    await send(ws, type="completion", id="a", message="again")
    frames = await until_done(ws, "a")
    errors = [f for f in frames if f["type"] == "error"]
    assert len(errors) == 1
    assert errors[0]["code"] == "bad_request" and errors[0]["done"] is False
    assert "already running" in errors[0]["message"]
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"
    assert text_of(frames) == "".join(f" t{i}" for i in range(20))


async def test_too_many_concurrent_completions_are_rate_limited(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(max_concurrent_per_connection=1) as url:
        ws = await connected(url, token())
        await send(ws, type="completion", id="a", message="x", model="fake-i5-n20")
        await send(ws, type="completion", id="b", message="y")
        errors = await until_done(ws, "b")
        assert errors[0]["code"] == "rate_limited" and errors[0]["retryable"] is True
        assert errors[0]["done"] is True
        assert (await until_done(ws, "a"))[-1]["type"] == "done"


async def test_an_upstream_failure_mid_stream_keeps_what_was_streamed(
    gateway: str, token: Mint, conversations: ConversationStore
) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="r", message="one two three four", model="fake-drop2")
    frames = await until_done(ws, "r")
    error = frames[-1]
    assert kinds(frames) == ["start", "chunk", "error"]
    assert error["code"] == "upstream_error" and error["retryable"] is True
    assert error["done"] is True and error["seq"] == len(frames)
    stored = await conversations.messages("alice", error["conversation_id"])
    assert stored[-1].status == "incomplete" and stored[-1].content == "You said:"
    await send(ws, type="ping")
    assert await receive(ws) == {"type": "pong"}


@pytest.mark.parametrize(
    ("model", "code", "retryable"),
    [
        ("fake-err500", "upstream_unavailable", True),
        ("fake-err401", "upstream_credentials", False),
        ("fake-err429", "rate_limited", True),
        ("fake-hang", "upstream_unavailable", True),
        ("fake-ctx", "context_too_long", False),
    ],
)
async def test_upstream_errors_before_the_first_token(
    start_gateway: GatewayFactory, token: Mint, model: str, code: str, retryable: bool
) -> None:
    with start_gateway(upstream_read_timeout=0.5) as url:
        ws = await connected(url, token())
        await send(ws, type="completion", id="r", message="x", model=model)
        frames = await until_done(ws, "r")
        assert frames[0]["type"] == "start"
        assert frames[-1]["code"] == code
        assert frames[-1]["retryable"] is retryable
        assert "sk-test" not in frames[-1]["message"]
        assert "8192" not in frames[-1]["message"]  # the upstream's own words stay upstream


async def test_a_non_streaming_model_answers_in_one_chunk(gateway: str, token: Mint) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="r", message="all at once", model="fake-whole")
    frames = await until_done(ws, "r")
    assert [f["type"] for f in frames] == ["start", "chunk", "done"]
    assert frames[1]["content"] == "You said: all at once"


async def test_binary_frames_close_1003(gateway: str, token: Mint) -> None:
    ws = await connected(gateway, token())
    await ws.send(b"\x00\x01")
    assert await close_code(ws) == 1003


async def test_frames_over_the_limit_close_1009(start_gateway: GatewayFactory, token: Mint) -> None:
    with start_gateway(max_frame_bytes=2048) as url:
        ws = await connected(url, token())
        await send(ws, type="completion", id="r", message="x" * 4096)
        assert await close_code(ws) == 1009


async def test_shutdown_closes_1012_and_stores_the_partial_answer(
    start_gateway: GatewayFactory, token: Mint, conversations: ConversationStore
) -> None:
    server = start_gateway(shutdown_drain_seconds=0.2)
    url = server.__enter__()
    try:
        ws = await connected(url, token())
        await send(
            ws,
            type="completion",
            id="r",
            message="x",
            model="fake-i20-n200",
            conversation_id="shutdown-1",
        )
        assert [(await receive(ws))["type"] for _ in range(2)] == ["start", "chunk"]
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)
    assert await close_code(ws) == 1012
    stored = await conversations.messages("alice", "shutdown-1")
    assert stored[-1].role == "assistant" and stored[-1].status == "incomplete"
    assert stored[-1].content.startswith(" t0")


async def test_history_is_sent_upstream_on_the_next_turn(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="1", message="first", conversation_id="hist-1")
    first = await until_done(ws, "1")
    assert first[0]["conversation_id"] == "hist-1"
    await send(
        ws, type="completion", id="2", message="second", conversation_id="hist-1", agent="pirate"
    )
    await until_done(ws, "2")
    assert fake_upstream.requests[-1].messages == [
        {"role": "system", "content": "Talk like a pirate."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "You said: first"},
        {"role": "user", "content": "second"},
    ]


async def test_a_new_conversation_gets_an_id_that_later_turns_reuse(
    gateway: str, token: Mint, conversations: ConversationStore
) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="1", message="hi", model="echo")
    conversation_id = (await until_done(ws, "1"))[0]["conversation_id"]
    assert conversation_id.startswith("conv_")
    stored = await conversations.messages("alice", conversation_id)
    assert [(m.role, m.content, m.status) for m in stored] == [
        ("user", "hi", "complete"),
        ("assistant", "hi", "complete"),
    ]
    assert stored[1].model == "echo" and stored[1].agent == "chat"
    assert stored[1].usage is not None and stored[1].usage.completion_tokens == 1


async def test_given_history_replaces_the_stored_one_for_that_call(
    gateway: str, token: Mint, fake_upstream: FakeUpstream, conversations: ConversationStore
) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="1", message="stored", conversation_id="repl")
    await until_done(ws, "1")
    await send(
        ws,
        type="completion",
        id="2",
        message="now",
        conversation_id="repl",
        conversation_history=[{"role": "user", "content": "given"}],
    )
    await until_done(ws, "2")
    assert fake_upstream.requests[-1].messages == [
        {"role": "user", "content": "given"},
        {"role": "user", "content": "now"},
    ]
    assert len(await conversations.messages("alice", "repl")) == 4


async def test_another_users_conversation_id_is_a_conversation_of_ones_own(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    alice = await connected(gateway, token("alice"))
    await send(alice, type="completion", id="1", message="mine", conversation_id="private")
    await until_done(alice, "1")
    bob = await connected(gateway, token("bob"))
    await send(bob, type="completion", id="1", message="let me in", conversation_id="private")
    frames = await until_done(bob, "1")
    assert frames[-1]["type"] == "done" and frames[0]["conversation_id"] == "private"
    # The model saw bob's message alone, none of alice's conversation.
    assert fake_upstream.requests[-1].messages == [{"role": "user", "content": "let me in"}]


async def test_a_disconnect_does_not_cancel_the_generation(
    gateway: str, token: Mint, fake_upstream: FakeUpstream, conversations: ConversationStore
) -> None:
    ws = await connected(gateway, token())
    await send(
        ws, type="completion", id="r", message="x", model="fake-i5-n20", conversation_id="gone-away"
    )
    assert (await receive(ws))["type"] == "start"
    await ws.close()
    assert await asyncio.to_thread(fake_upstream.requests[-1].finished.wait, 10)
    # The answer is stored right after the upstream's last line; read until it is there.
    for _ in range(100):
        stored = await conversations.messages("alice", "gone-away")
        if len(stored) == 2:
            break
        await asyncio.sleep(0.05)
    assert stored[-1].status == "complete" and stored[-1].content.count(" t") == 20


async def test_on_disconnect_cancel_stops_what_the_socket_started(
    start_gateway: GatewayFactory,
    token: Mint,
    fake_upstream: FakeUpstream,
    conversations: ConversationStore,
) -> None:
    with start_gateway(on_disconnect="cancel") as url:
        ws = await connected(url, token())
        await send(
            ws,
            type="completion",
            id="r",
            message="x",
            model="fake-i20-n200",
            conversation_id="leave-cancel",
        )
        assert [(await receive(ws))["type"] for _ in range(2)] == ["start", "chunk"]
        upstream_request = fake_upstream.requests[-1]
        await ws.close()
        assert await asyncio.to_thread(upstream_request.client_left.wait, 10)
        for _ in range(100):  # the cancelled answer is stored right after the upstream closes
            stored = await conversations.messages("alice", "leave-cancel")
            if len(stored) == 2:
                break
            await asyncio.sleep(0.05)
        assert stored[-1].status == "cancelled"


async def test_on_disconnect_cancel_applies_to_sse_streams(
    start_gateway: GatewayFactory, token: Mint, fake_upstream: FakeUpstream
) -> None:
    with start_gateway(on_disconnect="cancel") as url:
        async with (
            httpx2.AsyncClient(timeout=30) as client,
            client.stream(
                "POST",
                f"{url}/completion",
                json={"message": "x", "model": "fake-i20-n200", "stream": True},
                headers={"Authorization": f"Bearer {token()}"},
            ) as response,
        ):
            async for line in response.aiter_lines():
                if '"type":"chunk"' in line:
                    break
        assert await asyncio.to_thread(fake_upstream.requests[-1].client_left.wait, 10)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_client_tools_pass_through_to_the_model(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    ws = await connected(gateway, token())
    await send(
        ws,
        type="completion",
        id="r",
        message='{"city": "Oslo"}',
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        stop=["\n\n"],
    )
    frames = await until_done(ws, "r")
    assert [f["type"] for f in frames] == ["start", "tool_call", "done"]
    call = frames[1]
    assert call["name"] == "weather" and call["arguments"] == '{"city": "Oslo"}'
    assert call["call_id"].startswith("call_")
    assert frames[-1]["finish_reason"] == "tool_calls"
    sent = fake_upstream.requests[-1].body
    assert sent["tools"] == [WEATHER_TOOL] and sent["tool_choice"] == "auto"
    assert sent["stop"] == ["\n\n"]


async def test_a_non_streaming_model_passes_tool_calls_through(gateway: str, token: Mint) -> None:
    ws = await connected(gateway, token())
    await send(
        ws, type="completion", id="r", message="{}", model="fake-whole", tools=[WEATHER_TOOL]
    )
    frames = await until_done(ws, "r")
    assert [f["type"] for f in frames] == ["start", "tool_call", "done"]
    assert frames[-1]["finish_reason"] == "tool_calls"


async def test_a_replay_longer_than_the_outbox_is_paced_not_dropped(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(max_queued_frames=16) as a, start_gateway(max_queued_frames=16) as b:
        ws = await connected(a, token())
        await send(ws, type="completion", id="r", message="x", model="fake-i2-n100")
        first = await receive(ws)
        for url in (a, b):  # while it runs here, then from the log elsewhere
            reader = await connected(url, token())
            await send(
                reader, type="resume", generation_id=first["generation_id"], after=0, id="all"
            )
            assert (await receive(reader))["type"] == "resumed"
            frames = await until_done(reader, "all")
            assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
            assert "".join(f.get("content", "") for f in frames) == "".join(
                f" t{i}" for i in range(100)
            )
        await until_done(ws, "r")  # a client that stops reading cannot close cleanly either


async def test_a_refused_request_leaves_its_idempotency_key_free(gateway: str, token: Mint) -> None:
    bob = await connected(gateway, token("bob"))
    await send(
        bob, type="completion", id="1", message="x", model="nope", idempotency_key="retry-me"
    )
    assert (await receive(bob))["code"] == "bad_request"
    await send(bob, type="completion", id="2", message="x", idempotency_key="retry-me")
    frames = await until_done(bob, "2")
    assert frames[-1]["type"] == "done"


async def test_a_refused_resume_leaves_no_trace(gateway: str, token: Mint) -> None:
    ws = await connected(gateway, token())
    await send(ws, type="completion", id="r", message="x", model="fake-i20-n200")
    generation_id = (await receive(ws))["generation_id"]
    await send(ws, type="resume", generation_id=generation_id, after=9999, id="again")
    error = await receive(ws)
    while error["type"] != "error":  # chunks of "r" may come first
        error = await receive(ws)
    assert error["code"] == "bad_request" and error["id"] == "again"
    await send(ws, type="resume", generation_id=generation_id, after=0, id="again")
    frame = await receive(ws)
    while frame.get("id") != "again":
        frame = await receive(ws)
    assert frame["type"] == "resumed"  # the id was not left claimed


async def test_an_unreachable_store_is_a_retryable_unavailable_error(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(redis_url=f"redis://127.0.0.1:{free_port()}/0") as url:
        ws = await connected(url, token())
        await send(ws, type="completion", id="r", message="x")
        error = await receive(ws)
        assert (error["code"], error["retryable"], error["done"]) == ("unavailable", True, True)
        await send(ws, type="ping")
        assert await receive(ws) == {"type": "pong"}


@pytest.mark.parametrize(
    ("origin", "allowed", "expected"),
    [
        (None, (), True),
        ("https://evil.example", (), True),
        (None, ("https://chat.example",), True),
        ("https://chat.example", ("https://chat.example",), True),
        ("https://evil.example", ("https://chat.example",), False),
        ("https://evil.example", ("*",), True),
    ],
)
def test_origin_rule(origin: str | None, allowed: tuple[str, ...], expected: bool) -> None:
    assert origin_allowed(origin, allowed) is expected


async def test_a_foreign_origin_closes_4403_and_cors_follows_the_same_list(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(allowed_origins=("https://chat.example",)) as url:
        evil = await open_socket(url, token(), origin="https://evil.example")
        assert await close_code(evil) == 4403
        good = await open_socket(url, token(), origin="https://chat.example")
        assert (await receive(good))["type"] == "ready"
        async with httpx2.AsyncClient() as client:
            allowed = await client.options(
                f"{url}/completion",
                headers={
                    "Origin": "https://chat.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization,content-type",
                },
            )
            refused = await client.options(
                f"{url}/completion",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            )
        assert allowed.headers["access-control-allow-origin"] == "https://chat.example"
        assert "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize(
    ("now", "warned", "expected"),
    [
        (0, False, ("wait", 40)),  # expires at 100, warn 60 s before, grace 10 s
        (40, False, ("warn", 40)),
        (41, True, ("wait", 110)),
        (110, True, ("expire", 110)),
        (120, False, ("expire", 120)),
    ],
)
def test_expiry_schedule(now: float, warned: bool, expected: tuple[str, float]) -> None:
    assert next_step(now, 100, warned, 60, 10) == expected


async def test_an_expiring_token_is_warned_then_closes_4401(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(token_expiry_warning=5, token_expiry_grace=0.2) as url:
        ws = await connected(url, token(ttl=2))
        warning = await receive(ws)
        assert warning["type"] == "token_expiring" and 0 <= warning["expires_in"] <= 2
        assert await close_code(ws) == 4401


async def test_a_token_renewed_on_the_live_socket_keeps_it_open(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(token_expiry_warning=5, token_expiry_grace=0.2) as url:
        ws = await connected(url, token(ttl=2))
        assert (await receive(ws))["type"] == "token_expiring"
        await send(ws, type="auth", token="not-a-token")
        refused = await receive(ws)
        assert refused["type"] == "error" and refused["code"] == "unauthorized"
        await send(ws, type="auth", token=token(ttl=600))
        renewed = await receive(ws)
        assert renewed["type"] == "authenticated" and renewed["expires_at"] > time.time() + 500
        await asyncio.sleep(2.5)  # let the first token's expiry and grace pass on the clock
        await send(ws, type="ping")
        assert await receive(ws) == {"type": "pong"}


async def test_a_renewed_token_for_another_user_closes_4401(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway() as url:
        ws = await connected(url, token("alice"))
        await send(ws, type="auth", token=token("mallory"))
        assert await close_code(ws) == 4401


async def test_a_socket_that_keeps_sending_bad_frames_is_closed_1008(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(max_error_frames=3) as url:
        ws = await connected(url, token())
        for _ in range(3):
            await ws.send("{oops")
            assert (await receive(ws))["code"] == "bad_request"
        await ws.send("{oops")
        assert await close_code(ws) == 1008
