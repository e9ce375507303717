"""Test session fixtures: a private redis-server, a fake upstream, gateways on free ports."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.config import AgentConfig, ModelConfig, Secret, Settings
from gateway.server.options import uvicorn_options
from gateway.store.conversations import ConversationStore
from gateway.store.keys import Keys
from tests.support.redis import RedisServer, running_redis, start_redis
from tests.support.serving import free_port, serve_in_thread
from tests.support.tokens import TEST_SECRET, mint
from tests.support.upstream import FakeUpstream
from tests.support.ws import close_all, kinds

# Until every test module imports them from tests.support.
__all__ = ["TEST_SECRET", "RedisServer", "free_port", "kinds", "start_redis"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with serve_in_thread(fake.app) as url:
        yield fake, f"{url}/v1"


@pytest.fixture
def fake_upstream(upstream: tuple[FakeUpstream, str]) -> FakeUpstream:
    return upstream[0]


def _upstream_model(name: str, base_url: str, **extra: Any) -> ModelConfig:
    extra.setdefault("upstream_model", name)
    return ModelConfig(
        name=name, provider="openai", base_url=base_url, api_key=Secret("sk-test"), **extra
    )


@pytest.fixture
def settings(
    redis_server: RedisServer, upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> Settings:
    base_url = upstream[1]
    names = [
        "fake",
        "fake-i5-n20",
        "fake-i2-n100",
        "fake-i20-n200",
        "fake-drop2",
        "fake-err500",
        "fake-err401",
        "fake-err429",
        "fake-ctx",
        "fake-hang",
    ]
    models = {"echo": ModelConfig(name="echo", provider="echo", structured_outputs=True)}
    models.update({name: _upstream_model(name, base_url) for name in names})
    models["fake-whole"] = _upstream_model("fake-whole", base_url, streaming=False)
    models["fake-capped"] = _upstream_model(
        "fake-capped", base_url, upstream_model="fake-n50", max_tokens=5
    )
    return Settings(
        redis_url=redis_server.url,
        redis_prefix=f"t{uuid.uuid4().hex[:12]}:",
        data_dir=tmp_path / "data",
        jwt_secret=Secret(TEST_SECRET),
        models=models,
        default_model="fake",
        agents={
            **Settings().agents,
            "pirate": AgentConfig("pirate", system_prompt="Talk like a pirate."),
            "calc-only": AgentConfig(
                "calc-only", kind="tools", tools=("calculate",), allowed_models=("fake",)
            ),
            "shout": AgentConfig("shout", plugin="tests.plugin_agent:ShoutAgent"),
        },
        echo_delay_ms=1,
        ws_ping_interval=0,
        log_level="warning",
        # A gateway stopped while its test's Redis is down keeps unstored ends this long.
        shutdown_store_seconds=2.0,
    )


GatewayFactory = Callable[..., AbstractContextManager[str]]


@pytest.fixture
def start_gateway(settings: Settings) -> GatewayFactory:
    """Start a gateway under uvicorn on a free port: `with start_gateway(**changes) as url`."""

    @contextmanager
    def start(**changes: Any) -> Iterator[str]:
        configured = replace(settings, **changes)
        app = create_app(configured, upstream_retries=0)
        with serve_in_thread(app, **uvicorn_options(configured)) as url:
            yield url

    return start


@pytest.fixture
def gateway(start_gateway: GatewayFactory) -> Iterator[str]:
    with start_gateway() as url:
        yield url


@pytest.fixture
def token() -> Callable[..., str]:
    return mint


@pytest.fixture
async def conversations(settings: Settings) -> AsyncIterator[ConversationStore]:
    """The real conversation store over the test's Redis prefix, to check what was stored."""
    assert settings.redis_url is not None
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    yield ConversationStore(
        redis, Keys(settings.redis_prefix), settings.conversation_ttl, settings.max_stored_turns
    )
    await redis.aclose()


@pytest.fixture(autouse=True)
async def close_sockets() -> AsyncIterator[None]:
    yield
    await close_all()
