"""Per-user limits: which apply to a user, what a turn reserves, and how a refusal reads.

Pure: the counting happens atomically in Redis (gateway/store/limits.py), so the limits hold
across every instance that shares it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from gateway.config import Limits, Settings
from gateway.errors import RateLimited, retry_after_seconds
from gateway.principal import Principal

LimitName = Literal[
    "requests_per_minute",
    "concurrent_generations",
    "connections",
    "tokens_per_day",
    "storage_bytes",
]
# Tokens reserved for the answer when neither the request nor the model caps it; the
# reservation is corrected from the upstream's usage when the answer ends.
DEFAULT_ANSWER_RESERVE = 1024


def limits_for(principal: Principal, settings: Settings) -> Limits:
    """The user's tier (the value of the LIMIT_CLAIM claim) picks a tier's limits; a user
    without one, or with an unknown one, gets the global limits."""
    tier = principal.claims.get(settings.limit_claim)
    if isinstance(tier, str) and tier in settings.limit_tiers:
        return settings.limit_tiers[tier]
    return settings.limits


def token_reservation(prompt_chars: int, max_tokens: int | None) -> int:
    """Tokens a turn reserves before the upstream call: the prompt (about 4 characters per
    token) plus the most the answer may use."""
    return math.ceil(prompt_chars / 4) + (max_tokens or DEFAULT_ANSWER_RESERVE)


def seconds_to_utc_midnight(now: datetime) -> float:
    """The daily token budget resets at 00:00 UTC."""
    tomorrow = (now.astimezone(UTC) + timedelta(days=1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return (tomorrow - now).total_seconds()


def day_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y%m%d")


def size_text(size: int) -> str:
    """Bytes as a person reads them: "512 bytes", "3.2 KiB", "100 MiB"."""
    if size < 1024:
        return f"{size} bytes"
    units = ("KiB", "MiB", "GiB", "TiB")
    power = 1
    while power < len(units) and size >= 1024 ** (power + 1):
        power += 1
    return f"{size / 1024**power:.1f}".removesuffix(".0") + f" {units[power - 1]}"


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: LimitName
    retry_after: float | None  # seconds; None when waiting does not help
    stored: int = 0  # storage_bytes: what the user's conversations hold
    needed: int = 0  # storage_bytes: what the turn's message would add

    def error(self, limits: Limits) -> RateLimited:
        if self.limit == "storage_bytes":
            return RateLimited(self._storage_message(limits))  # waiting frees nothing
        assert self.retry_after is not None, "every other limit says when to come back"
        wait = retry_after_seconds(self.retry_after)
        messages: dict[LimitName, str] = {
            "requests_per_minute": (
                f"Too many requests: at most {limits.requests_per_minute} per minute. "
                f"Retry in {wait} s."
            ),
            "concurrent_generations": (
                f"At most {limits.concurrent_generations} answers may run at once for one user; "
                "wait for one to finish."
            ),
            "connections": (
                f"At most {limits.connections} connections may be open at once for one user."
            ),
            "tokens_per_day": (
                f"The daily budget of {limits.tokens_per_day} tokens is used up; "
                f"it resets at 00:00 UTC (in {wait} s)."
            ),
        }
        return RateLimited(messages[self.limit], retry_after=round(self.retry_after, 3))

    def _storage_message(self, limits: Limits) -> str:
        return (
            f"Your stored conversations take {size_text(self.stored)} of the "
            f"{size_text(limits.storage_bytes)} you may keep, and this message needs "
            f"{size_text(self.needed)} more. Delete conversations you no longer need to free "
            "space, then send it again."
        )


@dataclass(frozen=True, slots=True)
class Admission:
    """What a turn took: released (and its tokens corrected) when it ends."""

    sub: str
    generation_id: str
    day: str
    reserved_tokens: int
    conversation_id: str = ""
    message_bytes: int = 0  # counted against the user's storage, taken back if it never starts


@dataclass(frozen=True, slots=True)
class Turn:
    """What a turn asks of the user's limits."""

    generation_id: str
    conversation_id: str
    reserve_tokens: int
    message_bytes: int  # the user's message as it will be stored
