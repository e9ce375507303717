"""The OpenAPI document: valid OpenAPI 3.1, complete, true to the parsers and to what a real
gateway answers, and fuzzed against that gateway with schemathesis."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from starlette.routing import Route

from gateway.apidocs import openapi
from gateway.app import create_app
from gateway.config import Limits, ModelConfig, Secret, Settings
from gateway.handlers.openapi import render
from gateway.server.options import uvicorn_options
from tests.conftest import TEST_SECRET, RedisServer
from tests.upstream import serve_in_thread

Json = dict[str, Any]


def app_document(**changes: Any) -> Json:
    return openapi.build(create_app(Settings(jwt_secret=Secret(TEST_SECRET), **changes)).routes)


def validator_for(doc: Json, name: str) -> Draft202012Validator:
    """A JSON Schema validator for one component schema, its references resolved in `doc`."""
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


def assert_valid(doc: Json, name: str, instance: Any) -> None:
    errors = [e.message for e in validator_for(doc, name).iter_errors(instance)]
    assert not errors, f"{name}: {errors[:3]} in {json.dumps(instance)[:300]}"


def sse_data(body: str) -> list[tuple[str, str]]:
    """(event name, data) of each SSE event in a whole stream."""
    events = []
    for block in body.split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        name = next((line[7:] for line in lines if line.startswith("event: ")), "message")
        if data:
            events.append((name, data))
    return events


# The document itself.


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = app_document()
    errors = [str(e.message) for e in OpenAPIV31SpecValidator(doc).iter_errors()]
    assert errors == []
    assert doc["openapi"] == "3.1.0"


def test_every_http_route_is_described_with_words() -> None:
    app = create_app(Settings(jwt_secret=Secret(TEST_SECRET)))
    doc = openapi.build(app.routes)
    described = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert described == set(openapi.served(app.routes))
    for (method, path), op in openapi.OPERATIONS.items():
        assert op.summary.strip() and op.description.strip(), f"{method} {path}"
    for must in ("/completion", "/v1/chat/completions", "/api/chat", "/metrics", "/healthz"):
        assert must in doc["paths"]


def test_a_route_without_a_description_stops_the_build() -> None:
    routes = [*create_app(Settings(jwt_secret=Secret(TEST_SECRET))).routes]
    with pytest.raises(openapi.Undocumented, match="/secret-admin"):
        openapi.build([*routes, Route("/secret-admin", lambda _: None)])
    kept = [r for r in routes if not (isinstance(r, Route) and r.path == "/agents")]
    with pytest.raises(openapi.Undocumented, match="/agents"):
        openapi.build(kept)


def test_every_reference_resolves_and_every_schema_is_valid_2020_12() -> None:
    doc = app_document()
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        validator_for(doc, name).is_valid({})  # walks the references it meets


def test_limits_in_the_schemas_are_the_parsers_constants() -> None:
    from gateway.core import conversations
    from gateway.protocol import frames as protocol

    schemas = app_document()["components"]["schemas"]
    fields = schemas["CompletionRequest"]["properties"]
    assert fields["id"]["anyOf"][0]["maxLength"] == protocol.MAX_ID_CHARS
    assert fields["sources"]["anyOf"][0]["maxItems"] == protocol.MAX_SOURCES
    assert fields["tools"]["anyOf"][0]["maxItems"] == protocol.MAX_TOOLS
    assert fields["conversation_history"]["anyOf"][0]["maxItems"] == protocol.MAX_HISTORY_MESSAGES
    assert schemas["Rename"]["properties"]["title"]["maxLength"] == conversations.MAX_TITLE_CHARS


@pytest.mark.parametrize(
    ("field", "at_limit", "over_limit"),
    [
        ("id", "x" * 128, "x" * 129),
        ("stop", ["s"] * 4, ["s"] * 5),
        ("sources", ["s"] * 50, ["s"] * 51),
        ("tools", [{"type": "function", "function": {"name": "f"}}] * 128, [{}] * 129),
        ("conversation_id", "a" * 64, "a" * 65),
        ("temperature", 2, 2.01),
        ("max_tokens", 1, 0),
    ],
)
def test_the_parser_draws_each_documented_limit_where_the_schema_does(
    field: str, at_limit: Any, over_limit: Any
) -> None:
    from gateway.errors import BadRequest
    from gateway.protocol.frames import parse_completion

    validator = validator_for(app_document(), "CompletionRequest")
    good, bad = {"message": "hi", field: at_limit}, {"message": "hi", field: over_limit}
    assert validator.is_valid(good) and not validator.is_valid(bad)
    parse_completion(good, require_id=False)
    with pytest.raises(BadRequest):
        parse_completion(bad, require_id=False)


def test_the_openai_request_schema_names_exactly_the_parameters_the_code_knows() -> None:
    from gateway.protocol.openai import KNOWN_PARAMETERS

    schema = app_document()["components"]["schemas"]["ChatCompletionRequest"]
    assert set(schema["properties"]) == set(KNOWN_PARAMETERS)
    assert schema["additionalProperties"] is False


def test_the_page_is_self_contained_and_lists_every_operation() -> None:
    doc = app_document()
    page = render(doc)
    for path, item in doc["paths"].items():
        assert f"<code>{path}</code>" in page
        for op in item.values():
            assert f'id="{op["operationId"]}"' in page
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    lowered = page.lower()
    assert "<script" not in lowered and "<link" not in lowered and "src=" not in lowered
    assert "http://" not in lowered.replace("http://json-schema.org", "")
    assert "https://" not in lowered


# Against a real gateway.


async def test_the_gateway_serves_the_document_and_the_page(gateway: str, token: Any) -> None:
    async with httpx2.AsyncClient(base_url=gateway) as client:
        served = (await client.get("/openapi.json")).json()
        page = await client.get("/docs")
    assert served == app_document()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "POST" in page.text and "/v1/chat/completions" in page.text


def examples() -> list[tuple[str, str, str]]:
    return [
        (method, path, name)
        for (method, path), op in openapi.OPERATIONS.items()
        for name in op.examples
    ]


@pytest.mark.parametrize(("method", "path", "name"), examples())
async def test_each_documented_example_gets_the_documented_answer(
    gateway: str, token: Any, method: str, path: str, name: str
) -> None:
    """Accepted examples are accepted by the real server and answered in the documented
    schema; refusal examples get exactly the documented status and body."""
    doc = app_document()
    op = doc["paths"][path][method.lower()]
    example = openapi.OPERATIONS[(method, path)].examples[name]
    documented_body = op["requestBody"]["content"]["application/json"]["examples"][name]["value"]
    assert documented_body == example.body
    url = path.replace("{conversation_id}", "trip-planning")
    headers = {"Authorization": f"Bearer {token()}"}
    async with httpx2.AsyncClient(base_url=gateway, timeout=20) as client:
        # Some examples name the conversation the first one creates.
        await client.post(
            "/completion",
            json={"message": "hi", "conversation_id": "trip-planning"},
            headers=headers,
        )
        response = await client.request(method, url, json=example.body, headers=headers)
    assert response.status_code == example.status, response.text
    if example.answer is not None:
        documented = op["responses"][str(example.status)]["content"]["application/json"]
        answer = documented["examples"][name]["value"]
        got = response.json()
        if "timestamp" in got:
            got["timestamp"] = answer["timestamp"]
        assert got == answer
        return
    kind = response.headers["content-type"].split(";")[0]
    schema = op["responses"]["200"]["content"][kind]["schema"]
    if kind == "application/json":
        ref = schema["$ref"].rsplit("/", 1)[-1]
        assert_valid(doc, ref, response.json())
    else:
        assert sse_data(response.text), "an empty stream"


async def test_native_streams_carry_documented_events(gateway: str, token: Any) -> None:
    doc = app_document()
    headers = {"Authorization": f"Bearer {token()}"}
    async with httpx2.AsyncClient(base_url=gateway, timeout=20) as client:
        stream = await client.post(
            "/completion", json={"message": "one two three", "stream": True}, headers=headers
        )
        events = [json.loads(data) for _, data in sse_data(stream.text)]
        replay = await client.get(
            f"/generations/{events[0]['generation_id']}/events",
            headers={**headers, "Last-Event-ID": "1"},
        )
        failed = await client.post(
            "/completion",
            json={"message": "x", "model": "fake-err401", "stream": True},
            headers=headers,
        )
    replayed = [json.loads(data) for _, data in sse_data(replay.text)]
    errors = [json.loads(data) for _, data in sse_data(failed.text)]
    assert events[0]["type"] == "start" and events[-1]["type"] == "done"
    assert replayed == events[1:]
    assert errors[-1]["type"] == "error"
    for item in [*events, *errors]:
        assert_valid(doc, "Event", item)


async def test_openai_and_ai_sdk_streams_carry_documented_parts(gateway: str, token: Any) -> None:
    doc = app_document()
    headers = {"Authorization": f"Bearer {token()}"}
    chat = {"model": "echo", "messages": [{"role": "user", "content": "a b"}], "stream": True}
    turn = {
        "id": f"c{uuid.uuid4().hex[:8]}",
        "messages": [{"role": "user", "parts": [{"type": "text", "text": "a b"}]}],
    }
    async with httpx2.AsyncClient(base_url=gateway, timeout=20) as client:
        openai_stream = await client.post("/v1/chat/completions", json=chat, headers=headers)
        ui_stream = await client.post("/api/chat", json=turn, headers=headers)
    chunks = [data for _, data in sse_data(openai_stream.text)]
    parts = [data for _, data in sse_data(ui_stream.text)]
    assert chunks[-1] == "[DONE]" and parts[-1] == "[DONE]"
    for data in chunks[:-1]:
        assert_valid(doc, "ChatCompletionChunk", json.loads(data))
    for data in parts[:-1]:
        assert_valid(doc, "UIMessagePart", json.loads(data))


async def test_errors_have_the_documented_shapes(gateway: str, token: Any) -> None:
    doc = app_document()
    async with httpx2.AsyncClient(base_url=gateway) as client:
        native = await client.get("/conversations")
        openai_error = await client.get("/v1/models")
        unknown = await client.delete("/v1/files/nothing")
        bad_limit = await client.get(
            "/conversations?limit=0", headers={"Authorization": f"Bearer {token()}"}
        )
    assert native.status_code == 401 and native.headers["www-authenticate"] == "Bearer"
    assert_valid(doc, "Error", native.json())
    assert_valid(doc, "Error", bad_limit.json())
    assert openai_error.status_code == 401
    assert_valid(doc, "OpenAIError", openai_error.json())
    assert unknown.status_code == 404
    assert_valid(doc, "OpenAIError", unknown.json())


# Fuzzing.


@pytest.fixture(scope="module")
def fuzz_gateway(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One gateway for every fuzzed operation: the echo model, no per-user limits."""
    configured = Settings(
        redis_url=redis_server.url,
        redis_prefix=f"t{uuid.uuid4().hex[:12]}:",
        data_dir=tmp_path_factory.mktemp("fuzz"),
        jwt_secret=Secret(TEST_SECRET),
        models={"echo": ModelConfig(name="echo", provider="echo")},
        default_model="echo",
        echo_delay_ms=0,
        limits=Limits(requests_per_minute=0, concurrent_generations=0, connections=0),
        ws_ping_interval=0,
        log_level="critical",
    )
    app = create_app(configured, upstream_retries=0)
    with serve_in_thread(app, **uvicorn_options(configured)) as url:
        yield url


@pytest.fixture(scope="module")
def bearer() -> str:
    from gateway.auth.tokens import mint_token

    return mint_token(Settings(jwt_secret=Secret(TEST_SECRET)), "fuzzer", 3600)


# Built from the code, which is what /openapi.json serves (checked above). The page and its
# assets are files, not an API.
FUZZED = schemathesis.openapi.from_dict(app_document()).exclude(path_regex="^/(static/|$)")
FUZZ_CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.response_schema_conformance,
]


# Streams that never end by design (a user's activity): a fuzzed request would wait on them
# until the test's timeout. Their answers and refusals are tested in tests/e2e/test_activity.py.
ENDLESS = {"/activity"}


def fuzzed_operations() -> list[tuple[str, str, schemathesis.GenerationMode]]:
    """Every API operation with valid inputs, and those that take input with invalid ones."""
    cases = []
    for path, item in app_document()["paths"].items():
        for method, op in item.items():
            if path.startswith("/static/") or path == "/" or path in ENDLESS:
                continue
            cases.append((path, method, schemathesis.GenerationMode.POSITIVE))
            takes_input = "requestBody" in op or any(
                p["in"] != "path" or p["schema"] != {"type": "string"}
                for p in op.get("parameters", [])
            )
            if takes_input:
                cases.append((path, method, schemathesis.GenerationMode.NEGATIVE))
    return cases


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("path", "method", "mode"), fuzzed_operations())
def test_fuzzed_requests_get_no_500_and_documented_answers(
    fuzz_gateway: str, bearer: str, path: str, method: str, mode: schemathesis.GenerationMode
) -> None:
    """Schema-valid and schema-invalid requests (derandomized, a few per operation): never a
    5xx, always an answer the document describes, SSE events included."""
    operation = FUZZED[path][method]
    headers = {"Authorization": f"Bearer {bearer}"}

    strategy = operation.as_strategy(mode)
    if mode == schemathesis.GenerationMode.POSITIVE:
        # The documented examples too, so that answers (and streams) are checked, not only
        # refusals of random field values such as unknown model names.
        strategy = st.one_of(*operation.get_strategies_from_examples(), strategy)

    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(
            base_url=fuzz_gateway, headers=headers, checks=FUZZ_CHECKS, timeout=20
        )

    run()
