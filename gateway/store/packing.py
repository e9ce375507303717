"""Commands packed for the wire by hiredis in one call.

redis-py packs through hiredis too, but first passes every argument through its encoder in
Python (type checks, `str.encode`, `repr` of numbers): about 0.5 µs an argument, most of the
cost of a generation log's append (18 arguments: 9.4 µs, against 1.4 µs for hiredis alone,
`python -m bench.packing`). hiredis takes str, int, float and bytes itself and writes them
exactly as that encoder does (UTF-8; numbers as `repr`), so a command made only of those goes
to it directly. Anything else (a bool, which redis-py refuses; a memoryview; a first argument
of two words such as "CONFIG GET", which redis-py splits) takes redis-py's own way, with its
errors. The store's clients encode as UTF-8, strictly (redis-py's default, which we keep).

A Redis Cluster client chooses its nodes' connection class itself: it keeps redis-py's packing.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

import hiredis
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.typing import EncodableT

C = TypeVar("C", bound=AbstractConnection)


class HiredisPacking(AbstractConnection):
    def pack_command(self, *args: EncodableT) -> list[bytes]:
        first = args[0] if args else None
        if isinstance(first, str) and " " not in first:
            try:  # hiredis checks the types itself (its stub reads as a tuple of one)
                return [hiredis.pack_command(cast(Any, args))]
            except TypeError:  # a type hiredis does not take: redis-py says which
                pass
        return super().pack_command(*args)


_classes: dict[type[Any], type[Any]] = {}


def packed_by_hiredis(base: type[C]) -> type[C]:
    """`base` (TCP, TLS or unix-socket connection) with commands packed by hiredis; one
    class per base, made once."""
    if base not in _classes:
        _classes[base] = type(f"Hiredis{base.__name__}", (HiredisPacking, base), {})
    return cast(type[C], _classes[base])


def connection_class(redis_url: str) -> type[AbstractConnection]:
    """The connection class redis-py would choose for `redis_url`, packing with hiredis."""
    base = parse_url(redis_url).get("connection_class", Connection)
    return packed_by_hiredis(base)
