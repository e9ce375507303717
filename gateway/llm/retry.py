"""When to ask the upstream again, and how long to wait first. Pure: no clock, no randomness
of its own (both are passed in), so every branch is unit-tested.

The gateway owns this policy (the SDK's own retries are off): it only ever retries before the
first token reached the client, so a retry can never repeat or splice an answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

# 408 and 409 are what OpenAI's API answers for a request it timed out or could not lock in
# time; like 429 and 5xx, asking again later may succeed.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**retry)).

    Full jitter spreads the retries of many requests that failed together (one upstream
    outage) instead of sending them back in waves."""

    base: float = 0.5
    cap: float = 8.0

    def delay(self, retry: int, random: Callable[[], float]) -> float:
        return random() * min(self.cap, self.base * 2.0**retry)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int  # retries after the first attempt
    max_wait: float  # the longest wait an upstream may ask for before we give up at once
    backoff: Backoff = Backoff()

    def delay(
        self, retries_done: int, retry_after: float | None, random: Callable[[], float]
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up now.

        An upstream that says when to come back is obeyed if that is soon enough; one that
        asks for longer than `max_wait` is not worth holding the client for."""
        if retry_after is not None and retry_after > self.max_wait:
            return None
        if retries_done >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after
        return self.backoff.delay(retries_done, random)


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """The wait an upstream asked for: `retry-after-ms` (OpenAI's), else `Retry-After` in
    seconds or as an HTTP date (RFC 9110 §10.2.3). `now` is the Unix time; None if absent
    or unreadable. `headers` must be case-insensitive (httpx's are)."""
    millis = _non_negative(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _non_negative(value)
    if seconds is not None:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; a zone-less one is read as such
        when = when.replace(tzinfo=UTC)
    return round(max(0.0, when.timestamp() - now), 3)


def _non_negative(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return value
