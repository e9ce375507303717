"""How long to wait before the next attempt: pure, with the randomness passed in."""

from __future__ import annotations

import random


def backoff(attempt: int, first: float, ceiling: float, rng: random.Random | None = None) -> float:
    """Seconds before retry number `attempt` (0 for the first): doubling from `first` up to
    `ceiling`, then a random point between half and all of it, so a crowd of clients cut off
    together (a gateway restart) does not come back together."""
    top = min(ceiling, first * 2.0 ** min(attempt, 62))
    draw = (rng or random).random()
    return top / 2 + draw * top / 2


def reconnect_delay(backoff_delay: float, retry_after: float | None) -> float:
    """The wait before reconnecting: the backoff, or what the gateway asked for when that is
    longer (a client told to wait that comes back sooner is only refused again)."""
    return max(backoff_delay, retry_after or 0.0)
