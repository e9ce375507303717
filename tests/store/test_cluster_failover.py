"""The gateway through a Redis Cluster failover: three primaries with a replica each, a short
cluster-node-timeout so a replica takes over within seconds, two gateway processes, and a
primary killed (SIGKILL) while generations run on one instance and are followed from the
other. Followers, writers and cancels go on once the cluster is whole again, and a failover
longer than LEASE_TTL ends no healthy generation `interrupted`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from redis import Redis
from redis.asyncio import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from websockets.asyncio.client import ClientConnection

from gateway.store.keys import Keys
from gateway.store.unreachable import store_error
from tests.client import connected, receive, send, text_of, until_done
from tests.processes import GatewayProcess, config_file, gateway_environment, start_pair
from tests.support.redis_cluster import Cluster, poll, running_cluster
from tests.upstream import FakeUpstream

Mint = Callable[..., str]
NODE_TIMEOUT_MS = 2000  # cluster-node-timeout: a replica takes over 3-4 s after its primary dies
LEASE_TTL = 2  # seconds: shorter than a failover
TOKENS = 20
HELD = 3  # chunks sent before a held generation waits for the test
FOLLOWED = f"fake-n{TOKENS}-hold{HELD}-followed"
CANCELLED = f"fake-n{TOKENS}-hold{HELD}-cancelled"
OUTAGE = f"fake-n{TOKENS}-hold{HELD}-outage"
TEXT = "".join(f" t{i}" for i in range(TOKENS))
RECOVERY = 10.0  # seconds after the cluster is whole by which everything must have gone on


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    folder = tmp_path_factory.mktemp("failover")
    with running_cluster(
        folder, 3, replicas=1, node_timeout_ms=NODE_TIMEOUT_MS, persistent=True
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def env(
    cluster: Cluster, upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("failover-gateways")
    # A failover (3 to 4 s) outlasts LEASE_TTL, which is still well above the time a client
    # takes to learn a cluster whose nodes are starting again; a node that stops answering
    # is given up on after REDIS_SOCKET_TIMEOUT. A held generation waits for the test as long
    # as the nodes take to come back, longer than the tests' usual upstream read timeout.
    return gateway_environment(
        cluster.url,
        config_file(folder, upstream[1], (FOLLOWED, CANCELLED, OUTAGE)),
        REDIS_CLUSTER="1",
        LEASE_TTL=str(LEASE_TTL),
        REDIS_SOCKET_TIMEOUT="1.5",
        UPSTREAM_READ_TIMEOUT="60",
    )


@pytest.fixture(scope="module")
def pair(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    a, b = start_pair(tmp_path_factory.mktemp("failover-pair"), env)
    yield a, b
    a.stop()
    b.stop()


@dataclass
class Running:
    """A held generation on instance A: its socket there, and what it sent so far."""

    sub: str
    ws: ClientConnection
    frames: list[dict[str, Any]]

    @property
    def generation_id(self) -> str:
        return str(self.frames[0]["generation_id"])


def user() -> str:
    return f"u{uuid.uuid4().hex[:8]}"


async def start_held(url: str, token: Mint, model: str) -> Running:
    sub = user()
    ws = await connected(url, token(sub))
    await send(ws, type="completion", id="r", message="x", model=model)
    frames: list[dict[str, Any]] = []
    held = TEXT[: len("".join(f" t{i}" for i in range(HELD)))]
    while text_of(frames) != held:  # tokens sent together may arrive as one chunk
        frames.append(await receive(ws))
        assert not frames[-1]["done"], frames[-1]
    return Running(sub, ws, frames)


async def held_on(
    cluster: Cluster, keys: Keys, url: str, token: Mint, port: int, model: str = FOLLOWED
) -> list[Running]:
    """Held generations on instance `url` until one has its keys on the primary at `port`
    (ids are the gateway's, so this takes a few tries); all of them are returned."""
    started: list[Running] = []
    for _ in range(30):
        started.append(await start_held(url, token, model))
        if owner(cluster, keys.generation(started[-1].generation_id)) == port:
            return started
    raise AssertionError("no generation landed on the node")


def owner(cluster: Cluster, key: str) -> int:
    return cluster.owner(key_slot(key.encode()))


async def fail_over(cluster: Cluster, port: int, freeze: bool = False) -> float:
    """Kill the primary at `port` (or freeze it: its connections stay open and silent) and
    wait until a replica serves its slots and every node says the cluster is ok; returns when
    that was (time.monotonic)."""
    slots = [first for first, primary in cluster.slot_owners().items() if primary == port]
    assert slots
    victim = cluster.node(port)
    # Replication is asynchronous: a write the primary took just before it dies may never
    # reach the replica that takes over. These tests are about recovering from a failover,
    # not about that loss, so the replica holds what was written before the kill.
    with Redis(host="127.0.0.1", port=port) as primary:
        primary.execute_command("WAIT", 1, 5000)
    killed = time.monotonic()
    if freeze:
        victim.freeze()
    else:
        victim.kill()

    def taken_over() -> bool:
        try:
            return all(cluster.owner(slot) != port for slot in slots) and cluster.ok()
        except (OSError, RedisError):  # a node that cannot tell yet
            return False

    await asyncio.to_thread(poll, "failed over", taken_over, 30)
    whole = time.monotonic()
    print(f"a replica served {whole - killed:.2f} s after the kill")
    return whole


async def rejoin(cluster: Cluster, port: int) -> None:
    """Start the killed (or frozen) node again: it rejoins as a replica, and the cluster is
    whole."""
    cluster.node(port).kill()
    cluster.node(port).start()
    await asyncio.to_thread(poll, "whole", cluster.whole, 30)


async def follow_from(url: str, token: str, generation_id: str, after: int) -> ClientConnection:
    ws = await connected(url, token)
    await send(ws, type="resume", generation_id=generation_id, after=after, id="f")
    resumed = await receive(ws)
    assert resumed["type"] == "resumed" and resumed["status"] == "running", resumed
    return ws


async def get(url: str, token: str, path: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=20) as client:
        return await client.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"})


async def test_followers_and_writers_go_on_after_the_default_node_fails_over(
    cluster: Cluster,
    pair: tuple[GatewayProcess, GatewayProcess],
    env: dict[str, str],
    token: Mint,
    fake_upstream: FakeUpstream,
) -> None:
    """The primary every cluster client takes as its default node (the one serving slot 0)
    dies while generations run on A, one of them with its keys on that node, and clients
    follow them from B. Once a replica has taken over, A writes the rest of each log and its
    answer, and B's followers get every event once, in order, ending `done`: no follower
    hangs and no generation is ended `interrupted`, although the failover outlasts LEASE_TTL."""
    a, b = pair
    keys = Keys(env["REDIS_PREFIX"])
    victim = cluster.owner(0)
    client = RedisCluster.from_url(cluster.url)
    await client.initialize()
    assert client.get_default_node().port == victim  # as for the gateways' clients
    await client.aclose()
    running = await held_on(cluster, keys, a.url, token, victim)
    followers = [
        await follow_from(b.url, token(r.sub), r.generation_id, r.frames[-1]["seq"])
        for r in running
    ]
    killed = time.monotonic()
    whole = await fail_over(cluster, victim)
    assert whole - killed > LEASE_TTL  # every lease on the killed node lapsed meanwhile
    fake_upstream.release(FOLLOWED)
    try:
        async with asyncio.timeout(RECOVERY):
            rest = await asyncio.gather(*(until_done(ws, "f") for ws in followers))
            owned = await asyncio.gather(*(until_done(r.ws, "r") for r in running))
        took = time.monotonic() - whole
    finally:
        await rejoin(cluster, victim)
    print(f"followers done {took:.2f} s after the cluster was whole")
    for generation, followed, own in zip(running, rest, owned, strict=True):
        frames = generation.frames + [f for f in followed if f["type"] != "notice"]
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
        assert text_of(frames) == TEXT and text_of(generation.frames + own) == TEXT
        assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop", frames[-1]
        view = (
            await get(
                b.url, token(generation.sub), f"/conversations/{frames[0]['conversation_id']}"
            )
        ).json()
        assert view["generation"]["status"] == "complete"
        assert view["messages"][-1]["content"] == TEXT
    for ws in (*followers, *(r.ws for r in running)):
        await ws.close()


async def test_a_cancel_from_the_other_instance_lands_after_its_channels_node_fails_over(
    cluster: Cluster,
    pair: tuple[GatewayProcess, GatewayProcess],
    env: dict[str, str],
    token: Mint,
) -> None:
    """The primary serving the cancel channel's slot (where every instance subscribed) and
    the generation's keys dies. Once a replica has taken over, a cancel sent from B reaches
    the generation running on A within seconds, or is refused as retryable (503) until it
    can be sent; the generation ends `cancelled` and its answer is stored."""
    a, b = pair
    keys = Keys(env["REDIS_PREFIX"])
    victim = owner(cluster, keys.cancel_channel())
    started = await held_on(cluster, keys, a.url, token, victim, CANCELLED)
    whole = await fail_over(cluster, victim)
    generation = started[-1]
    try:
        async with asyncio.timeout(RECOVERY):
            while True:
                async with httpx2.AsyncClient(timeout=RECOVERY) as client:
                    cancelled = await client.post(
                        f"{b.url}/generations/{generation.generation_id}/cancel",
                        headers={"Authorization": f"Bearer {token(generation.sub)}"},
                    )
                if cancelled.status_code != 503:
                    break
                await asyncio.sleep(0.2)  # a retryable refusal: try again, under the deadline
            assert cancelled.status_code == 202, cancelled.text
            frames = generation.frames + await until_done(generation.ws, "r")
        took = time.monotonic() - whole
    finally:
        await rejoin(cluster, victim)
    print(f"cancel landed {took:.2f} s after the cluster was whole")
    final = frames[-1]
    assert final["type"] == "done" and final["finish_reason"] == "cancelled", final
    view = (
        await get(b.url, token(generation.sub), f"/conversations/{final['conversation_id']}")
    ).json()
    assert view["generation"]["status"] == "cancelled"
    for other in started[:-1]:
        await send(other.ws, type="cancel", id="r")  # the others, held, end now
        await until_done(other.ws, "r")
    for other in started:
        await other.ws.close()


async def test_both_instances_listen_for_cancels_again_when_their_channels_node_freezes(
    cluster: Cluster, pair: tuple[GatewayProcess, GatewayProcess], env: dict[str, str]
) -> None:
    """The node every instance listens to for cancels stops answering without closing its
    connections (a frozen host): each instance notices the silence and subscribes again
    through the node that serves the channel's slot once a replica has taken over. (Before,
    each waited on the frozen node for good, and heard a cancel only at its lease renewal.)"""
    channel = Keys(env["REDIS_PREFIX"]).cancel_channel()
    victim = owner(cluster, channel)
    whole = await fail_over(cluster, victim, freeze=True)
    try:
        listening = lambda: cluster.subscribers(channel) == len(pair)  # noqa: E731
        await asyncio.to_thread(poll, "listening again", listening, RECOVERY)
        took = time.monotonic() - whole
    finally:
        await rejoin(cluster, victim)
    print(f"both instances listened again {took:.2f} s after the cluster was whole")


async def test_while_no_node_answers_requests_are_refused_as_retryable_and_followers_wait(
    cluster: Cluster,
    pair: tuple[GatewayProcess, GatewayProcess],
    token: Mint,
    fake_upstream: FakeUpstream,
) -> None:
    """Every node stops at once (the cluster, or the network to it, is gone): the cluster
    client cannot learn the cluster from any node, and says so with an error of its own
    (RedisClusterException, caused by the last node's ConnectionError). Requests get
    `unavailable` (503, retryable), not an internal error; a follower on the other instance
    is told the store is unreachable and, once the nodes are back, gets the rest through
    `done` (before, its stream stopped for good without a final event)."""
    a, b = pair
    generation = await start_held(a.url, token, OUTAGE)
    follower = await follow_from(
        b.url, token(generation.sub), generation.generation_id, generation.frames[-1]["seq"]
    )
    path = f"/conversations/{generation.frames[0]['conversation_id']}"
    cluster.stop()  # SIGTERM: each node writes its append-only file and exits
    try:
        for url in (a.url, b.url):
            refused = await get(url, token(generation.sub), path)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "unavailable", refused.text
    finally:
        cluster.start()
        await asyncio.to_thread(poll, "whole", cluster.whole, 30)
    whole = time.monotonic()
    fake_upstream.release(OUTAGE)
    async with asyncio.timeout(RECOVERY):
        followed = await until_done(follower, "f")
        own = await until_done(generation.ws, "r")
    print(f"followers done {time.monotonic() - whole:.2f} s after the nodes were back")
    assert "store_unreachable" in [f.get("code") for f in followed if f["type"] == "notice"]
    frames = generation.frames + [f for f in followed if f["type"] != "notice"]
    assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop", (followed, own)
    assert text_of(frames) == TEXT and text_of(generation.frames + own) == TEXT, (followed, own)
    view = (await get(b.url, token(generation.sub), path)).json()
    assert view["generation"]["status"] == "complete"
    assert view["messages"][-1]["content"] == TEXT
    for ws in (follower, generation.ws):
        await ws.close()


def test_a_cluster_no_node_of_which_answers_is_unavailable_but_a_command_none_can_take_is_not() -> (
    None
):
    """The cluster client's own exception is a passing outage only when a node's failure
    caused it; without one it is a command no node can take (a bug), which stays internal."""
    outage = RedisClusterException("Redis Cluster cannot be connected.")
    outage.__cause__ = RedisConnectionError("Connection refused")  # as `raise ... from` sets it
    assert store_error(outage) is not None
    assert store_error(RedisClusterException("all keys must map to the same key slot")) is None
