"""The pure side of per-user limits: which limits apply, what a turn reserves, refusals."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.config import Limits, Settings
from gateway.limits import (
    DEFAULT_ANSWER_RESERVE,
    Refusal,
    day_of,
    limits_for,
    seconds_to_utc_midnight,
    size_text,
    token_reservation,
)
from gateway.principal import Principal

PRO = Limits(requests_per_minute=600, concurrent_generations=32, connections=64)
SETTINGS = Settings(limit_tiers={"pro": PRO})


def principal(**claims: object) -> Principal:
    return Principal(sub="alice", expires_at=0, claims={"sub": "alice", **claims})


def test_a_known_tier_picks_its_limits_and_anything_else_the_global_ones() -> None:
    assert limits_for(principal(tier="pro"), SETTINGS) == PRO
    assert limits_for(principal(tier="gold"), SETTINGS) == SETTINGS.limits
    assert limits_for(principal(tier=["pro"]), SETTINGS) == SETTINGS.limits
    assert limits_for(principal(), SETTINGS) == SETTINGS.limits


def test_the_claim_that_names_the_tier_is_configurable() -> None:
    settings = Settings(limit_tiers={"pro": PRO}, limit_claim="plan")
    assert limits_for(principal(plan="pro"), settings) == PRO
    assert limits_for(principal(tier="pro"), settings) == settings.limits


def test_a_turn_reserves_its_prompt_and_its_answer_cap() -> None:
    assert token_reservation(400, 50) == 150
    assert token_reservation(401, None) == 101 + DEFAULT_ANSWER_RESERVE
    assert token_reservation(0, None) == DEFAULT_ANSWER_RESERVE


def test_the_daily_budget_resets_at_utc_midnight() -> None:
    late = datetime(2026, 3, 1, 23, 59, 30, tzinfo=UTC)
    assert seconds_to_utc_midnight(late) == 30
    assert day_of(late) == "20260301"
    assert seconds_to_utc_midnight(datetime(2026, 3, 1, 0, 0, tzinfo=UTC)) == 86_400


def test_refusals_say_which_limit_and_when_to_retry() -> None:
    limits = Limits(requests_per_minute=5, tokens_per_day=1000)
    error = Refusal("requests_per_minute", 11.2).error(limits)
    assert error.code == "rate_limited" and error.http_status == 429
    assert error.retry_after == 11.2
    assert "5 per minute" in error.message and "12 s" in error.message
    budget = Refusal("tokens_per_day", 3600).error(limits)
    assert "1000 tokens" in budget.message and "00:00 UTC" in budget.message


def test_a_full_storage_quota_says_how_much_and_how_to_free_space() -> None:
    limits = Limits(storage_bytes=100 * 1024 * 1024)
    error = Refusal("storage_bytes", None, stored=100 * 1024 * 1024 - 10, needed=1536).error(limits)
    assert error.code == "rate_limited" and error.http_status == 429
    assert error.retry_after is None  # waiting frees nothing
    assert error.message == (
        "Your stored conversations take 100 MiB of the 100 MiB you may keep, and this message "
        "needs 1.5 KiB more. Delete conversations you no longer need to free space, then send "
        "it again."
    )


def test_sizes_read_as_people_say_them() -> None:
    assert [size_text(n) for n in (0, 1023, 1024, 1536, 5 * 2**20, 2**30 + 2**29)] == [
        "0 bytes",
        "1023 bytes",
        "1 KiB",
        "1.5 KiB",
        "5 MiB",
        "1.5 GiB",
    ]
