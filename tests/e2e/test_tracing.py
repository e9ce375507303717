"""Traces, end to end: gateway processes export over OTLP/HTTP to a receiver of the suite's own,
which decodes the protobuf; each answer's spans join the caller's trace and carry the GenAI
attributes. With no endpoint set, nothing traces: neither our OpenTelemetry module nor the
SDK's tracing or exporters are imported, and no exporting thread runs."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import AsyncGeneratorType
from typing import Any

import httpx2
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from gateway.config import ModelConfig, Settings
from gateway.events import Message
from gateway.llm.base import ModelParams
from gateway.llm.registry import ModelRegistry
from gateway.obs import tracing
from gateway.obs.metrics import GatewayMetrics
from gateway.obs.tracing import NO_CALL, wanted
from tests.otlp_receiver import Receiver, Span, otlp_receiver
from tests.support.processes import GatewayProcess, config_file, gateway_environment, start_pair
from tests.support.redis import RedisServer
from tests.support.sse import sse_events
from tests.support.tokens import TEST_SECRET
from tests.support.upstream import FakeUpstream
from tests.support.ws import (
    OPEN,
    Frames,
    connected,
    receive,
    send,
    through_seq,
    until_done,
    ws_url,
)

Mint = Callable[..., str]
REPO = Path(__file__).resolve().parents[2]
SLOW = "fake-i5-n20"


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    with otlp_receiver() as found:
        yield found


@pytest.fixture(scope="module")
def pair(
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    receiver: tuple[Receiver, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    """Two instances on one Redis, exporting to the receiver a tenth of a second after a
    span ends (the SDK's batching, shortened)."""
    folder = tmp_path_factory.mktemp("traced")
    env = gateway_environment(
        redis_server.url,
        config_file(folder, upstream[1]),
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver[1],
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    a, b = start_pair(folder, env)
    yield a, b
    a.stop()
    b.stop()


@dataclass(frozen=True)
class Traced:
    """What a test of traced answers works with."""

    a: GatewayProcess
    b: GatewayProcess
    receiver: Receiver
    fake: FakeUpstream
    token: Mint


@pytest.fixture
def traced(
    pair: tuple[GatewayProcess, GatewayProcess],
    receiver: tuple[Receiver, str],
    fake_upstream: FakeUpstream,
    token: Mint,
) -> Traced:
    return Traced(pair[0], pair[1], receiver[0], fake_upstream, token)


class Caller:
    """A client's own span, sent as a W3C traceparent."""

    def __init__(self) -> None:
        self.trace_id = secrets.token_hex(16)
        self.span_id = secrets.token_hex(8)
        self.traceparent = f"00-{self.trace_id}-{self.span_id}-01"


def answer_spans(trace_id: str) -> Callable[[list[Span]], list[Span]]:
    """A trace's spans once its server, generation and model-call spans have all arrived."""

    def found(spans: list[Span]) -> list[Span]:
        mine = [s for s in spans if s.trace_id == trace_id]
        kinds = {s.kind for s in mine}
        generation = any("gateway.generation.id" in s.attributes for s in mine)
        return mine if {"SERVER", "CLIENT"} <= kinds and generation else []

    return found


def one(spans: list[Span], picked: Callable[[Span], bool]) -> Span:
    matching = [s for s in spans if picked(s)]
    assert len(matching) == 1, "\n".join(map(repr, matching))
    return matching[0]


def check_answer(
    spans: list[Span], caller: Caller, generation_id: str, fake: FakeUpstream, message: str
) -> Span:
    """The caller's span → server span → generation span → model call, with the GenAI
    attributes; the upstream request carried the call's context. Returns the server span."""
    server = one(spans, lambda s: s.kind == "SERVER")
    generation = one(spans, lambda s: s.attributes.get("gateway.generation.id") == generation_id)
    call = one(spans, lambda s: s.kind == "CLIENT")
    assert server.parent_id == caller.span_id
    assert generation.parent_id == server.span_id
    assert generation.name == "invoke_agent chat"
    assert generation.attributes["gen_ai.agent.name"] == "chat"
    assert generation.attributes["gateway.generation.outcome"] == "complete"
    assert call.parent_id == generation.span_id
    assert call.name == "chat fake"
    attributes = call.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "fake"
    assert attributes["gen_ai.response.model"] == "fake"
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert type(attributes["gen_ai.usage.input_tokens"]) is int
    assert attributes["gen_ai.usage.input_tokens"] > 0
    assert type(attributes["gen_ai.usage.output_tokens"]) is int
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert 0 <= attributes["gen_ai.response.time_to_first_chunk"] < 10
    assert attributes["server.address"] == "127.0.0.1"
    assert {s.service for s in spans} == {"chat-gateway"}
    assert not any(s.error for s in spans)
    # No message text (nor the answer, which quotes it) in any attribute.
    assert message not in json.dumps([s.attributes for s in spans])
    sent = [r for r in fake.requests if message in json.dumps(r.messages)]
    assert [r.traceparent for r in sent] == [f"00-{caller.trace_id}-{call.span_id}-01"]
    return server


async def ws_traced(traced: Traced, caller: Caller, **frame: Any) -> tuple[Frames, list[Span]]:
    """A completion over a socket as the caller (its frame's traceparent); its frames, and the
    spans of its trace once they arrived."""
    ws = await connected(traced.a.url, traced.token())
    await send(ws, type="completion", id="traced", traceparent=caller.traceparent, **frame)
    frames = await until_done(ws, "traced")
    spans = await asyncio.to_thread(traced.receiver.wait_for, answer_spans(caller.trace_id))
    return frames, spans


async def test_a_websocket_answer_is_traced_in_the_callers_trace(traced: Traced) -> None:
    caller, message = Caller(), f"ws-{uuid.uuid4().hex}"
    frames, spans = await ws_traced(traced, caller, message=message)
    assert frames[-1]["type"] == "done"
    server = check_answer(spans, caller, frames[0]["generation_id"], traced.fake, message)
    # One span per completion frame, not per connection.
    assert server.name == "websocket completion"
    assert server.attributes["gateway.request.id"] == "traced"


async def test_a_frame_without_a_trace_context_joins_the_handshakes(traced: Traced) -> None:
    caller = Caller()
    ws = await connect(
        ws_url(traced.a.url),
        subprotocols=[Subprotocol("chat-gateway.v1"), Subprotocol(f"bearer.{traced.token()}")],
        additional_headers={"traceparent": caller.traceparent},
        open_timeout=10,
    )
    OPEN.append(ws)  # closed after the test
    assert (await receive(ws))["type"] == "ready"
    await send(ws, type="completion", id="h", message="x")
    assert (await until_done(ws, "h"))[-1]["type"] == "done"
    spans = await asyncio.to_thread(traced.receiver.wait_for, answer_spans(caller.trace_id))
    server = one(spans, lambda s: s.kind == "SERVER")
    assert server.name == "websocket completion" and server.parent_id == caller.span_id


async def post_traced(
    traced: Traced, path: str, body: dict[str, Any], caller: Caller
) -> tuple[httpx2.Response, list[Span]]:
    """POST as the caller; the response, and the spans of its trace once they arrived."""
    async with httpx2.AsyncClient(timeout=20) as client:
        response = await client.post(
            traced.a.url + path,
            json=body,
            headers={
                "Authorization": f"Bearer {traced.token()}",
                "traceparent": caller.traceparent,
            },
        )
    assert response.status_code == 200, response.text
    spans = await asyncio.to_thread(traced.receiver.wait_for, answer_spans(caller.trace_id))
    return response, spans


async def test_an_sse_answer_is_traced_in_the_callers_trace(traced: Traced) -> None:
    caller, message = Caller(), f"sse-{uuid.uuid4().hex}"
    probe = Caller()
    async with httpx2.AsyncClient(timeout=20) as client:
        health = await client.get(
            f"{traced.a.url}/healthz", headers={"traceparent": probe.traceparent}
        )
    assert health.status_code == 200
    body = {"message": message, "stream": True}
    response, spans = await post_traced(traced, "/completion", body, caller)
    # Spans are exported in the order they end: had the probe one, it would be here by now.
    assert not [s for s in traced.receiver.spans if s.trace_id == probe.trace_id]
    generation_id = sse_events(response.text)[0][1]["generation_id"]
    server = check_answer(spans, caller, generation_id, traced.fake, message)
    assert server.name == "POST /completion"
    assert server.attributes["http.route"] == "/completion"


async def test_an_openai_compatible_answer_is_traced_in_the_callers_trace(traced: Traced) -> None:
    caller, message = Caller(), f"oai-{uuid.uuid4().hex}"
    body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": message}]}
    _, spans = await post_traced(traced, "/v1/chat/completions", body, caller)
    generation = one(spans, lambda s: "gateway.generation.id" in s.attributes)
    generation_id = generation.attributes["gateway.generation.id"]
    server = check_answer(spans, caller, generation_id, traced.fake, message)
    assert server.name == "POST /v1/chat/completions"


async def test_a_resume_on_another_instance_links_to_the_generation(traced: Traced) -> None:
    a, b = traced.a, traced.b
    first, second = Caller(), Caller()
    ws = await connected(a.url, traced.token())
    await send(
        ws, type="completion", id="s", message="x", model=SLOW, traceparent=first.traceparent
    )
    seen = await until_done(ws, "s", through_seq(3))
    generation_id = seen[0]["generation_id"]
    async with httpx2.AsyncClient(timeout=30) as client:
        response = await client.get(
            f"{b.url}/generations/{generation_id}/events",
            headers={
                "Authorization": f"Bearer {traced.token()}",
                "Last-Event-ID": str(seen[-1]["seq"]),
                "traceparent": second.traceparent,
            },
        )
    assert response.status_code == 200

    def follow_and_generation(spans: list[Span]) -> list[Span]:
        follows = [s for s in spans if s.name == "follow generation"]
        generations = [s for s in spans if s.name.startswith("invoke_agent")]
        mine = [s for s in follows + generations if s.trace_id in (first.trace_id, second.trace_id)]
        return mine if len(mine) == 2 else []

    spans = await asyncio.to_thread(traced.receiver.wait_for, follow_and_generation)
    follow = one(spans, lambda s: s.name == "follow generation")
    generation = one(spans, lambda s: s.name.startswith("invoke_agent"))
    assert generation.trace_id == first.trace_id
    assert follow.trace_id == second.trace_id  # the resuming request's own trace ...
    assert follow.links == ((generation.trace_id, generation.span_id),)  # ... linked to it
    assert follow.attributes["gateway.generation.id"] == generation_id


async def test_a_failed_model_call_is_an_error_by_its_code_alone(traced: Traced) -> None:
    caller = Caller()
    frames, spans = await ws_traced(traced, caller, message="x", model="fake-err401")
    failed = frames[-1]
    assert failed["type"] == "error"
    call = one(spans, lambda s: s.kind == "CLIENT")
    generation = one(spans, lambda s: s.name.startswith("invoke_agent"))
    assert call.error and call.attributes["error.type"] == failed["code"]
    assert generation.error and generation.attributes["error.type"] == failed["code"]
    assert generation.attributes["gateway.generation.outcome"] == "incomplete"
    # The message says which model; spans carry the code only.
    assert failed["message"] not in json.dumps([s.attributes for s in spans])


def test_tracing_is_on_only_with_an_endpoint() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert not wanted({})
    assert not wanted({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"})
    assert wanted(endpoint)
    assert wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not wanted({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert not wanted({**endpoint, "OTEL_TRACES_EXPORTER": "none"})


POLICIES = (("whole", "_whole"), ("streamed", "_stream"))


async def test_off_a_model_call_is_the_policy_itself_with_no_layer_per_chunk() -> None:
    assert not tracing.active.enabled  # no endpoint in the suite's environment
    upstream = {
        name: ModelConfig(name, "openai", "http://127.0.0.1:1/v1", streaming=policy == "_stream")
        for name, policy in POLICIES
    }
    registry = ModelRegistry(
        Settings(models={"echo": ModelConfig("echo", "echo"), **upstream}), GatewayMetrics()
    )
    try:
        for name, policy in POLICIES:
            model = registry.get(name)
            assert model is not None
            answer = model.stream([Message("user", "x")], ModelParams())
            assert isinstance(answer, AsyncGeneratorType)
            assert answer.ag_code.co_name == policy  # not a wrapper around it
            await answer.aclose()
    finally:
        await registry.aclose()
    pieces = one_piece()
    assert NO_CALL.body(pieces) is pieces and NO_CALL.headers == {}
    await pieces.aclose()


async def one_piece() -> AsyncGenerator[bytes]:
    yield b"x"


# A gateway in a process of its own answers over a socket and SSE; then it says which modules
# that trace it ever imported, and which exporting threads run. (redis-py loads parts of the
# OpenTelemetry API and metrics SDK by itself when they are installed: not those.)
OFF = """
import asyncio, json, os, sys
import httpx2
from gateway.app import create_app
from gateway.config import Settings
from tests.support.serving import serve_in_thread
from tests.support.ws import connected, send, until_done

async def answer(url: str, token: str) -> None:
    ws = await connected(url, token)
    await send(ws, type="completion", id="q", message="x")
    assert (await until_done(ws, "q"))[-1]["type"] == "done"
    await ws.close()
    async with httpx2.AsyncClient(timeout=20) as client:
        body = {"message": "x", "stream": True}
        headers = {"Authorization": "Bearer " + token}
        response = await client.post(url + "/completion", json=body, headers=headers)
        assert '"done"' in response.text, response.text

with serve_in_thread(create_app(Settings.from_env(os.environ))) as url:
    asyncio.run(answer(url, sys.argv[1]))
tracing = ("gateway.obs.otel", "opentelemetry.sdk.trace", "opentelemetry.exporter",
           "opentelemetry.instrumentation", "opentelemetry.propagate")
loaded = [m for m in sys.modules if m.startswith(tracing)]
import threading
exporting = [t.name for t in threading.enumerate() if t.name.startswith("OtelBatch")]
print(json.dumps(sorted(loaded) + exporting))
"""


def test_without_an_endpoint_nothing_traces_nor_is_imported(
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
    token: Mint,
) -> None:
    env: dict[str, Any] = gateway_environment(redis_server.url, config_file(tmp_path, upstream[1]))
    env |= {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    # Other OTEL_* variables alone do not turn tracing on.
    env |= {"OTEL_SERVICE_NAME": "quiet", "OTEL_TRACES_SAMPLER": "always_on"}
    env |= {"JWT_SECRET": TEST_SECRET, "FAKE_KEY": "sk-test"}
    ran = subprocess.run(
        [sys.executable, "-c", OFF, token()],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert json.loads(ran.stdout.strip().splitlines()[-1]) == []
