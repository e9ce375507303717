"""The gateway on a real Redis Cluster of three primaries, with two gateway processes.

The cluster runs from the same redis-server binary as the other tests and is created with
`redis-cli --cluster create`; the gateways reach it through one node (REDIS_CLUSTER=1).
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.config import ConfigError, Settings
from gateway.events import Chunk, Done, Start, Usage
from gateway.protocol.activity import ActivityEntry, conversation_updated
from gateway.store.activity import ActivityLog
from gateway.store.activity_hub import CLUSTER_SWEEP, ActivityHub
from gateway.store.client import StorePipeline, cluster_client
from gateway.store.conversations import ConversationStore
from gateway.store.keys import Keys
from gateway.store.log_hub import LogHub
from gateway.store.log_reads import PolledReads
from gateway.store.log_writer import LogWriter
from gateway.store.logs import GenerationLog
from gateway.store.messages import StoredMessage
from gateway.store.records import GenerationMeta
from tests.client import connected, receive, send, text_of, until_done
from tests.e2e.test_resume import SLOW, SLOW_TEXT, read_through, resume_sse, resume_ws
from tests.processes import (
    GatewayProcess,
    config_file,
    gateway_environment,
    start_pair,
    start_process,
)
from tests.store.test_log_hub import follow
from tests.store.test_storage import (
    Account,
    a_turn_over_the_quota_takes_nothing_until_space_is_freed,
    turns_count_every_stored_byte_across_trims,
)
from tests.support.polling import settle
from tests.support.redis_cluster import Cluster, running_cluster
from tests.upstream import FakeUpstream

Mint = Callable[..., str]
LONG = "fake-i20-n200"  # 200 tokens, 20 ms apart: runs until cancelled
NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), primaries=NODES) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def cluster_env(
    cluster: Cluster, upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("cluster-gateways")
    return gateway_environment(
        cluster.url,
        config_file(folder, upstream[1]),
        REDIS_CLUSTER="1",
        LIMIT_CONCURRENT_GENERATIONS="1",
    )


@pytest.fixture(scope="module")
def pair(
    cluster_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    a, b = start_pair(tmp_path_factory.mktemp("cluster-pair"), cluster_env)
    yield a, b
    a.stop()
    b.stop()


@dataclass
class Store:
    """The cluster as the tests inspect it: the cluster client and the gateways' key names."""

    client: RedisCluster
    keys: Keys

    def node_port(self, key: str) -> int:
        node = self.client.get_node_from_key(key)
        assert node is not None
        return int(node.port)

    def spread(self, owner: str) -> list[str]:
        """Conversation ids of `owner` whose keys land on each node in turn, one per node."""
        found: dict[int, str] = {}
        while len(found) < NODES:
            candidate = f"c{uuid.uuid4().hex[:10]}"
            found.setdefault(self.node_port(self.keys.conversation(owner, candidate)), candidate)
        return list(found.values())


@pytest.fixture
async def store(cluster: Cluster, cluster_env: dict[str, str]) -> AsyncIterator[Store]:
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
    await client.initialize()
    yield Store(client, Keys(cluster_env["REDIS_PREFIX"]))
    await client.aclose()


def user() -> str:
    """A user of one test only, so the per-user limit of one generation never links tests."""
    return f"u{uuid.uuid4().hex[:8]}"


async def turn(url: str, token: str, conversation_id: str, message: str) -> list[dict[str, Any]]:
    ws = await connected(url, token)
    await send(ws, type="completion", id="t", message=message, conversation_id=conversation_id)
    frames = await until_done(ws, "t")
    await ws.close()
    return frames


async def get(url: str, token: str, path: str) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=20) as client:
        return await client.get(f"{url}{path}", headers={"Authorization": f"Bearer {token}"})


async def test_the_cluster_has_three_primaries_and_the_gateways_are_ready(
    pair: tuple[GatewayProcess, GatewayProcess], store: Store
) -> None:
    primaries = store.client.get_primaries()
    assert len(primaries) == NODES
    for node in primaries:
        info = await store.client.cluster_info(target_nodes=node)
        assert info["cluster_state"] == "ok" and int(info["cluster_slots_assigned"]) == 16384
    for gateway in pair:
        async with httpx2.AsyncClient(timeout=20) as client:
            ready = await client.get(f"{gateway.url}/readyz")
        assert ready.status_code == 200 and ready.json()["redis"] == "ok"
    # Both gateways listen on the cancel channel, through whichever node they picked.
    assert await cancel_listeners(store, primaries, expected=len(pair)) == len(pair)


async def cancel_listeners(store: Store, primaries: list[Any], expected: int) -> int:
    """Subscribers of the cancel channel over all nodes, once there are `expected` (a
    gateway subscribes just after it starts) or after 5 s."""
    channel = store.keys.cancel_channel()
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        counts = [
            dict(await store.client.pubsub_numsub(channel, target_nodes=node))[channel]
            for node in primaries
        ]
        if sum(counts) == expected or asyncio.get_running_loop().time() > deadline:
            return sum(counts)
        await asyncio.sleep(0.05)  # polling a condition, under the deadline above


async def test_keys_of_one_conversation_or_generation_share_a_slot_and_spread_over_nodes(
    pair: tuple[GatewayProcess, GatewayProcess], store: Store, token: Mint
) -> None:
    a, _ = pair
    sub, keys = user(), store.keys
    conversations = store.spread(sub)
    generations = []
    for conversation_id in conversations:
        frames = await turn(a.url, token(sub), conversation_id, "hello")
        assert frames[-1]["type"] == "done"
        generations.append(frames[0]["generation_id"])
    groups = [
        [keys.user_conversations(sub), keys.user_generations(sub), keys.user_rate(sub)],
        *(
            [
                keys.conversation(sub, c),
                keys.messages(sub, c),
                keys.conversation_generations(sub, c),
            ]
            for c in conversations
        ),
        *([keys.generation(g), keys.events(g), keys.lease(g)] for g in generations),
    ]
    for group in groups:
        slots = {await store.client.cluster_keyslot(key) for key in group}
        assert slots == {key_slot(group[0].encode())}, group
    # Each conversation's keys are on the node that owns its slot, and that is each node once.
    ports = []
    for conversation_id in conversations:
        port = store.node_port(keys.conversation(sub, conversation_id))
        node = Redis(port=port, decode_responses=True)
        stored = await node.exists(
            keys.conversation(sub, conversation_id),
            keys.nodes(sub, conversation_id),
            keys.conversation_generations(sub, conversation_id),
        )
        await node.aclose()
        assert stored == 3
        ports.append(port)
    assert sorted(ports) == sorted(n.port for n in store.client.get_primaries())


async def test_resume_on_the_other_instance_at_many_points(
    pair: tuple[GatewayProcess, GatewayProcess], store: Store, token: Mint
) -> None:
    """After a resume from seq k on the other instance, every event with seq > k arrives
    exactly once, in order, whichever node holds the generation's log."""
    a, b = pair
    sub = user()
    conversations = store.spread(sub)
    for round_, cut in enumerate((1, 4, 9, 14, 21, 22)):
        ws = await connected(a.url, token(sub))
        where = conversations[round_ % NODES]
        await send(ws, type="completion", id="r", message="x", model=SLOW, conversation_id=where)
        before = await read_through(ws, "r", cut)
        generation_id = before[0]["generation_id"]
        await ws.close()
        last_seen = before[-1]["seq"]
        if round_ % 2:
            status, after = await resume_sse(b.url, token(sub), generation_id, last_seen)
            assert status == (204 if before[-1]["done"] else 200)
        else:
            resumed, after = await resume_ws(b.url, token(sub), generation_id, last_seen)
            assert resumed["from_seq"] == last_seen and resumed["generation_id"] == generation_id
        frames = before + after
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1)), (round_, cut)
        assert text_of(frames) == SLOW_TEXT
        assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "stop"


async def heard(listener: Any) -> str:
    """The first message on a subscribed channel."""
    async with asyncio.timeout(5):
        async for message in listener.listen():
            if message["type"] == "message":
                return str(message["data"])
    raise AssertionError("the subscription ended")


async def test_cancel_from_the_other_instance_over_http_and_over_a_socket(
    pair: tuple[GatewayProcess, GatewayProcess], store: Store, token: Mint
) -> None:
    a, b = pair
    sub = user()
    ws = await connected(a.url, token(sub))
    await send(ws, type="completion", id="r", message="x", model=LONG)
    frames = await read_through(ws, "r", 3)
    generation_id, conversation_id = frames[0]["generation_id"], frames[0]["conversation_id"]
    # A listener on a node that does not hold the generation hears the cancel all the same.
    elsewhere = next(
        node
        for node in store.client.get_primaries()
        if node.port != store.node_port(store.keys.generation(generation_id))
    )
    listener = store.client.pubsub(node=elsewhere)
    await listener.subscribe(store.keys.cancel_channel())
    async with httpx2.AsyncClient(timeout=20) as client:
        cancelled = await client.post(
            f"{b.url}/generations/{generation_id}/cancel",
            headers={"Authorization": f"Bearer {token(sub)}"},
        )
    assert cancelled.status_code == 202
    assert await heard(listener) == generation_id
    await listener.aclose()
    frames += await until_done(ws, "r")
    assert frames[-1]["type"] == "done" and frames[-1]["finish_reason"] == "cancelled"
    view = (await get(b.url, token(sub), f"/conversations/{conversation_id}")).json()
    assert view["generation"]["status"] == "cancelled"
    assert view["messages"][-1]["status"] == "cancelled"
    assert view["messages"][-1]["content"] == text_of(frames)

    await send(ws, type="completion", id="s", message="x", model=LONG)
    generation_id = (await receive(ws))["generation_id"]
    other = await connected(b.url, token(sub))
    await send(other, type="cancel", generation_id=generation_id)
    assert (await until_done(ws, "s"))[-1]["finish_reason"] == "cancelled"


async def test_a_generation_whose_instance_died_ends_interrupted_on_the_other(
    pair: tuple[GatewayProcess, GatewayProcess],
    cluster_env: dict[str, str],
    tmp_path: Path,
    token: Mint,
) -> None:
    _, b = pair
    sub = user()
    doomed = await asyncio.to_thread(start_process, tmp_path, cluster_env)
    try:
        ws = await connected(doomed.url, token(sub))
        await send(ws, type="completion", id="r", message="x", model=LONG)
        seen = await read_through(ws, "r", 10)
        doomed.signal(signal.SIGKILL)
        doomed.wait(10)
    finally:
        doomed.stop()
    generation_id = seen[0]["generation_id"]
    resumed, rest = await resume_ws(b.url, token(sub), generation_id, 10)
    assert resumed["status"] in ("running", "interrupted")
    final = rest[-1]
    assert final["type"] == "error" and final["code"] == "interrupted" and final["done"]
    assert [f["seq"] for f in seen + rest] == list(range(1, final["seq"] + 1))
    view = (await get(b.url, token(sub), f"/conversations/{seen[0]['conversation_id']}")).json()
    assert view["generation"] == {"id": generation_id, "status": "interrupted"}
    assert view["messages"][-1]["status"] == "incomplete"


async def test_one_generation_at_a_time_per_user_across_instances(
    pair: tuple[GatewayProcess, GatewayProcess], token: Mint
) -> None:
    a, b = pair
    sub = user()
    first = await connected(a.url, token(sub))
    await send(first, type="completion", id="a", message="long", model=LONG)
    assert (await receive(first))["type"] == "start"
    second = await connected(b.url, token(sub))
    await send(second, type="completion", id="b", message="hi")
    (error,) = await until_done(second, "b")
    assert error["code"] == "rate_limited" and error["retry_after"] > 0
    await send(first, type="cancel", id="a")
    assert (await until_done(first, "a"))[-1]["finish_reason"] == "cancelled"
    await send(second, type="completion", id="c", message="hi")
    assert (await until_done(second, "c"))[-1]["type"] == "done"


async def test_history_is_stored_listed_read_back_and_deleted(
    pair: tuple[GatewayProcess, GatewayProcess],
    store: Store,
    token: Mint,
    fake_upstream: FakeUpstream,
) -> None:
    a, b = pair
    sub, keys = user(), store.keys
    first, second = store.spread(sub)[:2]
    one = await turn(a.url, token(sub), first, "the first question")
    await turn(b.url, token(sub), second, "another conversation")
    two = await turn(b.url, token(sub), first, "the second question")
    sent = [m["content"] for m in fake_upstream.requests[-1].messages]
    assert "the first question" in sent and text_of(one) in sent  # written by the other instance
    listed = (await get(b.url, token(sub), "/conversations")).json()["data"]
    assert [c["id"] for c in listed] == [first, second]
    assert listed[0]["title"] == "the first question"
    view = (await get(a.url, token(sub), f"/conversations/{first}")).json()
    assert [(m["role"], m["content"]) for m in view["messages"]] == [
        ("user", "the first question"),
        ("assistant", text_of(one)),
        ("user", "the second question"),
        ("assistant", text_of(two)),
    ]
    generations = [one[0]["generation_id"], two[0]["generation_id"]]
    async with httpx2.AsyncClient(timeout=20) as client:
        deleted = await client.delete(
            f"{a.url}/conversations/{first}", headers={"Authorization": f"Bearer {token(sub)}"}
        )
    assert deleted.status_code == 204
    assert (await get(b.url, token(sub), f"/conversations/{first}")).status_code == 404
    listed = (await get(b.url, token(sub), "/conversations")).json()["data"]
    assert [c["id"] for c in listed] == [second]
    gone = [
        keys.conversation(sub, first),
        keys.messages(sub, first),
        keys.conversation_generations(sub, first),
    ]
    for generation_id in generations:
        gone += [keys.generation(generation_id), keys.events(generation_id)]
    assert [await store.client.exists(key) for key in gone] == [0] * len(gone)
    assert await store.client.zscore(keys.user_conversations(sub), first) is None


async def test_hostile_subs_keep_each_users_keys_in_one_slot_and_apart_from_others(
    pair: tuple[GatewayProcess, GatewayProcess], store: Store, token: Mint
) -> None:
    """A `sub` is escaped where it stands in a key: `x}:k` with the idempotency key `z` and
    `x` with `k}:z` would otherwise name one key, and a `sub` starting with `}` would have an
    empty hash tag, scattering its user's keys over the nodes."""
    a, b = pair
    tag = user()
    retried: dict[str, str] = {}
    for sub, key in ((f"{tag}x}}:k", "z"), (f"{tag}x", "k}:z")):
        async with httpx2.AsyncClient(timeout=20) as client:
            for url in (a.url, b.url):
                answer = await client.post(
                    f"{url}/completion",
                    headers={"Authorization": f"Bearer {token(sub)}", "Idempotency-Key": key},
                    json={"message": f"from {sub}", "conversation_id": "same"},
                )
                assert answer.status_code == 200, answer.text
                assert answer.json()["content"] == f"You said: from {sub}"
                # The retry on the other instance re-attaches this user's own generation.
                retried.setdefault(sub, answer.json()["generation_id"])
                assert answer.json()["generation_id"] == retried[sub]
    assert len(set(retried.values())) == 2
    keys = store.keys
    for sub in (f"}}{tag}", f"{{{tag}}}", f"{tag}/c", f"{tag}%7D", f"}}{tag}}}{{"):
        frames = await turn(a.url, token(sub), "c", "hello")
        assert frames[-1]["type"] == "done", frames[-1]
        named = [
            keys.user_conversations(sub),
            keys.user_rate(sub),
            keys.user_generations(sub),
            keys.user_storage(sub),
            keys.idempotency(sub, "k"),
        ]
        slots = {await store.client.cluster_keyslot(key) for key in named}
        assert len(slots) == 1, (sub, named)
        assert await store.client.exists(keys.user_conversations(sub)) == 1
        listed = (await get(b.url, token(sub), "/conversations")).json()["data"]
        assert [c["id"] for c in listed] == ["c"]


def test_the_gateways_logged_no_trouble_with_the_cluster(
    pair: tuple[GatewayProcess, GatewayProcess],
) -> None:
    """Runs after the scenarios above: nothing they did failed quietly in the store (the log
    writer logs a refused write and carries on; the cancel listener logs and resubscribes)."""
    lines = [line for gateway in pair for line in gateway.output]
    assert len(lines) > 2  # the output is really collected
    for trouble in ("Traceback", "refused its log entries", "cancel channel dropped", "ERROR"):
        assert not [line for line in lines if trouble in line], trouble


async def test_no_key_lookup_went_to_a_node_of_its_own(
    pair: tuple[GatewayProcess, GatewayProcess], cluster: Cluster
) -> None:
    """Runs after the scenarios above. redis-py's cluster client finds the keys of a command
    with no fixed key positions (XREAD, ZUNIONSTORE...) by asking its default node
    (`COMMAND GETKEYS`), a round trip to a node that may have failed: the gateway sends only
    commands whose keys sit where the client can read them, so no node was ever asked."""
    reads = 0
    for node in cluster.nodes:
        client = Redis(port=node.port, decode_responses=True)
        stats = await client.info("commandstats")
        await client.aclose()
        assert "cmdstat_command|getkeys" not in stats, node.port
        reads += stats.get("cmdstat_xrange", {}).get("calls", 0)
    assert reads > 0  # the statistics are real: followers read logs


@pytest.mark.parametrize("stalled", ["conversation", "generation"])
async def test_an_end_that_reached_only_some_nodes_is_completed_once_they_answer(
    cluster: Cluster, stalled: str
) -> None:
    """The end of a turn writes to the generation's node and the conversation's node in one
    pipeline. When only one of them answers, the rest is written once the other answers
    again: the final event once, the answer once."""
    client = RedisCluster.from_url(cluster.url, decode_responses=True, socket_timeout=0.5)
    await client.initialize()
    store = Store(client, Keys(f"p{uuid.uuid4().hex[:8]}:"))
    generation_id, conversation_id = apart(store)
    log = GenerationLog(
        client, store.keys, ended_ttl=60, max_events=100, lease_ttl=5, instance="test"
    )
    conversations = ConversationStore(client, store.keys, ttl=60, max_stored_turns=10)
    meta = GenerationMeta(generation_id, "alice", conversation_id, None, "m", "a")
    async with client.pipeline(transaction=False) as pipe:
        log.queue_create(pipe, meta)
        await pipe.execute()
    await conversations.open_turn("alice", conversation_id, StoredMessage("user", "q", 1), 10)
    writer = LogWriter(log, window_ms=1)
    for event in (Start(1, "m", "a"), Chunk(2, "an"), Chunk(3, "swer")):
        writer.add(generation_id, event)
    answer = StoredMessage("assistant", "answer", 2, generation_id=generation_id)

    def store_answer(pipe: StorePipeline) -> None:
        conversations.queue_answer(pipe, "alice", conversation_id, answer)

    # One node holds every command for a second: the write times out there.
    key = store.keys.conversation("alice", conversation_id)
    if stalled == "generation":
        key = store.keys.generation(generation_id)
    paused = Redis(port=store.node_port(key))
    await paused.client_pause(1000, all=True)
    await paused.aclose()
    persisted = await writer.finish(
        generation_id, Done(4, "stop", Usage(1, 2)), "complete", store_answer
    )
    assert persisted == "pending"
    await flush_when_reachable(writer)
    ended = await log.meta(generation_id)
    assert ended is not None and ended.status == "complete"
    stored = await conversations.messages("alice", conversation_id)
    assert [(m.role, m.content) for m in stored] == [("user", "q"), ("assistant", "answer")]
    assert [e.seq for e in await log.read_after(generation_id, 0)] == [1, 2, 3, 4]
    await client.aclose()


async def test_a_node_that_forgot_the_log_script_gets_it_whole_and_all_converge(
    cluster: Cluster,
) -> None:
    """Each node has its own script cache. When one forgets the append script, a log write
    lands by hash on the others and, right after, whole on that one: every event once, in
    order. The next write goes by hash everywhere."""
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
    await client.initialize()
    store = Store(client, Keys(f"p{uuid.uuid4().hex[:8]}:"))
    by_node = {store.node_port(store.keys.generation(g)): g for g in generation_ids(store)}
    log = GenerationLog(
        client, store.keys, ended_ttl=60, max_events=100, lease_ttl=5, instance="test"
    )
    async with client.pipeline(transaction=False) as pipe:
        for generation_id in by_node.values():
            log.queue_create(pipe, GenerationMeta(generation_id, "alice", "c", None, "m", "a"))
        await pipe.execute()
    writer = LogWriter(log, window_ms=1)
    nodes = {port: Redis(port=port) for port in by_node}
    forgetful = next(iter(nodes))
    for seq in (1, 2, 3):
        for generation_id in by_node.values():
            writer.add(generation_id, Chunk(seq, str(seq)))
        await writer.flush()
        if seq == 1:
            await nodes[forgetful].script_flush()
            for node in nodes.values():
                await node.config_resetstat()
    for port, node in nodes.items():
        stats = await node.info("commandstats")
        whole = stats.get("cmdstat_eval", {}).get("calls", 0)
        by_hash = stats["cmdstat_evalsha"]
        assert (whole, by_hash["calls"], by_hash.get("failed_calls", 0)) == (
            (1, 2, 1) if port == forgetful else (0, 2, 0)
        )
        assert [e.seq for e in await log.read_after(by_node[port], 0)] == [1, 2, 3]
        await node.aclose()
    await client.aclose()


async def test_followers_of_logs_on_every_node_share_one_poll(cluster: Cluster) -> None:
    """On a cluster the process's log reader polls: one pipeline a window for every followed
    log, whichever node holds it; each follower gets every event once, in order."""
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
    await client.initialize()
    store = Store(client, Keys(f"p{uuid.uuid4().hex[:8]}:"))
    log = GenerationLog(
        client, store.keys, ended_ttl=60, max_events=100, lease_ttl=5, instance="test"
    )
    generations = generation_ids(store)
    async with client.pipeline(transaction=False) as pipe:
        for generation_id in generations:
            log.queue_create(pipe, GenerationMeta(generation_id, "alice", "c", None, "m", "a"))
        await pipe.execute()
    hub = LogHub(PolledReads(client, store.keys, window=0.01))
    hub.start()
    try:
        followers = [
            asyncio.create_task(follow(log, hub.subscribe(g), 0, 30))
            for g in generations
            for _ in range(5)
        ]
        for start in range(1, 31, 10):
            async with client.pipeline(transaction=False) as pipe:
                for generation_id in generations:
                    chunks = [Chunk(seq, str(seq)) for seq in range(start, start + 10)]
                    log.queue_append(pipe, generation_id, chunks)
                await pipe.execute()
        async with asyncio.timeout(20):
            results = await asyncio.gather(*followers)
        assert results == [list(range(1, 31))] * len(followers)
        assert hub.followed == 0
    finally:
        await hub.close()
        await client.aclose()


async def test_activity_of_users_on_every_node_reaches_one_hub(cluster: Cluster) -> None:
    """On a cluster the activity channel reaches the hub from every node: each user's stream
    lives on its own node, and its news comes through the node the hub listens on."""
    client = cluster_client(cluster.url, decode_responses=True)
    await client.initialize()
    store = Store(client, Keys(f"a{uuid.uuid4().hex[:8]}:"))
    activity = ActivityLog(client, store.keys, ttl=60)
    found: dict[int, str] = {}
    while len(found) < NODES:
        sub = f"u{uuid.uuid4().hex[:8]}"
        found.setdefault(store.node_port(store.keys.user_activity(sub)), sub)
    heard: dict[str, list[str]] = {sub: [] for sub in found.values()}
    hub = ActivityHub(activity, sweep=CLUSTER_SWEEP)
    hub.start()
    try:
        for sub, got in heard.items():
            hub.join(sub, recorder(got), "0-0")
        for n in range(3):
            for sub in heard:
                await activity.publish(sub, [conversation_updated(f"c{n}", "t", 1)])
        assert await settle(lambda: all(len(got) >= 3 for got in heard.values()), within=20)
        assert all(got == ["c0", "c1", "c2"] for got in heard.values()), heard
    finally:
        await hub.close()
        await client.aclose()


def recorder(got: list[str]) -> Callable[[ActivityEntry], None]:
    """A listener that notes each entry's conversation id."""
    return lambda entry: got.append(entry.data()["conversation_id"])


def generation_ids(store: Store) -> list[str]:
    """Generation ids whose keys land on each node in turn, one per node."""
    found: dict[int, str] = {}
    while len(found) < NODES:
        candidate = f"gen_{uuid.uuid4().hex[:12]}"
        found.setdefault(store.node_port(store.keys.generation(candidate)), candidate)
    return list(found.values())


def apart(store: Store) -> tuple[str, str]:
    """A generation id and a conversation id whose keys live on different nodes."""
    generation_id = f"gen_{uuid.uuid4().hex[:12]}"
    home = store.node_port(store.keys.generation(generation_id))
    while True:
        conversation_id = f"c{uuid.uuid4().hex[:10]}"
        if store.node_port(store.keys.conversation("alice", conversation_id)) != home:
            return generation_id, conversation_id


async def flush_when_reachable(writer: LogWriter) -> None:
    """Write what is queued, trying again while a node still times out (up to 10 s)."""
    async with asyncio.timeout(10):
        while True:
            try:
                await writer.flush()
                return
            except RedisTimeoutError:
                continue  # each try waited a socket timeout for the paused node


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "REDIS_CLUSTER needs REDIS_URL"),
        ({"REDIS_URL": "unix:///tmp/redis.sock"}, "redis:// or rediss://"),
        ({"REDIS_URL": "redis://127.0.0.1:7000/2"}, "only database 0"),
    ],
)
def test_the_cluster_setting_needs_a_tcp_url_of_database_zero(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"REDIS_CLUSTER": "true", **env})


def test_the_cluster_setting_reads_a_node_url() -> None:
    settings = Settings.from_env({"REDIS_CLUSTER": "1", "REDIS_URL": "rediss://:pw@node:7000/0"})
    assert settings.redis_cluster is True
    assert Settings.from_env({"REDIS_URL": "redis://node:6379/3"}).redis_cluster is False


async def test_the_storage_quota_counts_across_the_users_and_the_conversations_slots(
    cluster: Cluster,
) -> None:
    """A user's storage count and the conversations it counts live on other slots (and
    nodes): the count is kept by the scripts on each side, in the pipelines a turn already
    sends, and stays exact across trims and deletes."""
    client = RedisCluster.from_url(cluster.url, decode_responses=True)
    await client.initialize()
    try:
        keys = Keys("any:")
        assert key_slot(keys.user_storage("alice").encode()) != key_slot(
            keys.messages("alice", "trip").encode()
        )
        await turns_count_every_stored_byte_across_trims(Account.on(client, max_stored_turns=2))
        await a_turn_over_the_quota_takes_nothing_until_space_is_freed(Account.on(client))
    finally:
        await client.aclose()


async def test_the_cluster_client_reads_the_command_table_once(cluster: Cluster) -> None:
    """redis-py reads the command table (`COMMAND`) from its default node each time it learns
    the cluster, which fails while that node hangs; the store's client reads it once."""

    async def tables_read() -> int:
        total = 0
        for node in cluster.nodes:
            client = Redis(port=node.port, decode_responses=True)
            stats = await client.info("commandstats")
            await client.aclose()
            total += stats.get("cmdstat_command", {}).get("calls", 0)
        return total

    before = await tables_read()
    client = cluster_client(cluster.url, decode_responses=True)
    for _ in range(3):  # as after a failure: closed, then it learns the cluster again
        await client.initialize()
        assert await client.set("k", "v")
        await client.aclose()
    assert await tables_read() == before + 1
