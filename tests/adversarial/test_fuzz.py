"""Property tests: whatever a client sends, the parsers either accept it or refuse it with a
RequestError whose message stays short, and the HTTP routes never answer 500.

Examples are derandomized and no example database is kept, so every run tries the same
inputs; the HTTP properties use a bounded number of examples to keep the file fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import Limits
from gateway.errors import RequestError
from gateway.protocol.ai_sdk import chat_request
from gateway.protocol.frames import (
    ClientFrame,
    parse_completion,
    parse_frame_object,
    parse_json_object,
)
from gateway.protocol.openai import chat_call
from tests.conftest import GatewayFactory

Mint = Callable[..., str]
# An error message names the problem and at most a short excerpt of what was sent.
MAX_MESSAGE_CHARS = 300
MODELS = ("echo", "fake")
FIELDS = (
    "type", "id", "message", "model", "agent", "conversation_id", "temperature",
    "max_tokens", "conversation_history", "stop", "tools", "tool_choice", "sources",
    "project_id", "idempotency_key", "stream", "generation_id", "after", "token",
    "messages", "role", "content", "parts", "text", "function", "name", "n",
    "stream_options", "include_usage", "logprobs", "response_format", "modalities",
    "json_schema", "schema", "strict", "description",
)  # fmt: skip
VALUES = (
    "completion", "resume", "cancel", "ping", "auth", "user", "assistant", "system",
    "tool", "function", "text", "echo", "fake", "auto", "none", "required", "gen_abc",
    "json_object", "json_schema",
)  # fmt: skip

PURE = settings(max_examples=200, deadline=None, derandomize=True, database=None)
HTTP = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Long enough that an error message echoing it would show; built, not drawn character by
# character, so examples stay cheap.
long_text = st.builds(lambda char, n: char * n, st.sampled_from("xé😀\\"), st.integers(300, 5000))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(VALUES)
    | st.text(max_size=20)
    | long_text
)
keys = st.sampled_from(FIELDS) | st.text(max_size=10) | long_text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)
# Objects shaped like requests: mostly the protocol's own field names, any values.
requests = st.dictionaries(keys, json_values, max_size=6)


def outcome(parse: Callable[[], object]) -> object:
    """Run a parser: its result, or the RequestError it raised, checked for a short message."""
    try:
        return parse()
    except RequestError as exc:
        refused = exc
    assert refused.message and len(refused.message) <= MAX_MESSAGE_CHARS, refused.message[:100]
    return refused


@PURE
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_text_is_an_object_or_a_request_error(text: str | bytes) -> None:
    result = outcome(lambda: parse_json_object(text))
    assert isinstance(result, dict | RequestError)


@PURE
@given(json_values)
def test_any_json_value_is_an_object_or_a_request_error(value: Any) -> None:
    result = outcome(lambda: parse_json_object(json.dumps(value)))
    assert isinstance(result, dict | RequestError)


@pytest.mark.parametrize("depth", [1_000, 10_000, 200_000])
@pytest.mark.parametrize("opener", ["[", '{"a":', '{"type":"completion","tools":['])
def test_nesting_of_any_depth_is_a_request_error_or_an_object(opener: str, depth: int) -> None:
    result = outcome(lambda: parse_json_object(opener * depth))
    assert isinstance(result, RequestError)


@PURE
@given(requests)
def test_any_object_is_a_frame_or_a_request_error(obj: dict[str, Any]) -> None:
    result = outcome(lambda: parse_frame_object(obj))
    assert isinstance(result, RequestError | ClientFrame)


@PURE
@given(requests)
def test_any_object_is_a_completion_or_a_request_error(obj: dict[str, Any]) -> None:
    for require_id in (True, False):
        outcome(lambda: parse_completion(obj, require_id=require_id))  # noqa: B023


@PURE
@given(requests, st.none() | st.text(max_size=200))
def test_any_openai_body_is_a_call_or_a_request_error(
    body: dict[str, Any], header: str | None
) -> None:
    outcome(lambda: chat_call(body, MODELS, conversation_id=header, agent=header))


@PURE
@given(requests, st.none() | st.text(max_size=200))
def test_any_ai_sdk_body_is_a_request_or_a_request_error(
    body: dict[str, Any], key: str | None
) -> None:
    outcome(lambda: chat_request(body, key))


# ---------------------------------------------------------------------------------------------
# The routes, on a running gateway


@pytest.fixture
def http_gateway(start_gateway: GatewayFactory) -> Iterator[str]:
    """A gateway whose per-user limits do not get in the way of many quick requests."""
    with start_gateway(limits=Limits(0, 0, 0, 0), echo_delay_ms=0) as url:
        yield url


bodies = (
    requests.map(json.dumps).map(str.encode)
    | json_values.map(json.dumps).map(str.encode)
    | st.binary(max_size=200)
)
# Requests the gateway would run: kept small, so the examples stay quick.
runnable = st.fixed_dictionaries(
    {"message": st.text(min_size=1, max_size=30), "model": st.just("echo")},
    optional={
        "stream": st.booleans(),
        "temperature": st.floats(0, 2),
        "max_tokens": st.integers(1, 5),
        "conversation_history": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=20)}
            ),
            max_size=3,
        ),
    },
).map(lambda obj: json.dumps(obj).encode())


def check_native(response: httpx2.Response) -> None:
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error"], str) and isinstance(body["detail"], str)
        assert len(body["detail"]) <= MAX_MESSAGE_CHARS


def check_openai(response: httpx2.Response) -> None:
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert {"message", "type", "param", "code"} <= error.keys()
        assert len(error["message"]) <= MAX_MESSAGE_CHARS


@HTTP
@given(body=bodies | runnable)
def test_post_completion_never_fails_with_500(http_gateway: str, token: Mint, body: bytes) -> None:
    headers = {"Authorization": f"Bearer {token('fuzz')}"}
    with httpx2.Client(base_url=http_gateway, timeout=10) as http:
        check_native(http.post("/completion", content=body, headers=headers))


openai_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(MODELS) | long_text},
    optional={
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "system", "assistant", "tool", "x"])},
                optional={"content": json_values, "tool_call_id": json_values},
            ),
            max_size=3,
        ),
        "stream": json_values,
        "max_tokens": json_values,
        "temperature": json_values,
        "n": json_values,
    },
).map(lambda obj: json.dumps(obj).encode())


@HTTP
@given(body=bodies | openai_bodies)
def test_openai_chat_completions_never_fail_with_500(
    http_gateway: str, token: Mint, body: bytes
) -> None:
    headers = {"Authorization": f"Bearer {token('fuzz')}"}
    with httpx2.Client(base_url=http_gateway, timeout=10) as http:
        check_openai(http.post("/v1/chat/completions", content=body, headers=headers))
