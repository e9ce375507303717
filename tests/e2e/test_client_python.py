"""The Python client (gateway/client) against real gateways: in-thread ones, and real
processes for a restart mid-answer."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway_client import (
    Chunk,
    ConnectionState,
    Done,
    ErrorEvent,
    GatewayClient,
    GatewayError,
    Item,
    Notice,
    Run,
    Start,
)
from tests.conftest import GatewayFactory
from tests.support.processes import GatewayProcess, spawn
from tests.support.redis import RedisServer
from tests.support.refusing_proxy import refusing_proxy
from tests.support.serving import free_port
from tests.support.upstream import FakeUpstream
from tests.support.ws import connected

Mint = Callable[..., str]
SLOW = "fake-i5-n20"  # twenty tokens, 5 ms apart
SLOW_TEXT = "".join(f" t{i}" for i in range(20))
LONG = "fake-i20-n200"  # 4 s: cancelled long before its end


@dataclass
class States:
    """Every connection change a client reports, with a way to wait for one."""

    seen: list[ConnectionState] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __call__(self, state: ConnectionState) -> None:
        self.seen.append(state)
        self.changed.set()

    async def wait_for(
        self, test: Callable[[ConnectionState], bool], within: float = 15.0
    ) -> ConnectionState:
        async with asyncio.timeout(within):
            while True:
                for state in self.seen:
                    if test(state):
                        return state
                self.changed.clear()
                await self.changed.wait()

    def names(self) -> list[str]:
        return [s.state for s in self.seen]


def seqs(items: list[Item]) -> list[int | None]:
    return [i.seq for i in items if not isinstance(i, Notice)]


def text(items: list[Item]) -> str:
    return "".join(i.content for i in items if isinstance(i, Chunk))


async def until_tokens(run: Run, count: int) -> list[Item]:
    """The run's items until its text holds `count` of the fake upstream's numbered tokens
    (` t0 t1 …`); tokens that reach the gateway together come as one chunk."""
    items: list[Item] = []
    async for item in run:
        items.append(item)
        if text(items).count(" t") >= count:
            break
    return items


async def test_complete_streams_the_whole_answer_with_contiguous_seqs(
    gateway: str, token: Mint
) -> None:
    async with GatewayClient(gateway, token=token()) as client:
        run = client.complete("hi", model=SLOW, conversation_id=f"py-{uuid.uuid4().hex[:8]}")
        items = await run.collect()
    start, done = items[0], items[-1]
    assert isinstance(start, Start) and start.model == SLOW and start.agent == "chat"
    assert isinstance(done, Done) and done.finish_reason == "stop" and done.usage.total_tokens > 0
    assert seqs(items) == list(range(1, len(items) + 1))
    assert text(items) == SLOW_TEXT == run.text
    assert {i.generation_id for i in items} == {run.generation_id}
    assert {i.conversation_id for i in items} == {run.conversation_id}
    assert run.conversation_id is not None and run.conversation_id.startswith("py-")
    assert client.user == "alice" and client.state == "closed"


async def test_several_completions_at_once_interleave_on_one_socket(
    gateway: str, token: Mint
) -> None:
    states = States()
    async with GatewayClient(gateway, token=token(), on_state=states) as client:
        runs = [client.complete(f"q{n}", model=SLOW) for n in range(4)]
        results = await asyncio.gather(*(run.collect() for run in runs))
    for items in results:
        assert seqs(items) == list(range(1, len(items) + 1))
        assert text(items) == SLOW_TEXT and isinstance(items[-1], Done)
    assert len({run.generation_id for run in runs}) == 4
    assert states.names().count("connected") == 1  # one socket carried them all


async def test_messages_follows_every_page_of_a_conversation(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    with start_gateway(conversation_page_bytes=1) as url:  # one message a page
        async with GatewayClient(url, token=token()) as client:
            for n in range(2):
                await client.complete(f"q{n}", model="fake", conversation_id="pages").collect()
            first = await client.conversation("pages")
            every = await client.messages("pages")
            assert await client.messages("never-used") == []
    assert first is not None and len(first["messages"]) == 1 and first["next_cursor"]
    assert [m["content"] for m in every] == ["q0", "You said: q0", "q1", "You said: q1"]


async def test_cancel_ends_the_answer_with_a_cancelled_done(gateway: str, token: Mint) -> None:
    async with GatewayClient(gateway, token=token()) as client:
        run = client.complete("stop me", model=LONG)
        before = await until_tokens(run, 2)
        run.cancel()
        rest = await run.collect()
        other = client.complete("and me", model=LONG)
        first = await anext(other)
        assert isinstance(first, Start)
        assert await client.cancel(first.generation_id) == "running"  # over HTTP
        others = [first, *await other.collect()]
        assert run.conversation_id is not None
        view = await client.conversation(run.conversation_id)
        assert await client.conversation("never-used") is None
    items = before + rest
    assert seqs(items) == list(range(1, len(items) + 1))
    assert isinstance(items[-1], Done) and items[-1].finish_reason == "cancelled"
    assert isinstance(others[-1], Done) and others[-1].finish_reason == "cancelled"
    assert view is not None and view["generation"]["status"] == "cancelled"
    stored = view["messages"][-1]
    assert stored["status"] == "cancelled" and stored["content"] == run.text


async def test_a_cancel_before_sending_ends_the_run_with_no_events(
    gateway: str, token: Mint
) -> None:
    client = GatewayClient(gateway, token=token())
    run = client.complete("never sent")  # the socket is still opening: nothing went out
    run.cancel()
    assert await run.collect() == []
    await client.aclose()


# Restarts: real processes sharing one Redis, the second on the first one's port.

HELD = "fake-n12-hold4-py"  # twelve chunks: four, then waits for `release`, then the rest


@pytest.fixture
def environment(
    redis_server: RedisServer, upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> dict[str, str]:
    models = [HELD, "fake"]
    tables = "".join(
        f'[models.{name}]\nprovider = "openai"\nbase_url = "{upstream[1]}"\n'
        f'api_key_env = "FAKE_KEY"\n\n'
        for name in models
    )
    config = tmp_path / "gateway.toml"
    config.write_text(f'default_model = "fake"\n\n{tables}')
    return {
        "REDIS_URL": redis_server.url,
        "REDIS_PREFIX": f"py{uuid.uuid4().hex[:8]}:",
        "GATEWAY_CONFIG": str(config),
        "SHUTDOWN_DRAIN_SECONDS": "20",
        "LOG_LEVEL": "info",
    }


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    yield started
    for process in started:
        process.stop()


def listening(folder: Path, env: dict[str, str], port: int) -> GatewayProcess:
    """A gateway process on `port`, once it accepts connections."""
    gateway = spawn(folder, env, port)
    assert gateway.process.stdout is not None
    for line in gateway.process.stdout:
        gateway.output.append(line)
        if "Uvicorn running on" in line:
            return gateway
    raise RuntimeError("the gateway did not start:\n" + "".join(gateway.output))


async def test_a_restart_mid_answer_is_one_unbroken_stream(
    environment: dict[str, str],
    processes: list[GatewayProcess],
    tmp_path: Path,
    token: Mint,
    fake_upstream: FakeUpstream,
) -> None:
    """SIGTERM closes the socket with 1012; the client reconnects to the instance that took
    the port over and resumes from the last seq it saw, while the first one finishes the
    answer into the shared log."""
    port = free_port()
    first = await asyncio.to_thread(listening, tmp_path, environment, port)
    processes.append(first)
    states = States()
    async with GatewayClient(
        first.url, token=token(), on_state=states, reconnect_delay=0.1, max_reconnect_delay=0.5
    ) as client:
        run = client.complete("hold on", model=HELD)
        before = await until_tokens(run, 4)
        first.signal(signal.SIGTERM)
        await states.wait_for(lambda s: s.state == "reconnecting" and s.close_code == 1012)
        # uvicorn closes its listener before the sockets, so the port is free by now.
        second = await asyncio.to_thread(listening, tmp_path, environment, port)
        processes.append(second)
        await states.wait_for(lambda _: states.names().count("connected") == 2)
        fake_upstream.release(HELD)
        rest = await run.collect()
    items = before + rest
    assert seqs(items) == list(range(1, len(items) + 1))
    assert isinstance(items[-1], Done) and items[-1].finish_reason == "stop"
    assert text(items) == "".join(f" t{i}" for i in range(12))
    assert states.names().count("connected") == 2


# Tokens.


async def test_a_token_about_to_expire_is_renewed_on_the_live_socket(
    start_gateway: GatewayFactory, token: Mint
) -> None:
    refreshed = asyncio.Event()

    def refresh() -> str:
        refreshed.set()
        return token(ttl=600)

    states = States()
    with start_gateway(token_expiry_warning=1.9, token_expiry_grace=0.2) as url:
        async with GatewayClient(
            url, token=token(ttl=2), token_refresh=refresh, on_state=states
        ) as client:
            await client.connect()
            connection = client.connection_id
            # The answer outlives the first token and its grace: the socket must stay open.
            items = await client.complete("long", model=LONG).collect()
            assert refreshed.is_set() and client.token_refreshes == 1
            assert client.connection_id == connection
            assert client.expires_at is not None and client.expires_at > time.time() + 500
    assert seqs(items) == list(range(1, len(items) + 1))
    assert text(items) == "".join(f" t{i}" for i in range(200))
    assert states.names() == ["connecting", "connected", "closed"]


async def test_a_refused_token_is_refreshed_and_the_client_reconnects(
    gateway: str, token: Mint
) -> None:
    states = States()
    async with GatewayClient(
        gateway, token=token(ttl=-60), token_refresh=lambda: token(), on_state=states
    ) as client:
        items = await client.complete("hello").collect()
    assert isinstance(items[-1], Done) and text(items) == "You said: hello"
    refused = [s for s in states.seen if s.close_code == 4401]
    assert refused and refused[0].reason == "The token has expired."


async def test_a_refused_token_without_a_callback_is_a_clear_error(
    gateway: str, token: Mint
) -> None:
    async with GatewayClient(gateway, token=token(ttl=-60)) as client:
        run = client.complete("hello")
        with pytest.raises(GatewayError) as refused:
            await client.connect()
        with pytest.raises(GatewayError):
            await run.collect()
    assert refused.value.code == "unauthorized"
    assert str(refused.value) == "The gateway refused the token: The token has expired."


# Limits and heartbeats.


async def test_too_many_connections_waits_as_long_as_the_gateway_asks(
    start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    states = States()
    with start_gateway(limits=replace(settings.limits, connections=1)) as url:
        await connected(url, token())  # the user's one allowed socket
        async with GatewayClient(url, token=token(), on_state=states, reconnect_delay=0.1):
            waiting = await states.wait_for(lambda s: s.state == "reconnecting")
    assert waiting.close_code == 4429 and waiting.error is not None
    assert waiting.error.code == "rate_limited" and waiting.error.retry_after is not None
    # The backoff alone would be at most 0.1 s: the client waits what the gateway asked.
    assert waiting.delay == waiting.error.retry_after > 60
    assert "connections" in waiting.error.message


class Proxy:
    """A TCP relay between the client and a gateway that can go silent, like a network that
    drops a connection without closing it; new connections are relayed normally."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.silent: set[asyncio.StreamWriter] = set()
        self.clients: list[asyncio.StreamWriter] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.relays: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def freeze(self) -> None:
        self.silent.update(self.clients)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.relays.add(task)
        self.clients.append(writer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer, writer),
            self._pipe(up_reader, writer, writer),
            return_exceptions=True,
        )
        for end in (writer, up_writer):
            end.transport.abort()

    async def _pipe(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, client: Any
    ) -> None:
        while data := await source.read(65536):
            if client not in self.silent:
                sink.write(data)
                await sink.drain()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await asyncio.gather(*self.relays, return_exceptions=True)
        await self.server.wait_closed()


@asynccontextmanager
async def proxied(url: str) -> AsyncIterator[Proxy]:
    proxy = Proxy(int(url.rsplit(":", 1)[1]))
    yield proxy
    await proxy.close()


async def test_a_socket_that_stops_answering_pings_is_replaced_and_resumed(
    gateway: str, token: Mint
) -> None:
    states = States()
    async with proxied(gateway) as proxy:
        url = await proxy.start()
        async with GatewayClient(
            url,
            token=token(),
            on_state=states,
            ping_interval=0.2,
            pong_timeout=0.3,
            reconnect_delay=0.05,
        ) as client:
            run = client.complete("x", model="fake-i2-n100")
            before = await until_tokens(run, 3)
            proxy.freeze()
            rest = await run.collect()
    items = before + rest
    assert seqs(items) == list(range(1, len(items) + 1))
    assert text(items) == "".join(f" t{i}" for i in range(100))
    assert states.names().count("connected") == 2
    lost = next(s for s in states.seen if s.state == "reconnecting")
    assert lost.close_code == 1006


# The HTTP fallback.


async def test_http_transport_streams_cancels_and_resumes(gateway: str, token: Mint) -> None:
    states = States()
    async with GatewayClient(gateway, token=token(), transport="http", on_state=states) as c:
        items = await c.complete("over http", model=SLOW).collect()
        stopped = c.complete("stop", model=LONG)
        before = await until_tokens(stopped, 2)
        stopped.cancel()
        after = await stopped.collect()
        assert stopped.generation_id is not None
        again = await c.attach(stopped.generation_id, after=3).collect()
        assert await c.attach(stopped.generation_id, after=stopped.last_seq).collect() == []
    assert seqs(items) == list(range(1, len(items) + 1)) and text(items) == SLOW_TEXT
    cancelled = before + after
    assert isinstance(cancelled[-1], Done) and cancelled[-1].finish_reason == "cancelled"
    assert seqs(again) == list(range(4, len(cancelled) + 1))
    assert states.names() == ["http", "closed"]


async def test_no_websocket_getting_through_falls_back_to_http(gateway: str, token: Mint) -> None:
    states = States()
    blocked = gateway.replace("http://", "ws://") + "/healthz"  # refuses the upgrade
    async with GatewayClient(
        gateway,
        token=token(),
        ws_url=blocked,
        on_state=states,
        reconnect_delay=0.01,
        fallback_after=2,
    ) as client:
        items = await client.complete("hello", model=SLOW).collect()
        refused = await client.complete("x", model="nope").collect()
    assert seqs(items) == list(range(1, len(items) + 1)) and text(items) == SLOW_TEXT
    assert states.names()[-2:] == ["http", "closed"]
    assert states.names().count("reconnecting") == 1  # two sockets failed, then HTTP
    error = refused[-1]
    assert isinstance(error, ErrorEvent) and error.code == "bad_request"
    assert error.message.startswith("Unknown model 'nope'.")


def asked(fake: FakeUpstream, message: str) -> int:
    """How many times the model was asked `message`."""
    return sum(1 for r in fake.requests if r.messages and r.messages[-1]["content"] == message)


async def test_a_completion_sent_while_the_upgrade_is_refused_goes_over_http_once(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    states = States()
    message = f"while refused {uuid.uuid4().hex[:6]}"
    async with refusing_proxy(gateway) as proxy:
        proxy.hold()  # the first refusal takes its time: the client is still trying its socket
        async with GatewayClient(proxy.url, token=token(), on_state=states) as client:
            await proxy.until_upgrades(1)
            run = client.complete(message, model="fake")
            assert "POST /completion" not in proxy.requests
            proxy.release()  # 403
            released = time.monotonic()
            items = await run.collect()
            took = time.monotonic() - released
            assert run.conversation_id is not None
            stored = await client.conversation(run.conversation_id)
    assert text(items) == f"You said: {message}" and isinstance(items[-1], Done)
    assert seqs(items) == list(range(1, len(items) + 1))
    assert took < 5, f"answered {took:.1f} s after the refusal"
    assert states.names()[-2:] == ["http", "closed"]
    assert proxy.refused == 3  # fallback_after
    assert proxy.requests.count("POST /completion") == 1
    assert asked(fake_upstream, message) == 1
    assert stored is not None
    assert [m["content"] for m in stored["messages"] if m["role"] == "user"] == [message]


async def test_completions_while_reconnecting_into_a_refusal_are_each_sent_once(
    gateway: str, token: Mint, fake_upstream: FakeUpstream
) -> None:
    states = States()
    message = f"during the reconnect {uuid.uuid4().hex[:6]}"
    async with refusing_proxy(gateway) as proxy:
        proxy.refusing = False
        async with GatewayClient(
            proxy.url, token=token(), on_state=states, reconnect_delay=0.05
        ) as client:
            running = client.complete("long", model="fake-i2-n100")
            before = await until_tokens(running, 3)
            # The network changes: the socket drops and upgrades are refused from now on.
            proxy.refusing = True
            proxy.hold()
            upgrades = proxy.upgrades
            proxy.cut()
            await proxy.until_upgrades(upgrades + 1)
            assert client.state in ("connecting", "reconnecting")
            new = client.complete(message, model="fake")
            proxy.release()
            rest, items = await asyncio.gather(running.collect(), new.collect())
    whole = before + rest
    assert seqs(whole) == list(range(1, len(whole) + 1))
    assert text(whole) == "".join(f" t{i}" for i in range(100))
    assert text(items) == f"You said: {message}" and isinstance(items[-1], Done)
    assert states.names()[-2:] == ["http", "closed"]
    # The running one resumed by generation id; only the new one was posted, once.
    assert proxy.requests.count("POST /completion") == 1
    assert asked(fake_upstream, message) == 1


async def test_a_completion_after_aclose_ends_at_once_instead_of_waiting(
    gateway: str, token: Mint
) -> None:
    client = GatewayClient(gateway, token=token())
    async with client:
        await client.connect()
    run = client.complete("too late", model="echo")
    async with asyncio.timeout(5):
        with pytest.raises(GatewayError) as raised:
            await run.collect()
    assert raised.value.code == "closed"


async def test_a_refusal_over_the_socket_is_a_typed_error_event(
    start_gateway: GatewayFactory, settings: Settings, token: Mint
) -> None:
    limits = replace(settings.limits, requests_per_minute=1)
    with start_gateway(limits=limits) as url:
        async with GatewayClient(url, token=token(f"rl-{uuid.uuid4().hex[:6]}")) as client:
            first = await client.complete("one").collect()
            second = await client.complete("two").collect()
    assert isinstance(first[-1], Done)
    [error] = second
    assert isinstance(error, ErrorEvent) and error.code == "rate_limited" and error.retryable
    assert error.retry_after is not None and error.retry_after > 0
    assert error.generation_id is None and error.seq is None
