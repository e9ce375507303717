"""What went wrong with one upstream attempt, in the gateway's terms.

An attempt's exception becomes a `RequestError` here and nowhere else, together with whether
asking again may help. A dialect's own exceptions (its SDK's, its HTTP client's) reach this
module already named by the dialect as a `Fault`; the rest are the gateway's (`Overrun`,
`StreamFormatError`, `StreamCutShort`, the first-token deadline's `TimeoutError`). Messages
never repeat the upstream's own text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.errors import (
    ContextTooLong,
    RequestError,
    UpstreamCredentials,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from gateway.llm.bounds import Overrun, StreamFormatError
from gateway.llm.retry import is_retryable_status, retry_after_seconds

log = logging.getLogger("gateway.upstream")

FaultKind = Literal["status", "unreadable", "unreachable", "no_answer", "silent", "broken"]


@dataclass(frozen=True, slots=True)
class Fault:
    """A dialect's exception in provider-neutral terms (`Dialect.fault`):

    status       the API answered with an error status (`status`, its `headers`, `said`)
    unreadable   a response head or body that could not be parsed: never retried
    unreachable  no connection could be made
    no_answer    no response came in time
    silent       the body stopped coming in time
    broken       the exchange broke off some other way
    """

    kind: FaultKind
    status: int = 0
    # Case-insensitive, as a response's headers are: read for Retry-After.
    headers: Mapping[str, str] = field(default_factory=dict)
    said: str = ""  # the API's own error code and message: read for hints, never shown


class StreamCutShort(Exception):
    """The body ended before the stream said it had (no finish reason, no end marker)."""


@dataclass(frozen=True, slots=True)
class Failure:
    error: RequestError  # what the client sees if we give up; carries any retry_after
    retry: bool = False  # asking again may succeed


class _NotRetryable(UpstreamError):
    retryable = False


# A redirect names where to go (Location); 300 and 304 are other answers, 305 and 306 unused.
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CONTEXT_HINTS = ("context_length_exceeded", "context length", "maximum context", "too many tokens")


def classify(name: str, exc: Exception, streamed: bool, fault: Fault | None = None) -> Failure:
    """`streamed`: some of the answer already reached the client, so the failure is
    mid-answer (`upstream_error`, never retried); before that, a failure that may pass is
    `upstream_unavailable` (or `rate_limited`) and worth another attempt. `fault`: what the
    dialect made of `exc`, if it is one of its own."""
    if isinstance(exc, RequestError):
        return Failure(exc)
    if isinstance(exc, Overrun):
        log.warning("model %s sent %s", name, exc.what)
        return Failure(_NotRetryable(f"Model '{name}' sent {exc.what}; the gateway stopped it."))
    if fault is not None and fault.kind == "unreadable":
        log.warning("model %s sent a response that could not be parsed: %s", name, exc)
        return Failure(_NotRetryable(f"Model '{name}' sent a response the gateway cannot read."))
    if streamed:
        return Failure(_mid_stream(name, exc, fault))
    if fault is not None and fault.kind == "status":
        log.warning("model %s answered HTTP %s", name, fault.status)
        return Failure(status_error(name, fault), retry=is_retryable_status(fault.status))
    if isinstance(exc, TimeoutError):  # only the first-token deadline raises the builtin
        return _unavailable(f"Model '{name}' did not start answering in time.")
    if fault is not None:
        return _before_answering(name, exc, fault)
    if isinstance(exc, StreamCutShort):
        return _broken(name, exc)
    return Failure(_mid_stream(name, exc, None))


def _before_answering(name: str, exc: Exception, fault: Fault) -> Failure:
    if fault.kind == "unreachable":
        return _unavailable(f"Model '{name}' could not be reached.")
    if fault.kind == "no_answer":
        return _unavailable(f"Model '{name}' did not answer in time.")
    if fault.kind == "silent":
        return _unavailable(f"Model '{name}' stopped sending in time.")
    return _broken(name, exc)


def _broken(name: str, exc: Exception) -> Failure:
    log.warning("model %s failed before answering: %s", name, type(exc).__name__)
    return _unavailable(f"Model '{name}' broke off before answering.")


def _unavailable(message: str) -> Failure:
    return Failure(UpstreamUnavailable(message), retry=True)


def _mid_stream(name: str, exc: Exception, fault: Fault | None) -> RequestError:
    if isinstance(exc, TimeoutError) or (fault is not None and fault.kind == "silent"):
        return UpstreamError(f"Model '{name}' went silent mid-answer.")
    if isinstance(exc, StreamFormatError | ValueError):
        return UpstreamError(f"Model '{name}' sent a malformed stream.")
    if isinstance(exc, StreamCutShort):
        return UpstreamError(f"Model '{name}' ended its stream before the answer did.")
    log.warning("model %s stream failed: %s", name, type(exc).__name__)
    return UpstreamError(f"Model '{name}' stopped answering mid-stream.")


def status_error(name: str, fault: Fault) -> RequestError:
    """One code per kind of upstream failure, so clients know whether to retry, wait, shorten
    the conversation, or call an operator."""
    status = fault.status
    if status in (401, 403):
        return UpstreamCredentials(f"The upstream refused the gateway's credentials for '{name}'.")
    wait = retry_after_seconds(fault.headers, time.time())
    if status == 429:
        return UpstreamRateLimited(
            f"Model '{name}' is rate limited upstream; try again later.", retry_after=wait
        )
    said = fault.said.lower()
    if status in (400, 413, 422) and any(hint in said for hint in _CONTEXT_HINTS):
        return ContextTooLong(
            f"The conversation is too long for model '{name}'; start a new one or shorten it."
        )
    if status in REDIRECTS and "location" in fault.headers:
        return _NotRetryable(
            f"Model '{name}' answered with a redirect (HTTP {status}), which the gateway does "
            "not follow; its base_url may be wrong."
        )
    if 300 <= status < 400:
        return _NotRetryable(f"Model '{name}' gave an unexpected answer (HTTP {status}).")
    if 400 <= status < 500 and not is_retryable_status(status):
        return _NotRetryable(f"Model '{name}' rejected the request (HTTP {status}).")
    return UpstreamUnavailable(f"Model '{name}' is unavailable (HTTP {status}).", retry_after=wait)
