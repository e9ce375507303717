"""Commands packed by hiredis in one call: the same bytes as redis-py's packing, its errors
where it refuses an argument, and a real server that reads them."""

from __future__ import annotations

import enum
import math
import subprocess
import sys

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from gateway.store.packing import HiredisPacking, connection_class, packed_by_hiredis
from tests.support.redis import RedisServer


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Loud(str):
    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.upper().encode(encoding, errors)


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
    ("CONFIG\tGET", "maxmemory"),
    ("\tPING",),
    ("",),
    ("SET", memoryview(b"k"), bytearray(b"v")),
    ("SET", "k", memoryview(b"abcdef")[::2]),  # not contiguous
    ("SET", Color.RED, Level.HIGH, Loud("v")),  # subclasses: redis-py's encoding decides
    ("SET", "k", 2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 10**4000),
    ("PING",),
]


def packer() -> tuple[Connection, Connection]:
    plain = Connection(host="127.0.0.1", port=1)
    ours = packed_by_hiredis(Connection)(host="127.0.0.1", port=1)
    assert isinstance(ours, HiredisPacking)
    return plain, ours


def wire(chunks: list[bytes]) -> bytes:
    return b"".join(bytes(chunk) for chunk in chunks)  # redis-py passes memoryviews on


@pytest.mark.parametrize("args", ARGUMENTS, ids=lambda args: str(args[0]))
def test_packs_the_bytes_redis_py_packs(args: tuple[object, ...]) -> None:
    plain, ours = packer()
    assert wire(ours.pack_command(*args)) == wire(plain.pack_command(*args))  # type: ignore[arg-type]
    many = [args, ("PING",), args]
    assert wire(ours.pack_commands(many)) == wire(plain.pack_commands(many))  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [True, None, object(), [1]])
def test_refuses_what_redis_py_refuses_with_its_error(bad: object) -> None:
    _, ours = packer()
    with pytest.raises(DataError):
        ours.pack_command("SET", "k", bad)  # type: ignore[arg-type]  # what a caller may pass


def test_an_int_too_long_to_write_is_refused_as_by_redis_py_not_a_crash() -> None:
    """hiredis crashes the process on an int past Python's 4,300-digit limit (a client's
    `max_tokens` of that many nines once reached a script's arguments): in a child, so that
    a crash fails this test rather than ending the run."""
    code = (
        "from redis.asyncio.connection import Connection\n"
        "from gateway.store.packing import packed_by_hiredis\n"
        "ours = packed_by_hiredis(Connection)(host='127.0.0.1', port=1)\n"
        "try:\n"
        "    ours.pack_command('SET', 'k', 10**5000)\n"
        "except ValueError:\n"
        "    print('refused')\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert child.returncode == 0, child.stderr.decode(errors="replace")[-500:]
    assert child.stdout.decode().strip() == "refused"


@pytest.mark.parametrize(
    ("encoding", "errors"),
    [("latin-1", "strict"), ("utf-8", "replace"), ("utf-8", "surrogatepass")],
)
def test_a_client_that_encodes_otherwise_packs_as_redis_py_does(encoding: str, errors: str) -> None:
    plain = Connection(host="127.0.0.1", port=1, encoding=encoding, encoding_errors=errors)
    ours = packed_by_hiredis(Connection)(
        host="127.0.0.1", port=1, encoding=encoding, encoding_errors=errors
    )
    text = "café \ud800" if errors != "strict" else "café"
    assert ours.pack_command("SET", "k", text) == plain.pack_command("SET", "k", text)


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
