"""The ways a stream is read, each a client factory and the port it connects to."""

from __future__ import annotations

import json
from dataclasses import dataclass

from bench.clients import ClientFactory, SseClient, WsClient
from bench.litellm_proxy import LiteLLM
from bench.services import MODEL, UPSTREAM_KEY, Gateway
from bench.wire import http_post

MESSAGE = "Count for me, please."
# Whose CPU a path's chunks cost: the process that serves them.
SERVER_OF = {
    "direct": "upstream",
    "ws": "gateway",
    "sse": "gateway",
    "openai": "gateway",
    "responses": "gateway",
    "litellm": "litellm",
}
LABELS = {
    "direct": "upstream, direct (baseline)",
    "ws": "gateway, WebSocket",
    "sse": "gateway, SSE (POST /completion)",
    "openai": "gateway, SSE (/v1/chat/completions)",
    "responses": "gateway, SSE (/v1/responses)",
    "litellm": "LiteLLM proxy, SSE (/v1/chat/completions)",
}
GATEWAY_PATHS = ("ws", "sse", "openai", "responses")


@dataclass(frozen=True, slots=True)
class Targets:
    upstream_model: str
    upstream_port: int
    gateway: Gateway
    litellm: LiteLLM | None


def openai_body(model: str, message: str = MESSAGE) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": message}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()


def responses_body(model: str, message: str = MESSAGE) -> bytes:
    return json.dumps({"model": model, "input": message, "stream": True}).encode()


# One user runs every stream: with activity on, each of N sockets would also get the activity
# of the N - 1 other streams (N² frames a round), which is bench/activity.py's measure, not a
# stream's. Every turn still publishes its activity.
STREAM_WS = "/ws?activity=0"


def native_body(model: str, message: str = MESSAGE) -> bytes:
    return json.dumps({"id": "b1", "message": message, "model": model, "stream": True}).encode()


def completion_frame(model: str, message: str = MESSAGE) -> bytes:
    return json.dumps(
        {"type": "completion", "id": "b1", "message": message, "model": model}
    ).encode()


def factory(path: str, targets: Targets) -> tuple[ClientFactory, int]:
    gateway = targets.gateway
    if path == "direct":
        body = openai_body(targets.upstream_model)
        request = http_post(targets.upstream_port, "/v1/chat/completions", body, UPSTREAM_KEY)
        return (lambda: SseClient(request, native=False)), targets.upstream_port
    if path == "ws":
        frame = completion_frame(MODEL)
        return (lambda: WsClient(gateway.port, gateway.token, frame, STREAM_WS)), gateway.port
    if path == "sse":
        request = http_post(gateway.port, "/completion", native_body(MODEL), gateway.token)
        return (lambda: SseClient(request, native=True)), gateway.port
    if path == "openai":
        body = openai_body(MODEL)
        request = http_post(gateway.port, "/v1/chat/completions", body, gateway.token)
        return (lambda: SseClient(request, native=False)), gateway.port
    if path == "responses":
        body = responses_body(MODEL)
        request = http_post(gateway.port, "/v1/responses", body, gateway.token)
        return (lambda: SseClient(request, native=False, responses=True)), gateway.port
    if path == "litellm" and targets.litellm is not None:
        proxy = targets.litellm
        body = openai_body(MODEL)
        request = http_post(proxy.server.port, "/v1/chat/completions", body, proxy.key)
        return (lambda: SseClient(request, native=False)), proxy.server.port
    raise ValueError(f"no target for path {path!r}")
