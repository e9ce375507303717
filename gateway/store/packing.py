"""Commands packed for the wire by hiredis in one call.

redis-py packs through hiredis too, but first passes every argument through its encoder in
Python (type checks, `str.encode`, `repr` of numbers): about 0.5 µs an argument, most of the
cost of a generation log's append (18 arguments: 9.4 µs, against 2.5 µs here,
`python -m bench.packing`). hiredis takes str, int, float and bytes itself and writes them
exactly as that encoder does (UTF-8; numbers as `repr`), so a command made only of those goes
to it directly. Anything else takes redis-py's own way, with its errors: a bool (refused), a
subclass of any of them (an enum writes as redis-py writes it), a bytearray or memoryview, an
int beyond 64 bits (hiredis cannot write one past Python's 4,300-digit `repr` limit, and
crashes the process trying: redis-py raises ValueError), a first argument that is empty or
holds whitespace (redis-py splits "CONFIG GET" in two), or a client whose encoding is not
UTF-8, strictly (an `encoding` or `encoding_errors` in the Redis URL).

A Redis Cluster client chooses its nodes' connection class itself: it keeps redis-py's packing.
"""

from __future__ import annotations

import codecs
from typing import Any, TypeVar, cast

import hiredis
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.typing import EncodableT

C = TypeVar("C", bound=AbstractConnection)


INT64 = range(-(2**63), 2**63)


class HiredisPacking(AbstractConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        encoder = self.encoder
        self._by_hiredis = (
            codecs.lookup(encoder.encoding).name == "utf-8" and encoder.encoding_errors == "strict"
        )

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        if self._by_hiredis and _plain(args):
            # Its stub reads the argument as a tuple of one item.
            return [hiredis.pack_command(cast(Any, args))]
        return super().pack_command(*args)


def _plain(args: tuple[object, ...]) -> bool:
    """Whether hiredis writes `args` as redis-py would (see the module's docstring)."""
    if not args or type(args[0]) is not str or args[0].split() != [args[0]]:
        return False
    for arg in args:
        kind = type(arg)
        if kind is int:
            if arg not in INT64:
                return False
        elif kind is not str and kind is not bytes and kind is not float:
            return False
    return True


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
