"""What went wrong with one upstream attempt, in the gateway's terms.

Foreign exceptions (openai, httpx) become a `RequestError` here and nowhere else, together with
whether asking again may help. Messages never repeat the upstream's own text.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import aiohttp
import httpx2
import openai

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


class StreamCutShort(Exception):
    """The body ended without a finish reason or `[DONE]`."""


@dataclass(frozen=True, slots=True)
class Failure:
    error: RequestError  # what the client sees if we give up; carries any retry_after
    retry: bool = False  # asking again may succeed


class _NotRetryable(UpstreamError):
    retryable = False


_CONTEXT_HINTS = ("context_length_exceeded", "context length", "maximum context", "too many tokens")


def classify(name: str, exc: Exception, streamed: bool) -> Failure:
    """`streamed`: some of the answer already reached the client, so the failure is
    mid-answer (`upstream_error`, never retried); before that, a failure that may pass is
    `upstream_unavailable` (or `rate_limited`) and worth another attempt."""
    if isinstance(exc, RequestError):
        return Failure(exc)
    if isinstance(exc, Overrun):
        log.warning("model %s sent %s", name, exc.what)
        return Failure(_NotRetryable(f"Model '{name}' sent {exc.what}; the gateway stopped it."))
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        # A head or body aiohttp could not parse (malformed, or past its bounds).
        log.warning("model %s sent a response that could not be parsed: %s", name, exc)
        return Failure(_NotRetryable(f"Model '{name}' sent a response the gateway cannot read."))
    if streamed:
        return Failure(_mid_stream(name, exc))
    if isinstance(exc, openai.APIStatusError):
        log.warning("model %s answered HTTP %s", name, exc.status_code)
        return Failure(status_error(name, exc), retry=is_retryable_status(exc.status_code))
    if isinstance(exc, TimeoutError):  # only the first-token deadline raises the builtin
        return _unavailable(f"Model '{name}' did not start answering in time.")
    if _caused_by(exc, aiohttp.ClientConnectorError):
        # Checked before the timeout: the aiohttp backend reports a refused connection as
        # httpx's ConnectTimeout, which the SDK turns into APITimeoutError.
        return _unavailable(f"Model '{name}' could not be reached.")
    if isinstance(exc, openai.APITimeoutError):
        return _unavailable(f"Model '{name}' did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        return _unavailable(f"Model '{name}' could not be reached.")
    if isinstance(exc, httpx2.TimeoutException):
        return _unavailable(f"Model '{name}' stopped sending in time.")
    if isinstance(exc, httpx2.HTTPError | openai.OpenAIError | StreamCutShort):
        log.warning("model %s failed before answering: %s", name, type(exc).__name__)
        return _unavailable(f"Model '{name}' broke off before answering.")
    return Failure(_mid_stream(name, exc))


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is among the exceptions that led to `exc` (its explicit causes)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain is short; a cycle is not followed for ever
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__
    return False


def _unavailable(message: str) -> Failure:
    return Failure(UpstreamUnavailable(message), retry=True)


def _mid_stream(name: str, exc: Exception) -> RequestError:
    if isinstance(exc, httpx2.TimeoutException | TimeoutError):
        return UpstreamError(f"Model '{name}' went silent mid-answer.")
    if isinstance(exc, StreamFormatError | ValueError):
        return UpstreamError(f"Model '{name}' sent a malformed stream.")
    if isinstance(exc, StreamCutShort):
        return UpstreamError(f"Model '{name}' ended its stream before the answer did.")
    log.warning("model %s stream failed: %s", name, type(exc).__name__)
    return UpstreamError(f"Model '{name}' stopped answering mid-stream.")


def status_error(name: str, exc: openai.APIStatusError) -> RequestError:
    """One code per kind of upstream failure, so clients know whether to retry, wait, shorten
    the conversation, or call an operator."""
    status = exc.status_code
    if status in (401, 403):
        return UpstreamCredentials(f"The upstream refused the gateway's credentials for '{name}'.")
    wait = retry_after_seconds(exc.response.headers, time.time())
    if status == 429:
        return UpstreamRateLimited(
            f"Model '{name}' is rate limited upstream; try again later.", retry_after=wait
        )
    said = f"{getattr(exc, 'code', '') or ''} {exc.message}".lower()
    if status in (400, 413, 422) and any(hint in said for hint in _CONTEXT_HINTS):
        return ContextTooLong(
            f"The conversation is too long for model '{name}'; start a new one or shorten it."
        )
    if 400 <= status < 500 and not is_retryable_status(status):
        return _NotRetryable(f"Model '{name}' rejected the request (HTTP {status}).")
    return UpstreamUnavailable(f"Model '{name}' is unavailable (HTTP {status}).", retry_after=wait)
