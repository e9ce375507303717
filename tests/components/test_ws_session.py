"""The WebSocket session without a socket: frames handed in, frames and close decisions out.

The session runs on the real services (a real Redis, the `echo` model); only the socket is
missing. Each test plays the I/O side: it hands text to the session, reads its outbox and
records what the session's timers ask to close. tests/http/test_websocket.py covers the same
protocol end to end.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway.errors import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_FORBIDDEN_ORIGIN,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_RATE_LIMITED,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_BIG,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNSUPPORTED_DATA,
    RECONNECT_AFTER_CLOSE,
    Disconnect,
    RateLimited,
    Reconnect,
    reconnect_after,
)
from gateway.handlers.ws_session import SocketSession
from gateway.principal import Principal
from gateway.services import Services, open_services

Json = dict[str, Any]
WITHIN = 5.0  # the longest wait for something the session does by itself
ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_MD = ROOT / "docs" / "protocol.md"


class Peer:
    """The socket's side of a session, as a test plays it."""

    def __init__(self, services: Services) -> None:
        self.closes: list[Disconnect] = []
        self.closed = asyncio.Event()
        self.session = SocketSession(services, close=self._close)

    async def _close(self, decision: Disconnect) -> None:
        self.closes.append(decision)
        self.closed.set()

    async def send(self, **frame: Any) -> None:
        await self.session.receive(json.dumps(frame))

    async def frame(self) -> Json:
        async with asyncio.timeout(WITHIN):
            text = await self.session.outbox.get()
        assert text is not None, "the outbox closed"
        parsed: Json = json.loads(text)
        return parsed

    async def until_done(self, *request_ids: str) -> list[Json]:
        """Frames until each of `request_ids` got its last one."""
        frames: list[Json] = []
        waiting = set(request_ids)
        while waiting:
            frames.append(frame := await self.frame())
            if frame.get("done") is True:
                waiting.discard(frame["id"])
        return frames

    def queued(self) -> list[Json]:
        frames = []
        while (text := self.session.outbox.take()) is not None:
            frames.append(json.loads(text))
        return frames

    async def close_decision(self) -> Disconnect:
        async with asyncio.timeout(WITHIN):
            await self.closed.wait()
        return self.closes[0]


OpenServices = Callable[..., AbstractAsyncContextManager[Services]]


@pytest.fixture
def services_with(settings: Settings) -> OpenServices:
    """`async with services_with(**changes) as services`: the gateway's services, no server."""

    @asynccontextmanager
    async def opened(**changes: Any) -> AsyncIterator[Services]:
        async with open_services(replace(settings, **changes), upstream_retries=0) as services:
            yield services

    return opened


async def serving(services: Services, token: str) -> Peer:
    """A session past its authentication, its `ready` frame read."""
    peer = Peer(services)
    peer.session.begin(await peer.session.authenticate(token))
    ready = await peer.frame()
    assert ready["type"] == "ready" and ready["connection_id"] == peer.session.id
    return peer


def completion(request_id: str, words: int = 3, **extra: Any) -> Json:
    message = " ".join(f"w{n}" for n in range(words))
    return {"type": "completion", "id": request_id, "message": message, "model": "echo", **extra}


# Before the first frame.


async def test_a_foreign_origin_is_closed_4403_for_good(services_with: OpenServices) -> None:
    async with services_with(allowed_origins=("https://app.example",)) as services:
        session = Peer(services).session
        session.check_origin("https://app.example")
        session.check_origin(None)  # not a browser
        with pytest.raises(Disconnect) as refused:
            session.check_origin("https://evil.example")
        assert refused.value.close_code == CLOSE_FORBIDDEN_ORIGIN
        assert refused.value.reconnect == Reconnect.NEVER


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (None, "Closed before authenticating."),
        ('{"type":"ping"}', "The first frame must be an auth frame."),
        ('{"type":"auth","token":""}', "The first frame must be an auth frame."),
        ("not json", "The first frame must be an auth frame."),
    ],
)
async def test_a_first_frame_that_is_no_auth_frame_closes_4401(
    services_with: OpenServices, text: str | None, reason: str
) -> None:
    async with services_with() as services:
        with pytest.raises(Disconnect) as refused:
            Peer(services).session.first_frame_token(text)
        assert (refused.value.close_code, refused.value.reason) == (CLOSE_UNAUTHORIZED, reason)


async def test_the_auth_frame_gives_the_token_and_its_absence_closes_4408(
    services_with: OpenServices,
) -> None:
    async with services_with() as services:
        session = Peer(services).session
        assert session.first_frame_token('{"type":"auth","token":"t0k"}') == "t0k"
        with pytest.raises(Disconnect) as late:
            session.no_auth_frame()
        assert late.value.close_code == CLOSE_AUTH_TIMEOUT
        assert late.value.reconnect == Reconnect.BACKOFF


async def test_a_refused_token_closes_4401_with_the_verifiers_reason(
    services_with: OpenServices, token: Callable[..., str]
) -> None:
    async with services_with() as services:
        session = Peer(services).session
        with pytest.raises(Disconnect) as refused:
            await session.authenticate("not.a.token")
        assert refused.value.close_code == CLOSE_UNAUTHORIZED
        assert refused.value.reason == "The token is malformed or wrongly signed."
        assert refused.value.reconnect == Reconnect.REFRESH_TOKEN
        assert (await session.authenticate(token("bob"))).sub == "bob"


async def test_over_the_connection_limit_one_error_frame_then_4429(
    services_with: OpenServices,
) -> None:
    async with services_with() as services:
        peer = Peer(services)
        peer.session.admit(None)
        assert peer.queued() == []
        with pytest.raises(Disconnect) as refused:
            peer.session.admit(RateLimited("Too many.", retry_after=12.5))
        assert refused.value.close_code == CLOSE_RATE_LIMITED
        assert peer.queued() == [
            {
                "type": "error",
                "id": None,
                "code": "rate_limited",
                "message": "Too many.",
                "retryable": True,
                "done": False,
                "retry_after": 12.5,
            }
        ]


async def test_binary_and_oversized_frames_close_the_socket(services_with: OpenServices) -> None:
    async with services_with() as services:
        session = Peer(services).session
        limit = session.settings.max_frame_bytes
        assert session.check_frame("é" * (limit // 2)) == "é" * (limit // 2)
        with pytest.raises(Disconnect) as binary:
            session.check_frame(None)
        assert binary.value.close_code == CLOSE_UNSUPPORTED_DATA
        with pytest.raises(Disconnect) as big:
            session.check_frame("é" * (limit // 2 + 1))  # two bytes each
        assert (big.value.close_code, big.value.reason) == (
            CLOSE_TOO_BIG,
            f"Frames are limited to {limit} bytes.",
        )


# Serving frames.


async def test_a_completion_streams_into_the_outbox_and_frees_its_id(
    services_with: OpenServices, token: Callable[..., str]
) -> None:
    async with services_with() as services:
        peer = await serving(services, token())
        await peer.send(**completion("a"))
        frames = await peer.until_done("a")
        assert frames[0]["type"] == "start" and frames[-1]["type"] == "done"
        assert "".join(f["content"] for f in frames) == "w0 w1 w2"
        assert {f["id"] for f in frames} == {"a"}
        assert peer.session.active == {}
        await peer.send(type="ping")
        assert await peer.frame() == {"type": "pong"}
        await peer.session.end()


async def test_completions_are_multiplexed_and_a_running_id_is_not_reused(
    services_with: OpenServices, token: Callable[..., str]
) -> None:
    async with services_with(echo_delay_ms=20, max_concurrent_per_connection=2) as services:
        peer = await serving(services, token())
        await peer.send(**completion("a", words=500))
        await peer.send(**completion("b", words=500))
        await peer.send(**completion("a"))
        await peer.send(**completion("c"))
        refusals = [f for f in peer.queued() if f["type"] == "error"]
        assert [(f["id"], f["code"], f["done"]) for f in refusals] == [
            ("a", "bad_request", False),  # "a" runs on
            ("c", "rate_limited", True),
        ]
        assert set(peer.session.active) == {"a", "b"}
        await peer.send(type="cancel", id="a")
        await peer.send(type="cancel", id="b")
        ends = [f for f in await peer.until_done("a", "b") if f.get("done")]
        assert {(f["id"], f["finish_reason"]) for f in ends} == {
            ("a", "cancelled"),
            ("b", "cancelled"),
        }
        await peer.session.end()


async def test_a_resume_on_another_session_replays_what_was_streamed(
    services_with: OpenServices, token: Callable[..., str]
) -> None:
    async with services_with() as services:
        first = await serving(services, token())
        await first.send(**completion("a"))
        streamed = await first.until_done("a")
        await first.session.end()
        second = await serving(services, token())
        generation_id = streamed[0]["generation_id"]
        await second.send(type="resume", generation_id=generation_id, after=1, id="again")
        resumed, *replayed = await second.until_done("again")
        assert resumed["type"] == "resumed" and resumed["status"] == "complete"
        assert [f["seq"] for f in replayed] == [f["seq"] for f in streamed if f["seq"] > 1]
        await second.session.end()


async def test_refused_frames_are_answered_until_there_are_too_many(
    services_with: OpenServices, token: Callable[..., str]
) -> None:
    async with services_with(max_error_frames=2) as services:
        peer = await serving(services, token())
        await peer.session.receive("[]")
        await peer.send(type="nonsense", id="x")
        assert [(f["code"], f["message"]) for f in peer.queued()] == [
            ("bad_request", "Expected a JSON object."),
            ("bad_request", 'Unknown frame type "nonsense".'),
        ]
        with pytest.raises(Disconnect) as closed:
            await peer.send(type="cancel")
        assert closed.value.close_code == CLOSE_POLICY
        assert closed.value.reconnect == Reconnect.NEVER
        await peer.session.end()


async def test_a_renewed_token_keeps_the_socket_for_its_user_only(
    services_with: OpenServices, token: Callable[..., str]
) -> None:
    async with services_with() as services:
        peer = await serving(services, token("alice", ttl=600))
        await peer.send(type="auth", token=token("alice", ttl=3600))
        renewed = await peer.frame()
        assert renewed["type"] == "authenticated" and renewed["expires_at"] > time.time() + 600
        await peer.send(type="auth", token="not.a.token")
        refused = await peer.frame()
        assert (refused["type"], refused["code"]) == ("error", "unauthorized")
        with pytest.raises(Disconnect) as closed:
            await peer.send(type="auth", token=token("mallory"))
        assert closed.value.close_code == CLOSE_UNAUTHORIZED
        await peer.session.end()


async def test_a_client_that_falls_behind_is_closed_4008(
    services_with: OpenServices, token: Callable[..., str]
) -> None:
    async with services_with(max_queued_frames=4) as services:
        peer = await serving(services, token())
        assert peer.session.outbox_ended() is None
        for _ in range(5):
            await peer.send(type="ping")
        closing = peer.session.outbox_ended()
        assert closing is not None and closing.close_code == CLOSE_SLOW_CONSUMER
        assert closing.reconnect == Reconnect.BACKOFF
        await peer.session.end()


async def test_ending_the_session_cancels_what_it_started_with_on_disconnect_cancel(
    services_with: OpenServices, token: Callable[..., str]
) -> None:
    async with services_with(on_disconnect="cancel", echo_delay_ms=20) as services:
        peer = await serving(services, token())
        await peer.send(**completion("a", words=500))
        generation_id = (await peer.frame())["generation_id"]
        await peer.session.end()
        assert peer.session.active == {}
        other = await serving(services, token())
        await other.send(type="resume", generation_id=generation_id, id="r")
        assert (await other.until_done("r"))[-1]["finish_reason"] == "cancelled"
        await other.session.end()


# What the session's timers decide.


async def test_an_expiring_token_is_warned_of(
    services_with: OpenServices, token: Callable[..., str]
) -> None:
    async with services_with() as services:
        peer = await serving(services, token(ttl=30))
        warning = await peer.frame()
        assert warning["type"] == "token_expiring" and 0 < warning["expires_in"] <= 30
        await peer.session.end()
        assert peer.closes == []


async def test_an_expired_token_closes_4401(services_with: OpenServices) -> None:
    async with services_with(token_expiry_grace=0) as services:
        peer = Peer(services)
        peer.session.begin(Principal("alice", int(time.time()) - 1, {}))
        decision = await peer.close_decision()
        assert (decision.close_code, decision.reason) == (CLOSE_UNAUTHORIZED, "The token expired.")
        await peer.session.end()


async def test_an_idle_session_closes_1000(
    services_with: OpenServices, token: Callable[..., str]
) -> None:
    async with services_with(ws_idle_timeout=0.2) as services:
        peer = await serving(services, token())
        decision = await peer.close_decision()
        assert (decision.close_code, decision.reason) == (
            CLOSE_NORMAL,
            "Idle: no frames for 0.2 s.",
        )
        assert decision.reconnect == Reconnect.NOW
        await peer.session.end()


# The session and the close codes.


def test_the_session_loads_no_web_framework() -> None:
    loaded = subprocess.run(
        cwd=ROOT,
        args=[
            sys.executable,
            "-c",
            "import sys, gateway.handlers.ws_session; "
            "print(sorted({'starlette', 'uvicorn'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"


def documented_reconnect_classes() -> dict[int, str]:
    """The `Reconnect` column of docs/protocol.md §7, by close code."""
    text = PROTOCOL_MD.read_text()
    section = text[text.index("## 7. Close codes") : text.index("## 8. ")]
    header, _, *rows = [line for line in section.splitlines() if line.startswith("|")]
    column = [cell.strip() for cell in header.split("|")].index("Reconnect")
    found = {}
    for row in rows:
        cells = [cell.strip() for cell in row.split("|")]
        code = re.fullmatch(r"`(\d+)`", cells[1])
        assert code is not None, row
        found[int(code.group(1))] = cells[column]
    return found


def test_the_documented_reconnect_classes_are_the_codes() -> None:
    assert documented_reconnect_classes() == {
        code: str(kind) for code, kind in RECONNECT_AFTER_CLOSE.items()
    }


def test_a_code_the_gateway_never_sends_is_retried_with_backoff() -> None:
    assert reconnect_after(1006) == Reconnect.BACKOFF
