"""`chat-gateway serve --workers 2` as real processes: one scrape, whichever worker answers
it, shows what both counted (counters summed, histograms merged, live gauges added up, no
`pid` label); a killed worker's live gauges drop out; the folder goes when the gateway stops.
Each worker's own share is read from its file in the folder, to know that both served."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.exposition import Exposition, parse
from tests.support.polling import settle
from tests.support.processes import GatewayProcess, config_file, gateway_environment, start_process
from tests.support.redis import RedisServer
from tests.support.upstream import FakeUpstream
from tests.support.workers import counted_by_worker, metrics_folder, serving_workers
from tests.support.ws import connected

Mint = Callable[..., str]
WORKERS = 2
TRIES = 200  # fresh connections until the kernel has handed some to each worker


@pytest.fixture
def served(
    tmp_path: Path, redis_server: RedisServer, upstream: tuple[FakeUpstream, str]
) -> Iterator[GatewayProcess]:
    env = gateway_environment(redis_server.url, config_file(tmp_path, upstream[1]))
    gateway = start_process(tmp_path, env, workers=WORKERS)
    yield gateway
    gateway.signal(signal.SIGTERM)  # the workers end with it; SIGKILL would orphan them
    gateway.wait(30)
    gateway.stop()


def folder_of(gateway: GatewayProcess) -> Path:
    workers = serving_workers(gateway.process.pid)
    assert len(workers) == WORKERS
    return metrics_folder(workers[0])


def scrape(url: str) -> Exposition:
    response = httpx2.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return parse(response.text)


def both(shares: dict[int, float]) -> bool:
    return len([share for share in shares.values() if share]) == WORKERS


def test_one_scrape_sums_the_counters_and_merges_the_histograms(
    served: GatewayProcess, token: Mint
) -> None:
    folder = folder_of(served)

    def done() -> dict[int, float]:
        return counted_by_worker(folder, "gateway_generations_total", outcome="done")

    made = 0
    while not both(done()) and made < TRIES:
        response = httpx2.post(  # a connection of its own each time
            f"{served.url}/completion",
            json={"message": "hi", "model": "fake"},
            headers={"Authorization": f"Bearer {token(f'user-{made}')}"},
            timeout=20,
        )
        assert response.status_code == 200
        made += 1
    assert both(done()), f"one worker served all {made} completions"
    observed = counted_by_worker(folder, "gateway_time_to_first_token_seconds_bucket", model="fake")
    assert both(observed)

    found = scrape(served.url)
    assert found.value("gateway_generations_total", outcome="done") == made
    assert found.value("gateway_connections_closed_total", transport="http") == made
    assert found.value("gateway_time_to_first_token_seconds_count", model="fake") == made
    assert found.value("gateway_time_to_first_token_seconds_bucket", model="fake", le="+Inf") == (
        made
    )
    by_bound = {
        float(dict(labels)["le"]): value
        for labels, value in found.series("gateway_time_to_first_token_seconds_bucket").items()
        if dict(labels)["model"] == "fake"
    }
    assert len(by_bound) == 15  # 14 bounds and +Inf, as in one process
    cumulative = [by_bound[bound] for bound in sorted(by_bound)]
    assert cumulative == sorted(cumulative)
    assert found.value("gateway_time_to_first_token_seconds_sum", model="fake") > 0
    assert found.types["gateway_connections"] == "gauge"
    assert all("pid" not in dict(labels) for _, labels in found.samples)

    served.signal(signal.SIGTERM)
    assert served.wait(30) == 0
    assert not folder.exists()


async def test_live_gauges_add_up_and_a_killed_worker_drops_out(
    served: GatewayProcess, token: Mint
) -> None:
    folder = folder_of(served)

    def open_sockets() -> dict[int, float]:
        return counted_by_worker(folder, "gateway_connections", transport="ws")

    sockets: list[ClientConnection] = []
    while not both(open_sockets()) and len(sockets) < TRIES:
        sockets.append(await connected(served.url, token(f"user-{len(sockets)}")))
    held = open_sockets()
    assert both(held), f"one worker took all {len(sockets)} sockets"
    assert scrape(served.url).value("gateway_connections", transport="ws") == len(sockets)

    victim = min(held, key=lambda pid: held[pid])
    os.kill(victim, signal.SIGKILL)  # no exit hook runs: the scrape must notice

    def without_victim() -> bool:
        left = scrape(served.url).value("gateway_connections", transport="ws")
        return left == len(sockets) - held[victim]

    assert await settle(without_victim), "the killed worker's sockets are still counted"
