"""Commands packed by hiredis in one call: the same bytes as redis-py's packing, its errors
where it refuses an argument, and a real server that reads them."""

from __future__ import annotations

import math

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from gateway.store.packing import HiredisPacking, connection_class, packed_by_hiredis
from tests.support.redis import RedisServer

ARGUMENTS: list[tuple[object, ...]] = [
    ("EVALSHA", "a" * 40, 3, "{g}:meta", "{g}:events", "{g}:lease", 10_000, 0, "", 0, 0, 0),
    ("SET", "k", "naïve — 你好 🙂", "PX", 1500),
    ("XADD", "s", "MAXLEN", "~", 10, "17-0", "e", '{"type":"chunk","delta":"hi"}'),
    ("ZADD", "z", -7, "a", 2**70, "b", -(2**63), "c"),
    ("ZADD", "z", 0.1, "a", 1 / 3, "b", 1e-7, "c", 1e20, "d", -0.0, "e", 123456789.125, "f"),
    ("ZADD", "z", math.inf, "a", -math.inf, "b"),
    ("SET", b"k\x00\xff", b"\r\n$3\r\n"),
    ("SET", "big", "x" * 100_000),
    ("CONFIG GET", "maxmemory"),  # two words: redis-py splits them
    ("SET", memoryview(b"k"), bytearray(b"v")),
    ("PING",),
]


def packer() -> tuple[Connection, Connection]:
    plain = Connection(host="127.0.0.1", port=1)
    ours = packed_by_hiredis(Connection)(host="127.0.0.1", port=1)
    assert isinstance(ours, HiredisPacking)
    return plain, ours


@pytest.mark.parametrize("args", ARGUMENTS, ids=lambda args: str(args[0]))
def test_packs_the_bytes_redis_py_packs(args: tuple[object, ...]) -> None:
    plain, ours = packer()
    assert b"".join(ours.pack_command(*args)) == b"".join(plain.pack_command(*args))  # type: ignore[arg-type]
    many = [args, ("PING",), args]
    assert b"".join(ours.pack_commands(many)) == b"".join(plain.pack_commands(many))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, None, object(), [1]])
def test_refuses_what_redis_py_refuses_with_its_error(bad: object) -> None:
    _, ours = packer()
    with pytest.raises(DataError):
        ours.pack_command("SET", "k", bad)  # type: ignore[arg-type]  # what a caller may pass


def test_a_string_that_is_not_unicode_is_refused_as_by_redis_py() -> None:
    plain, ours = packer()
    with pytest.raises(UnicodeEncodeError):
        plain.pack_command("SET", "k", "\udcff")
    with pytest.raises(UnicodeEncodeError):
        ours.pack_command("SET", "k", "\udcff")


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("redis://127.0.0.1:6379/0", Connection),
        ("rediss://127.0.0.1:6379/0", SSLConnection),
        ("unix:///tmp/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_keeps_the_connection_kind_the_url_names(url: str, base: type) -> None:
    chosen = connection_class(url)
    assert issubclass(chosen, base) and issubclass(chosen, HiredisPacking)
    assert connection_class(url) is chosen  # one class per kind, not one per client


async def test_a_server_reads_what_it_packs(redis_server: RedisServer) -> None:
    client = Redis.from_url(
        redis_server.url, connection_class=connection_class(redis_server.url), decode_responses=True
    )
    try:
        text = "naïve — 你好 🙂 " + "x" * 10_000
        await client.set("packing:text", text)
        assert await client.get("packing:text") == text
        script = "return {ARGV[1], ARGV[2], ARGV[3], KEYS[1]}"
        assert await client.eval(script, 1, "packing:k", 7, 0.25, "é") == [
            "7",
            "0.25",
            "é",
            "packing:k",
        ]
        async with client.pipeline(transaction=False) as pipe:
            pipe.incrby("packing:n", 5)
            pipe.incrbyfloat("packing:n", 0.5)
            pipe.get("packing:n")
            assert await pipe.execute() == [5, 5.5, "5.5"]
        assert await client.config_get("maxmemory")  # a two-word command
    finally:
        await client.delete("packing:text", "packing:n")
        await client.aclose()
