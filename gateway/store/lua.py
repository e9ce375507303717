"""Lua scripts, sent by hash (EVALSHA) once the server is known to hold them, whole (EVAL)
until then.

Sent whole every time, the log writer's append script (one call per generation in every
flush) would carry its text in each call, for the client to encode and the server to hash.
redis-py's registered scripts avoid that but cost a `SCRIPT EXISTS` round trip before every
pipeline that holds one, which doubles the round trips of the hot path; so a script here
remembers instead whether a call of it succeeded.

A server can forget its scripts (a restart, a failover to a replica, `SCRIPT FLUSH`; on a
Redis Cluster each node has its own cache). EVALSHA then fails with NOSCRIPT, which means the
script did not run, so running it again is safe: a direct call falls back to EVAL at once. A
NOSCRIPT inside a pipeline leaves the pipeline's other commands run, so only a script whose
caller reads each of its results and writes again what NOSCRIPT refused may go by hash in
pipelines (`by_hash_in_pipelines`: see `LogWriter`, and `settle` for a pipeline of one such
script whose other commands do not need it to run first); every other script is sent whole
there, and cannot fail that way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from gateway.store.client import StoreClient, StorePipeline

Arg = str | int | float


class Lua:
    def __init__(self, redis: StoreClient, source: str, by_hash_in_pipelines: bool = False) -> None:
        self._redis = redis
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._by_hash_in_pipelines = by_hash_in_pipelines
        # A call succeeded and no NOSCRIPT came since. On a Redis Cluster a node that lacks
        # the script answers NOSCRIPT once, clears this, and the next call sends it whole.
        self.loaded = False

    def queue(self, pipe: StorePipeline, keys: Sequence[str], args: Sequence[Arg] = ()) -> None:
        """Add the script to a pipeline; its result comes back in the pipeline's results. A
        script made `by_hash_in_pipelines` may answer NOSCRIPT there (it did not run): the
        caller passes its results to `saw` and queues it again."""
        if self._by_hash_in_pipelines and self.loaded:
            # Not `pipe.evalsha`: redis-py's cluster pipeline refuses it, for fear of the
            # NOSCRIPT that the caller handles here; the command routes by its keys like EVAL.
            pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        else:
            pipe.eval(self.source, len(keys), *keys, *args)

    def saw(self, results: Iterable[object]) -> None:
        """Learn from a pipeline's results of this script whether the server holds it."""
        seen = list(results)
        if any(isinstance(result, NoScriptError) for result in seen):
            self.loaded = False
        elif any(not isinstance(result, Exception) for result in seen):
            self.loaded = True

    async def settle(
        self, results: Sequence[object], index: int, keys: Sequence[str], args: Sequence[Arg] = ()
    ) -> Any:
        """This script's result at `index` of a pipeline's `results` (run with
        `raise_on_error=False`, holding no other script by hash). Raises the first error among
        them as the pipeline would have, but NOSCRIPT: then the script did not run, and runs
        now, whole, after the pipeline's other commands (so they must not need it first)."""
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, NoScriptError):
                raise result
        result = results[index]
        self.saw([result])
        return await self(keys, args) if isinstance(result, NoScriptError) else result

    async def __call__(
        self, keys: Sequence[str], args: Sequence[Arg] = (), client: StorePipeline | None = None
    ) -> Any:
        if client is not None:
            self.queue(client, keys, args)
            return client
        if self.loaded:
            try:
                return await self._redis.evalsha(self.sha, len(keys), *keys, *args)
            except NoScriptError:  # it did not run: running it whole is safe
                self.loaded = False
        result = await self._redis.eval(self.source, len(keys), *keys, *args)
        self.loaded = True
        return result
