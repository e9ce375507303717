"""One error tree for the whole gateway.

    GatewayError
    ├── RequestError(code)       one request failed; the connection lives on
    │   ├── BadRequest           "bad_request"   (HTTP 400)
    │   │   ├── ContextTooLong       "context_too_long" (HTTP 400)
    │   │   └── OutputFormatRefused  "bad_request" (HTTP 400): a JSON format for a model
    │   │                            not declared `structured_outputs = true`
    │   ├── Unauthorized         "unauthorized"  (HTTP 401)
    │   ├── Forbidden            "forbidden"     (HTTP 403)
    │   ├── NotFound             "not_found"     (HTTP 404)
    │   ├── ConversationFull     "conversation_full" (HTTP 409: MAX_STORED_MESSAGES, MAX_SIBLINGS)
    │   ├── PayloadTooLarge      "bad_request"   (HTTP 413)
    │   ├── RateLimited          "rate_limited"  (HTTP 429, retryable; also the upstream's 429)
    │   ├── UpstreamError        "upstream_error" (HTTP 502, retryable: mid-stream failures)
    │   │   ├── UpstreamUnavailable   "upstream_unavailable" (HTTP 503, retryable)
    │   │   └── UpstreamCredentials   "upstream_credentials" (HTTP 502, not retryable)
    │   ├── InternalError        "internal"      (HTTP 500)
    │   ├── Interrupted          "interrupted"   (HTTP 503, retryable: the producer stopped)
    │   └── Unavailable          "unavailable"   (HTTP 503, retryable: shutting down)
    └── Disconnect(close_code)   the WebSocket must close with this code; what the client
                                 should do then is its `reconnect_after(close_code)`

Messages are written for people and never carry secrets or stack traces: handlers
render them verbatim. Foreign exceptions are translated at the adapter that meets them.
"""

import math
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import ClassVar, Literal

ErrorCode = Literal[
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conversation_full",
    "rate_limited",
    "upstream_error",
    "upstream_unavailable",
    "upstream_credentials",
    "context_too_long",
    "interrupted",
    "unavailable",
    "internal",
]


def excerpt(text: str, limit: int = 64) -> str:
    """A client's string as an error message may quote it: never more than `limit` chars."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after_seconds(retry_after: float) -> int:
    """A wait as HTTP's `Retry-After` and messages give it: whole seconds, rounded up, at
    least 1."""
    return max(1, math.ceil(retry_after))


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class RequestError(GatewayError):
    code: ClassVar[ErrorCode] = "internal"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Seconds a client should wait before trying again (HTTP Retry-After), when known.
        self.retry_after = retry_after


class BadRequest(RequestError):
    code: ClassVar[ErrorCode] = "bad_request"
    http_status = 400


class PayloadTooLarge(BadRequest):
    http_status = 413


class Unauthorized(RequestError):
    code = "unauthorized"
    http_status = 401


class Forbidden(RequestError):
    code = "forbidden"
    http_status = 403


class NotFound(RequestError):
    code = "not_found"
    http_status = 404


class ConversationFull(RequestError):
    """The conversation holds as many messages, or a message as many answers or edits, as
    it may: delete a branch, or start a new conversation (a fork)."""

    code = "conversation_full"
    http_status = 409


class RateLimited(RequestError):
    code = "rate_limited"
    http_status = 429
    retryable = True


class UpstreamError(RequestError):
    code: ClassVar[ErrorCode] = "upstream_error"
    http_status = 502
    retryable = True


class UpstreamUnavailable(UpstreamError):
    """The model's server could not be reached, timed out, or answered 5xx."""

    code = "upstream_unavailable"
    http_status = 503


class UpstreamCredentials(UpstreamError):
    """The model's server refused the gateway's own key: an operator must fix it."""

    code = "upstream_credentials"
    retryable = False


class UpstreamRateLimited(RateLimited):
    """The model's server asked the gateway to slow down (after its retries)."""


class ContextTooLong(BadRequest):
    """The conversation no longer fits the model's context window."""

    code = "context_too_long"


class OutputFormatRefused(BadRequest):
    """A JSON output format asked of a model whose table does not declare
    `structured_outputs = true`; each API names its own parameter in the error (OpenAI chat:
    `response_format`)."""

    def __init__(self, model: str, kind: str) -> None:
        super().__init__(
            f"Model '{model}' does not support structured outputs ('{kind}'): its "
            f"[models.{model}] table in GATEWAY_CONFIG does not set structured_outputs = true."
        )
        self.model = model


class InternalError(RequestError):
    code = "internal"
    http_status = 500

    def __init__(self, message: str = "The gateway failed to handle this request.") -> None:
        super().__init__(message)


class Interrupted(RequestError):
    """The process running a generation stopped before it ended; what was streamed is kept."""

    code = "interrupted"
    http_status = 503
    retryable = True


class Unavailable(RequestError):
    """This instance is shutting down and takes no new work; another instance will."""

    code = "unavailable"
    http_status = 503
    retryable = True


def status_of(code: str) -> int:
    """The HTTP status of an error code, as the error tree states it (each code's most general
    class: `bad_request` is 400, though PayloadTooLarge answers 413); 500 for a code it does
    not know. One table for every transport, so none can drift."""
    return _STATUS_OF_CODE.get(code, InternalError.http_status)


def _statuses() -> dict[str, int]:
    found: dict[str, int] = {}
    waiting: list[type[RequestError]] = [RequestError]
    while waiting:  # breadth first: a code's most general class comes first
        kind = waiting.pop(0)
        found.setdefault(kind.code, kind.http_status)
        waiting += kind.__subclasses__()
    return found


class Reconnect(StrEnum):
    """What a client should do after a close: the words docs/protocol.md §7 uses."""

    NOW = "retry now"
    BACKOFF = "retry with backoff"
    REFRESH_TOKEN = "refresh token then retry"
    NEVER = "do not retry"


class Disconnect(GatewayError):
    """Close the WebSocket with `close_code`; `reason` is short and safe to show."""

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(f"{close_code}: {reason}")
        self.close_code = close_code
        self.reason = reason

    @property
    def reconnect(self) -> Reconnect:
        return reconnect_after(self.close_code)


# WebSocket close codes, one place.
CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_KEEPALIVE_TIMEOUT = 1011  # sent by the WebSocket layer when a ping goes unanswered
CLOSE_RESTART = 1012
CLOSE_SLOW_CONSUMER = 4008
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_AUTH_TIMEOUT = 4408
CLOSE_RATE_LIMITED = 4429


# Each close code's reconnect class. BACKOFF where many clients may be closed together (a
# restart) or the cause may last (a slow network, a full quota): a crowd retrying at once
# would only be refused again. NEVER where the same client would be closed the same way.
RECONNECT_AFTER_CLOSE: Mapping[int, Reconnect] = MappingProxyType(
    {
        CLOSE_NORMAL: Reconnect.NOW,  # idle: nothing failed; reconnect once there is work
        CLOSE_UNSUPPORTED_DATA: Reconnect.NEVER,
        CLOSE_POLICY: Reconnect.NEVER,
        CLOSE_TOO_BIG: Reconnect.NEVER,
        CLOSE_KEEPALIVE_TIMEOUT: Reconnect.BACKOFF,
        CLOSE_RESTART: Reconnect.BACKOFF,
        CLOSE_SLOW_CONSUMER: Reconnect.BACKOFF,
        CLOSE_UNAUTHORIZED: Reconnect.REFRESH_TOKEN,
        CLOSE_FORBIDDEN_ORIGIN: Reconnect.NEVER,
        CLOSE_AUTH_TIMEOUT: Reconnect.BACKOFF,
        CLOSE_RATE_LIMITED: Reconnect.BACKOFF,
    }
)


def reconnect_after(close_code: int) -> Reconnect:
    """The reconnect class of a close code; BACKOFF for one the gateway never sends (`1006`,
    a connection lost without a close frame)."""
    return RECONNECT_AFTER_CLOSE.get(close_code, Reconnect.BACKOFF)


_STATUS_OF_CODE = _statuses()
