"""HTTP end to end: POST /completion (JSON and SSE), health, the page, and error shapes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx2
import pytest

from gateway.store.conversations import ConversationStore
from tests.conftest import GatewayFactory, free_port

Mint = Callable[..., str]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sse_events(body: str) -> list[tuple[int, dict[str, Any]]]:
    events = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        events.append((int(lines["id"]), json.loads(lines["data"])))
    return events


async def post(url: str, body: Any, token: str | None = None, **kwargs: Any) -> httpx2.Response:
    headers = auth(token) if token else {}
    async with httpx2.AsyncClient(timeout=20) as client:
        content = body if isinstance(body, str | bytes | AsyncIterator) else json.dumps(body)
        return await client.post(f"{url}/completion", content=content, headers=headers, **kwargs)


async def test_json_answer(gateway: str, token: Mint, conversations: ConversationStore) -> None:
    response = await post(gateway, {"message": "hi there", "model": "fake"}, token())
    assert response.status_code == 200
    body = response.json()
    assert body["content"] == "You said: hi there"
    assert body["model"] == "fake" and body["agent"] == "chat"
    assert body["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    assert body["generation_id"].startswith("gen_")
    stored = await conversations.messages("alice", body["conversation_id"])
    assert [m.content for m in stored] == ["hi there", "You said: hi there"]


async def test_sse_stream(gateway: str, token: Mint) -> None:
    response = await post(gateway, {"message": "a b", "stream": True, "model": "fake"}, token())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    events = sse_events(response.text)
    seqs = [e["seq"] for _, e in events]
    assert [seq for seq, _ in events] == seqs == list(range(1, len(events) + 1))
    types = [e["type"] for _, e in events]
    # Tokens that reach the gateway together travel as one chunk: how many is not fixed.
    assert types[0] == "start" and set(types[1:-1]) == {"chunk"} and types[-1] == "done"
    assert "".join(e["content"] for _, e in events) == "You said: a b"
    assert all({"content", "done", "conversation_id"} <= e.keys() for _, e in events)
    assert all("metadata" in e for _, e in events if e["type"] == "chunk")
    assert events[-1][1]["done"] is True and not any(e["done"] for _, e in events[:-1])


async def test_sse_stream_continues_a_conversation(gateway: str, token: Mint) -> None:
    await post(gateway, {"message": "one", "conversation_id": "http-conv"}, token())
    response = await post(
        gateway, {"message": "two", "conversation_id": "http-conv", "stream": True}, token()
    )
    assert {e["conversation_id"] for _, e in sse_events(response.text)} == {"http-conv"}


async def test_a_failure_ends_the_stream_with_done_and_error(gateway: str, token: Mint) -> None:
    response = await post(
        gateway, {"message": "a b c", "stream": True, "model": "fake-drop2"}, token()
    )
    last = sse_events(response.text)[-1][1]
    assert last["done"] is True and last["error"] and last["code"] == "upstream_error"


async def test_json_answer_upstream_failures_keep_their_kind(gateway: str, token: Mint) -> None:
    down = await post(gateway, {"message": "x", "model": "fake-err500"}, token())
    assert down.status_code == 503 and down.json()["error"] == "upstream_unavailable"
    busy = await post(gateway, {"message": "x", "model": "fake-err429"}, token())
    assert busy.status_code == 429 and busy.json()["error"] == "rate_limited"
    long = await post(gateway, {"message": "x", "model": "fake-ctx"}, token())
    assert long.status_code == 400 and long.json()["error"] == "context_too_long"


async def test_a_non_streaming_model_answers_json(gateway: str, token: Mint) -> None:
    response = await post(gateway, {"message": "whole", "model": "fake-whole"}, token())
    assert response.json()["content"] == "You said: whole"


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ("{broken", 400, "The body is not valid JSON."),
        ({"stream": True}, 400, "'message' must be a non-empty string."),
        ({"message": "x", "model": "nope"}, 400, "Unknown model 'nope'."),
        (
            {"message": "x", "model": "fake-whole", "stream": True},
            400,
            "Model 'fake-whole' does not support streaming. Please set stream=false or use a "
            "streaming-capable model.",
        ),
    ],
)
async def test_bad_input_is_400(
    gateway: str, token: Mint, body: Any, status: int, detail: str
) -> None:
    response = await post(gateway, body, token())
    assert response.status_code == status
    payload = response.json()
    assert payload["error"] == "bad_request"
    assert payload["detail"].startswith(detail)
    assert payload["timestamp"].endswith("Z")


@pytest.mark.parametrize("bad", [None, "nonsense", "Basic abc"])
async def test_no_or_bad_token_is_401(gateway: str, bad: str | None) -> None:
    headers = {"Authorization": bad} if bad else {}
    async with httpx2.AsyncClient() as client:
        response = await client.post(
            f"{gateway}/completion", json={"message": "x"}, headers=headers
        )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_another_users_conversation_id_is_a_conversation_of_ones_own(
    gateway: str, token: Mint
) -> None:
    await post(gateway, {"message": "alice's", "conversation_id": "alices"}, token("alice"))
    response = await post(gateway, {"message": "bob's", "conversation_id": "alices"}, token("bob"))
    assert response.status_code == 200
    assert response.json()["conversation_id"] == "alices"


async def test_a_body_over_the_limit_is_413(start_gateway: GatewayFactory, token: Mint) -> None:
    with start_gateway(max_frame_bytes=1000) as url:
        response = await post(url, {"message": "x" * 2000}, token())
        assert response.status_code == 413
        chunked = await post(url, _chunks(b'{"message":"', b"x" * 2000, b'"}'), token())
        assert chunked.status_code == 413


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:  # no Content-Length: the server must count as it reads
        yield part


async def test_redis_down_is_a_clean_503_and_not_ready(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(redis_url=f"redis://127.0.0.1:{free_port()}/0") as url:
        response = await post(url, {"message": "x"}, token())
        assert response.status_code == 503
        assert response.json()["error"] == "unavailable"
        assert "Traceback" not in response.text and "redis" not in response.text.lower()
        async with httpx2.AsyncClient() as client:
            assert (await client.get(f"{url}/healthz")).status_code == 200
            ready = await client.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] == "unreachable"


async def test_health_ready_and_page(gateway: str) -> None:
    async with httpx2.AsyncClient() as client:
        assert (await client.get(f"{gateway}/healthz")).json() == {"status": "ok"}
        assert (await client.get(f"{gateway}/readyz")).json() == {"status": "ok", "redis": "ok"}
        page = await client.get(f"{gateway}/")
        missing = await client.get(f"{gateway}/no-such-page")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
