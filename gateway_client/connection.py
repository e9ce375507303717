"""What the client knows of its connection: the gateway's subprotocol and close codes, its
settings (`Options`), the states it reports (`ConnectionState`), and how a socket ended
(`Lost`), in words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from websockets.exceptions import InvalidHandshake
from websockets.typing import Subprotocol

from gateway_client.errors import GatewayError
from gateway_client.events import ErrorEvent

SUBPROTOCOL = Subprotocol("chat-gateway.v1")
CLOSE_IDLE = 1000
CLOSE_FORBIDDEN = 4403
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_MANY = 4429
RESERVED = ("type", "id", "stream")

State = Literal["connecting", "connected", "reconnecting", "idle", "http", "closed"]
Transport = Literal["auto", "websocket", "http"]


@dataclass(frozen=True)
class ConnectionState:
    """A change of the connection, for `on_state`. `delay`: seconds until the next attempt;
    `reason`: why the last socket went away, in words; `error`: why the client stopped, or
    why a reconnect waits (`rate_limited`, with `retry_after`)."""

    state: State
    delay: float | None = None
    reason: str = ""
    close_code: int | None = None
    error: GatewayError | None = None


@dataclass(frozen=True)
class Options:
    """The connection's settings, as `GatewayClient` takes them (docs/client-python.md)."""

    ws_url: str
    transport: Transport
    ping_interval: float
    pong_timeout: float
    open_timeout: float
    first_delay: float
    max_delay: float
    fallback_after: int


@dataclass(frozen=True)
class Lost:
    """How a socket ended."""

    opened: bool  # its handshake completed
    code: int | None
    reason: str
    token: str
    refusal: ErrorEvent | None = None  # the connection-level error frame before the close
    ready: bool = False  # it got its `ready` frame: the gateway accepted it
    # Failed to open in a way HTTP might get around (not "connection refused": then nothing
    # listens there, and a gateway coming back from a restart must not push us onto HTTP).
    blocked: bool = False


def too_many(lost: Lost) -> GatewayError:
    """Why the gateway closed with 4429: the user has too many sockets open. The error frame
    before the close says how long until one of them lapses."""
    refusal = lost.refusal
    message = refusal.message if refusal else lost.reason or "Too many connections."
    retry_after = refusal.retry_after if refusal else None
    return GatewayError(message, code="rate_limited", retry_after=retry_after)


def why_not(exc: BaseException, url: str) -> str:
    """A socket that did not open, in words."""
    if isinstance(exc, TimeoutError):
        return f"No answer from {url} in time."
    if isinstance(exc, InvalidHandshake):
        return f"{url} did not accept a WebSocket: {exc}"
    return (
        f"Cannot connect to {url}: {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
    )


def number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def nothing_follows(resumed: dict[str, Any]) -> bool:
    """A `resumed` frame at or past the end of an ended generation: no event follows it
    (protocol §4.2), so its run is over. An interrupted one still gets its terminal event."""
    last = resumed.get("last_seq")
    ended = isinstance(last, int) and int(resumed.get("from_seq", 0)) >= last
    return ended and resumed.get("status") != "interrupted"
