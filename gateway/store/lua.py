"""Lua scripts sent whole with EVAL.

redis-py's registered scripts cost a `SCRIPT EXISTS` round trip before every pipeline that
holds one, which doubles the round trips of the hot path. Redis compiles and caches a script
by its hash on first EVAL anyway, and EVAL cannot fail with NOSCRIPT after Redis restarts
empty; the price is a few hundred bytes per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.store.client import StoreClient, StorePipeline

Arg = str | int | float


class Lua:
    def __init__(self, redis: StoreClient, source: str) -> None:
        self._redis = redis
        self.source = source

    def queue(self, pipe: StorePipeline, keys: Sequence[str], args: Sequence[Arg] = ()) -> None:
        """Add the script to a pipeline; its result comes back in the pipeline's results."""
        pipe.eval(self.source, len(keys), *keys, *args)

    async def __call__(
        self, keys: Sequence[str], args: Sequence[Arg] = (), client: StorePipeline | None = None
    ) -> Any:
        if client is not None:
            self.queue(client, keys, args)
            return client
        return await self._redis.eval(self.source, len(keys), *keys, *args)
