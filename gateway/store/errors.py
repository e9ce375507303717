"""Redis failures, translated at the store's edge into the gateway's own errors."""

from __future__ import annotations

import redis.exceptions

from gateway.errors import RequestError, Unavailable

_UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def store_error(exc: BaseException) -> RequestError | None:
    """Unavailable (503, retryable) when Redis cannot be reached; None for anything else."""
    if isinstance(exc, _UNREACHABLE):
        return Unavailable("The gateway cannot reach its store right now; retry in a moment.")
    return None
