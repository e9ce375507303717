"""One user can never see or touch another's conversations and generations, on any route or
frame: a foreign id is answered exactly like an id nobody uses, and the owner's running
generation carries on untouched."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import ClientConnection

from gateway.store.conversations import ConversationStore
from tests.conftest import GatewayFactory
from tests.support.upstream import FakeUpstream
from tests.support.ws import connected, receive, send, text_of, until_done

Mint = Callable[..., str]
WORDS = 2500  # at about 1 ms a word, alice's answer runs while bob tries everything


@dataclass
class Owned:
    """Alice's running generation, read in the background to its end."""

    ws: ClientConnection
    message: str
    conversation_id: str
    idempotency_key: str
    generation_id: str = ""
    frames: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while not (frame := await receive(self.ws)).get("done"):
            self.frames.append(frame)
        self.frames.append(frame)

    async def finished(self) -> list[dict[str, Any]]:
        assert self.reader is not None
        await asyncio.wait_for(self.reader, 30)
        return self.frames


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> Iterator[str]:
    """A gateway whose echo answers alice's whole message."""
    with start_gateway(echo_max_words=WORDS) as url:
        yield url


@pytest.fixture
async def alice(gateway: str, token: Mint) -> AsyncIterator[Owned]:
    ws = await connected(gateway, token("alice"))
    suffix = uuid.uuid4().hex[:8]
    owned = Owned(
        ws,
        " ".join(f"a{i}" for i in range(WORDS)),
        f"alice-private-{suffix}",
        f"alice-key-{suffix}",
    )
    await send(
        ws,
        type="completion",
        id="a1",
        message=owned.message,
        model="echo",
        conversation_id=owned.conversation_id,
        idempotency_key=owned.idempotency_key,
    )
    start = await receive(ws)
    assert start["type"] == "start"
    owned.generation_id = start["generation_id"]
    owned.frames.append(start)
    owned.reader = asyncio.create_task(owned._read())
    yield owned
    if not owned.reader.done():
        owned.reader.cancel()


def unknown_generation() -> str:
    return f"gen_{uuid.uuid4().hex[:16]}"


def unknown_conversation() -> str:
    return f"nobody-{uuid.uuid4().hex[:12]}"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refusal(response: httpx2.Response, asked: str) -> tuple[int, str, str]:
    """Status, code and detail of a native error, with the id asked for written as `<id>`."""
    body = response.json()
    return response.status_code, body["error"], body["detail"].replace(asked, "<id>")


async def assert_alice_untouched(alice: Owned, conversations: ConversationStore) -> None:
    frames = await alice.finished()
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert text_of(frames) == alice.message
    stored = await conversations.messages("alice", alice.conversation_id)
    assert [m.content for m in stored] == [alice.message, alice.message]


async def test_http_routes_answer_a_foreign_id_like_an_unknown_one(
    gateway: str, token: Mint, alice: Owned, conversations: ConversationStore
) -> None:
    bob = auth(token("bob"))
    gen, conv = alice.generation_id, alice.conversation_id
    other_gen, other_conv = unknown_generation(), unknown_conversation()
    async with httpx2.AsyncClient(base_url=gateway, timeout=10) as http:
        asks: list[tuple[str, str, str, dict[str, Any]]] = [
            ("GET", "/conversations/{}", "conv", {}),
            ("PATCH", "/conversations/{}", "conv", {"content": json.dumps({"title": "mine"})}),
            ("DELETE", "/conversations/{}", "conv", {}),
            ("GET", "/generations/{}/events", "gen", {}),
            ("POST", "/generations/{}/cancel", "gen", {}),
        ]
        for method, path, kind, extra in asks:
            foreign, unknown = (gen, other_gen) if kind == "gen" else (conv, other_conv)
            theirs = await http.request(method, path.format(foreign), headers=bob, **extra)
            nobodys = await http.request(method, path.format(unknown), headers=bob, **extra)
            assert theirs.status_code == 404, (method, path, theirs.text)
            assert refusal(theirs, foreign) == refusal(nobodys, unknown), (method, path)
        # The EventSource carrier of the token is checked the same way.
        theirs = await http.get(f"/generations/{gen}/events", params={"token": token("bob")})
        assert theirs.status_code == 404
        listed = await http.get("/conversations", headers=bob)
        assert conv not in json.dumps(listed.json())
        mine = await http.get(f"/conversations/{conv}", headers=auth(token("alice")))
        assert mine.status_code == 200 and mine.json()["title"] != "mine"
    await assert_alice_untouched(alice, conversations)


async def test_websocket_frames_cannot_reach_a_foreign_generation(
    gateway: str, token: Mint, alice: Owned, conversations: ConversationStore
) -> None:
    bob = await connected(gateway, token("bob"))
    other = unknown_generation()
    answers = []
    for frame in (
        {"type": "resume", "generation_id": alice.generation_id, "id": "r"},
        {"type": "resume", "generation_id": other, "id": "r"},
        {"type": "cancel", "generation_id": alice.generation_id},
        {"type": "cancel", "generation_id": other},
    ):
        await send(bob, **frame)
        answer = await receive(bob)
        assert answer["type"] == "error" and answer["code"] == "not_found", answer
        answers.append(answer["message"].replace(str(frame["generation_id"]), "<id>"))
    assert answers[0] == answers[1] and answers[2] == answers[3]
    # Alice's request id means nothing on bob's socket: ignored, like any unknown id.
    await send(bob, type="cancel", id="a1")
    await send(bob, type="ping")
    assert await receive(bob) == {"type": "pong"}
    await bob.close()
    await assert_alice_untouched(alice, conversations)


async def test_a_foreign_idempotency_key_starts_a_new_generation(
    gateway: str, token: Mint, alice: Owned, conversations: ConversationStore
) -> None:
    bob = await connected(gateway, token("bob"))
    key = alice.idempotency_key
    await send(
        bob, type="completion", id="b1", message="bob here", idempotency_key=key, model="echo"
    )
    start = await receive(bob)
    assert start["type"] == "start"
    assert start["generation_id"] != alice.generation_id
    assert start["conversation_id"] != alice.conversation_id
    async with httpx2.AsyncClient(base_url=gateway, timeout=10) as http:
        answer = await http.post(
            "/completion",
            headers={**auth(token("bob")), "Idempotency-Key": key},
            json={"message": "bob over http", "model": "echo"},
        )
    # Bob's retry with the key finds bob's own generation, never alice's.
    assert answer.status_code == 200
    assert answer.json()["generation_id"] == start["generation_id"]
    assert answer.json()["content"] == "bob here"
    await bob.close()
    await assert_alice_untouched(alice, conversations)


async def test_a_conversation_id_names_a_conversation_of_the_users_own(
    gateway: str,
    token: Mint,
    alice: Owned,
    conversations: ConversationStore,
    fake_upstream: FakeUpstream,
) -> None:
    """Conversation ids are the user's own: alice's id, sent by bob on every route, starts a
    conversation of bob's, exactly as an unused id would. Bob learns nothing of alice's,
    blocks nothing of hers, and the model never sees her messages."""
    conv = alice.conversation_id
    bob = auth(token("bob"))
    turn = {"role": "user", "parts": [{"type": "text", "text": "bob on the ai sdk"}]}
    async with httpx2.AsyncClient(base_url=gateway, timeout=10) as http:
        native = await http.post(
            "/completion", headers=bob, json={"message": "bob here", "conversation_id": conv}
        )
        assert native.status_code == 200 and native.json()["conversation_id"] == conv
        openai = await http.post(
            "/v1/chat/completions",
            headers={**bob, "X-Conversation-Id": conv},
            json={"model": "fake", "messages": [{"role": "user", "content": "bob on v1"}]},
        )
        assert openai.status_code == 200
        ai_sdk = await http.post("/api/chat", headers=bob, json={"id": conv, "messages": [turn]})
        assert ai_sdk.status_code == 200
        # Nothing of alice's runs in bob's conversation of that id.
        assert (await http.get(f"/api/chat/{conv}/stream", headers=bob)).status_code == 204
        ws = await connected(gateway, token("bob"))
        await send(ws, type="completion", id="b2", message="bob on a socket", conversation_id=conv)
        assert (await until_done(ws, "b2"))[-1]["type"] == "done"
        await ws.close()
        seen = await http.get(f"/conversations/{conv}", headers=bob)
    said = [m["content"] for m in seen.json()["messages"] if m["role"] == "user"]
    assert said == ["bob here", "bob on v1", "bob on the ai sdk", "bob on a socket"]
    asked = [r for r in fake_upstream.requests if r.authorization is not None]
    assert not any(alice.message in json.dumps(r.body) for r in asked)
    await assert_alice_untouched(alice, conversations)
