"""`GatewayClient`: one multiplexed WebSocket to a gateway, kept alive for its runs.

It hides the connection: heartbeats, reconnects with backoff and jitter that resume every
unfinished run from the last seq seen (waiting as long as the gateway asks when it refuses a
connection), token renewal through a callback, and a fallback to HTTP streaming when no
WebSocket gets through. Guide: docs/client-python.md. This class is the API: it makes the
runs; `connector.py` carries them.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from types import TracebackType
from typing import Any

from gateway_client.connection import RESERVED, ConnectionState, Options, State, Transport
from gateway_client.connector import Connector
from gateway_client.http import HttpApi
from gateway_client.run import Run
from gateway_client.runs import Runs, oversized
from gateway_client.tokens import TokenRefresh, Tokens


class GatewayClient:
    """`async with GatewayClient(url, token=…) as client:` then
    `async for event in client.complete("Hello"): …`."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        *,
        token: str | None = None,
        token_refresh: TokenRefresh | None = None,
        ws_url: str | None = None,
        transport: Transport = "auto",
        ping_interval: float = 25.0,
        pong_timeout: float = 10.0,
        reconnect_delay: float = 0.5,
        max_reconnect_delay: float = 30.0,
        fallback_after: int = 3,
        open_timeout: float = 10.0,
        max_frame_bytes: int = 1_048_576,
        on_state: Callable[[ConnectionState], None] | None = None,
        on_activity: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        base = url.rstrip("/")
        self.url = base
        self.ws_url = ws_url or base.replace("http", "ws", 1) + "/ws"
        self.transport = transport
        self._tokens = Tokens(token, token_refresh)
        self.http = HttpApi(base, self._tokens)
        self._max_frame_bytes = max_frame_bytes
        self._runs = Runs()
        options = Options(
            ws_url=self.ws_url,
            transport=transport,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            open_timeout=open_timeout,
            first_delay=reconnect_delay,
            max_delay=max_reconnect_delay,
            fallback_after=fallback_after,
        )
        self._connector = Connector(
            options, self._tokens, self.http, self._runs, on_state, on_activity
        )

    @property
    def state(self) -> State:
        """`connecting`, `connected`, `reconnecting`, `idle`, `http` or `closed`."""
        return self._connector.state

    @property
    def user(self) -> str | None:
        """The token's `sub`, from the gateway's `ready` frame."""
        ready = self._connector.ready
        return ready.user if ready else None

    @property
    def connection_id(self) -> str | None:
        """The gateway's id of the current socket."""
        ready = self._connector.ready
        return ready.connection_id if ready else None

    @property
    def running(self) -> list[dict[str, Any]]:
        """The user's generations running on any instance when the socket last opened
        (`ready.running`): `attach` to each to show it."""
        ready = self._connector.ready
        return ready.running if ready else []

    @property
    def token_refreshes(self) -> int:
        """How many times the token_refresh callback has been called."""
        return self._tokens.refresh_calls

    @property
    def expires_at(self) -> float | None:
        """The current token's `exp` (Unix seconds), as the gateway last stated it."""
        return self._tokens.expires_at

    async def __aenter__(self) -> GatewayClient:
        self._connector.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Wait until runs can be sent (a socket is ready, or HTTP is in use). Raises
        `GatewayError` when the token is refused for good; retries any other failure."""
        await self._connector.connected()

    def complete(
        self,
        message: str,
        *,
        model: str | None = None,
        agent: str | None = None,
        conversation_id: str | None = None,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Run:
        """Start a completion (the fields of protocol §4.1) and return its run at once. An
        edit is a completion with `parent_id`, the parent of the message edited."""
        named = {"model": model, "agent": agent, "conversation_id": conversation_id}
        return self._submit({"message": message, **named, **fields}, idempotency_key)

    def regenerate(
        self,
        answer_id: str,
        *,
        conversation_id: str,
        idempotency_key: str | None = None,
        **fields: Any,
    ) -> Run:
        """Make an answer (`msg_…`) again: a new answer to the same user message, kept beside
        the old one; its run at once."""
        body = {"regenerate": answer_id, "conversation_id": conversation_id, **fields}
        return self._submit(body, idempotency_key)

    def _submit(self, fields: dict[str, Any], idempotency_key: str | None) -> Run:
        body = {k: v for k, v in fields.items() if k not in RESERVED and v is not None}
        # Sent again after a reconnect, the same key re-attaches to the answer it started.
        body["idempotency_key"] = idempotency_key or secrets.token_hex(16)
        run = Run(self._runs.new_id(), self._connector.cancel, body=body)
        refusal = oversized(run, self._max_frame_bytes)
        if refusal is not None:
            run.deliver(refusal)
            return run
        self._connector.submit(run)
        return run

    def attach(self, generation_id: str, *, after: int = 0) -> Run:
        """Follow an existing generation of the same user: every event after seq `after`,
        then the live ones. A generation that has ended, followed from its end, gives none."""
        run = Run(
            self._runs.new_id(), self._connector.cancel, generation_id=generation_id, after=after
        )
        self._connector.submit(run)
        return run

    async def cancel(self, generation_id: str) -> str:
        """Cancel a generation by id, wherever it runs; returns its status (`running` while
        the cancel is on its way, else its final status)."""
        return await self.http.cancel(generation_id)

    async def conversation(
        self, conversation_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any] | None:
        """`GET /conversations/{id}`: a page of its messages (see `HttpApi.conversation`)."""
        return await self.http.conversation(conversation_id, cursor=cursor, limit=limit)

    async def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every stored message of a conversation, oldest first (see `HttpApi.messages`)."""
        return await self.http.messages(conversation_id)

    async def aclose(self) -> None:
        """Close the connection; unfinished runs raise `GatewayError` (`closed`)."""
        await self._connector.close()
        await self.http.aclose()
