"""A Redis Cluster failover with the default settings: does any generation end `interrupted`?

    python -m bench.failover [--node-timeout-ms 15000] [--how kill|freeze] [--lease-ttl 10]
                             [--socket-timeout 5]

Starts three primaries with a replica each (`cluster-node-timeout` as given; Redis's default
is 15 s) and two gateway processes with the given `LEASE_TTL` and `REDIS_SOCKET_TIMEOUT`
(the gateway's defaults unless given). Instance A runs held generations until each primary
holds at least one; instance B follows every one of them. Then the primary every cluster
client takes as its default node (the one serving slot 0) is killed (`SIGKILL`) or frozen
(`SIGSTOP`); once a replica serves its slots, the generations are held another twice LEASE_TTL
(every lapsed lease has been checked by then), released, and each follower's last event
reported: `stop` for every one means no healthy generation was ended `interrupted`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from redis.exceptions import RedisError

from gateway.auth.tokens import mint_token
from gateway.config import Secret, Settings
from gateway.store.keys import Keys
from tests.client import until_done
from tests.conftest import TEST_SECRET
from tests.processes import config_file, gateway_environment, start_pair
from tests.store.test_cluster_failover import FOLLOWED, Running, follow_from, owner, start_held
from tests.support.redis_cluster import Cluster, poll, running_cluster
from tests.upstream import FakeUpstream, serve_in_thread


async def run(options: argparse.Namespace, folder: Path) -> list[str]:
    fake = FakeUpstream()
    (folder / "cluster").mkdir()
    with (
        serve_in_thread(fake.app) as upstream,
        running_cluster(
            folder / "cluster", 3, replicas=1, node_timeout_ms=options.node_timeout_ms
        ) as cluster,
    ):
        env = gateway_environment(
            cluster.url,
            config_file(folder, f"{upstream}/v1", (FOLLOWED,)),
            REDIS_CLUSTER="1",
            LEASE_TTL=str(options.lease_ttl),
            REDIS_SOCKET_TIMEOUT=str(options.socket_timeout),
            UPSTREAM_READ_TIMEOUT="600",
        )
        a, b = start_pair(folder, env)
        try:
            return await scenario(options, cluster, Keys(env["REDIS_PREFIX"]), a.url, b.url, fake)
        finally:
            a.stop()
            b.stop()


async def scenario(
    options: argparse.Namespace,
    cluster: Cluster,
    keys: Keys,
    a: str,
    b: str,
    fake: FakeUpstream,
) -> list[str]:
    def token(sub: str = "alice") -> str:
        return mint_token(Settings(jwt_secret=Secret(TEST_SECRET)), sub, 3600)

    running: list[Running] = []
    while len({owner(cluster, keys.generation(r.generation_id)) for r in running}) < 3:
        running.append(await start_held(a, token, FOLLOWED))
    followers = [
        await follow_from(b, token(r.sub), r.generation_id, r.frames[-1]["seq"]) for r in running
    ]
    victim = cluster.owner(0)
    slots = [first for first, primary in cluster.slot_owners().items() if primary == victim]
    on_victim = {
        r.generation_id
        for r in running
        if owner(cluster, keys.generation(r.generation_id)) == victim
    }
    killed = time.monotonic()
    if options.how == "freeze":
        cluster.node(victim).freeze()
    else:
        cluster.node(victim).kill()

    def taken_over() -> bool:
        try:
            return all(cluster.owner(slot) != victim for slot in slots) and cluster.ok()
        except (OSError, RedisError):  # a node that cannot tell yet
            return False

    await asyncio.to_thread(poll, "failed over", taken_over, 300)
    whole = time.monotonic()
    await asyncio.sleep(2 * options.lease_ttl)  # every lapsed lease is checked meanwhile
    fake.release(FOLLOWED)
    ends = await asyncio.gather(*(until_done(ws, "f") for ws in followers))
    lines = [f"{options.how} of the default node: a replica served after {whole - killed:.1f} s"]
    for generation, frames in zip(running, ends, strict=True):
        final = frames[-1]
        where = "on the failed node" if generation.generation_id in on_victim else "elsewhere"
        lines.append(
            f"  {generation.generation_id} ({where}): {final.get('finish_reason') or final['code']}"
        )
    cluster.node(victim).kill()
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--node-timeout-ms", type=int, default=15_000)
    parser.add_argument("--how", choices=("kill", "freeze"), default="kill")
    parser.add_argument("--lease-ttl", type=float, default=Settings().lease_ttl)
    parser.add_argument("--socket-timeout", type=float, default=Settings().redis_socket_timeout)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        for line in asyncio.run(run(options, Path(folder))):
            print(line)


if __name__ == "__main__":
    main()
