"""Whether a failure means the store cannot be reached, told without loading a Redis client.

The core and the handlers must tell an outage (retry in a moment) from a fault, yet import no
Redis: the store's client module names the exception types that mean "unreachable" here when
it is loaded (`gateway.store.errors`), and everything else asks `store_error`.
"""

from __future__ import annotations

from gateway.errors import RequestError, Unavailable

_unreachable: tuple[type[BaseException], ...] = ()
_wrappers: tuple[type[BaseException], ...] = ()


def count_as_unreachable(*types: type[BaseException]) -> None:
    global _unreachable
    _unreachable = tuple(dict.fromkeys((*_unreachable, *types)))


def count_as_unreachable_when_caused(*types: type[BaseException]) -> None:
    """These types mean "unreachable" when raised from (`__cause__`) one that does."""
    global _wrappers
    _wrappers = tuple(dict.fromkeys((*_wrappers, *types)))


def store_error(exc: BaseException) -> RequestError | None:
    """Unavailable (503, retryable) when the store cannot be reached; None for anything else."""
    if _unreachable and (
        isinstance(exc, _unreachable)
        or (isinstance(exc, _wrappers) and isinstance(exc.__cause__, _unreachable))
    ):
        return Unavailable("The gateway cannot reach its store right now; retry in a moment.")
    return None
