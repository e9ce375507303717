"""Structured outputs: the provider-neutral `OutputFormat`, its OpenAI rendering, and
`response_format` on /v1/chat/completions end to end with the official `openai` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import httpx2
import openai
import pytest
from pydantic import BaseModel

from gateway.config import ModelConfig
from gateway.events import Message, OutputFormat
from gateway.llm.base import ModelParams
from gateway.llm.bounds import UpstreamBounds
from gateway.llm.echo_json import echo_json
from gateway.llm.openai.dialect import OpenAIDialect, wire_response_format
from gateway.protocol.openai import InvalidParameter, chat_call
from gateway.protocol.output_format import MAX_SCHEMA_BYTES
from tests.support.processes import config_file, gateway_environment, start_process
from tests.support.redis import RedisServer
from tests.support.tokens import mint
from tests.support.upstream import FakeUpstream

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("output", "wire"),
    [
        (None, None),
        (OutputFormat("text"), None),  # the API's default: never sent
        (OutputFormat("json_object"), {"type": "json_object"}),
        (
            OutputFormat("json_schema", "Place", SCHEMA, True),
            {
                "type": "json_schema",
                "json_schema": {"name": "Place", "schema": SCHEMA, "strict": True},
            },
        ),
        (
            OutputFormat("json_schema", "Place", SCHEMA, description="Where"),
            {
                "type": "json_schema",
                "json_schema": {"name": "Place", "description": "Where", "schema": SCHEMA},
            },
        ),
    ],
)
def test_an_output_format_renders_as_openai_response_format(
    output: OutputFormat | None, wire: dict[str, Any] | None
) -> None:
    assert wire_response_format(output) == wire


async def test_the_dialect_puts_response_format_in_the_request() -> None:
    client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:1/v1")
    dialect = OpenAIDialect(ModelConfig("m", "openai"), client, UpstreamBounds())
    messages = [Message("user", "hi")]
    params = ModelParams(output_format=OutputFormat("json_schema", "Place", SCHEMA, True))
    body = dialect.request(messages, params, stream=True)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Place", "schema": SCHEMA, "strict": True},
    }
    assert "response_format" not in dialect.request(messages, ModelParams(), stream=False)
    await client.close()


# The request's side: `response_format` read and bounded, refused with the parameter named.

BAD_FORMATS: list[tuple[Any, str]] = [
    ("json", "must be an object"),
    ({"type": "xml"}, "must be one of text, json_object, json_schema"),
    ({"type": "json_object", "json_schema": {}}, "Unknown parameter: 'response_format.json"),
    ({"type": "json_schema"}, "'response_format.json_schema' must be an object"),
    (
        {"type": "json_schema", "json_schema": {"schema": SCHEMA}},
        "'response_format.json_schema.name' is required",
    ),
    ({"type": "json_schema", "json_schema": {"name": "a b"}}, "1-64 characters"),
    ({"type": "json_schema", "json_schema": {"name": "a", "schema": []}}, "JSON Schema object"),
    (
        {"type": "json_schema", "json_schema": {"name": "a", "strict": "yes"}},
        "strict' must be a boolean",
    ),
    ({"type": "json_schema", "json_schema": {"name": "a", "extra": 1}}, "Unknown parameter"),
    (
        {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": {"description": "x" * MAX_SCHEMA_BYTES}},
        },
        f"at most {MAX_SCHEMA_BYTES} are accepted",
    ),
]


@pytest.mark.parametrize(("value", "fragment"), BAD_FORMATS)
def test_a_malformed_response_format_is_refused_naming_it(value: Any, fragment: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        chat_call(_body(value), ["m"])
    assert (caught.value.param, caught.value.openai_code) == ("response_format", "invalid_value")
    assert fragment in caught.value.message


@pytest.mark.parametrize(
    ("value", "output"),
    [
        (None, None),
        ({"type": "text"}, OutputFormat("text")),
        ({"type": "json_object"}, OutputFormat("json_object")),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "Place", "schema": SCHEMA, "strict": True},
            },
            OutputFormat("json_schema", "Place", SCHEMA, True),
        ),
    ],
)
def test_a_response_format_becomes_the_neutral_output_format(
    value: Any, output: OutputFormat | None
) -> None:
    assert chat_call(_body(value), ["m"]).request.output_format == output


def _body(response_format: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if response_format is not None:
        body["response_format"] = response_format
    return body


# What echo answers when asked for JSON.


class Stop(BaseModel):
    name: str
    nights: int


class Trip(BaseModel):
    city: str
    kind: Literal["city", "beach"]
    stops: list[Stop]
    first: Stop
    note: str | None
    budget: float = 100.0


def test_echo_answers_json_object_with_the_message() -> None:
    assert json.loads(echo_json("hi there", OutputFormat("json_object"))) == {"echo": "hi there"}


def test_echo_answers_a_pydantic_schema_with_an_instance_of_it() -> None:
    text = echo_json("Paris", OutputFormat("json_schema", "Trip", Trip.model_json_schema()))
    trip = Trip.model_validate_json(text)
    assert (trip.city, trip.kind, trip.stops, trip.first.name) == ("Paris", "city", [], "Paris")
    assert trip.note == "Paris"  # the first of its anyOf


def test_echo_json_ends_a_reference_cycle() -> None:
    schema = {"$ref": "#/$defs/A", "$defs": {"A": {"$ref": "#/$defs/A"}}}
    assert echo_json("x", OutputFormat("json_schema", "A", schema)) == "null"


# End to end: the official SDK against a gateway process whose models are the fake upstream.

STRUCTURED = "fake-verbatim-so"  # declares structured_outputs = true
PLAIN = "fake-verbatim-plain"  # does not


@pytest.fixture(scope="module")
def gateway(
    redis_server: RedisServer,
    upstream: tuple[FakeUpstream, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("structured")
    config = config_file(folder, upstream[1], extra=[STRUCTURED, PLAIN], structured=[STRUCTURED])
    # An echo table: the echo provider takes JSON formats unless its table says otherwise.
    config.write_text(config.read_text() + '[models.echo]\nprovider = "echo"\n')
    process = start_process(folder, gateway_environment(redis_server.url, config))
    yield process.url
    process.stop()


@pytest.fixture
def sent() -> list[dict[str, Any]]:
    """The bodies the SDK sends, as it sent them."""
    return []


@pytest.fixture
def client(gateway: str, sent: list[dict[str, Any]]) -> Iterator[openai.OpenAI]:
    def record(request: httpx2.Request) -> None:
        sent.append(json.loads(request.content))

    http = httpx2.Client(event_hooks={"request": [record]}, timeout=20)
    with openai.OpenAI(
        base_url=f"{gateway}/v1", api_key=mint(), max_retries=0, http_client=http
    ) as sdk:
        yield sdk


class Place(BaseModel):
    city: str
    days: int


def test_parse_gets_the_object_and_the_upstream_the_sdks_response_format(
    client: openai.OpenAI, sent: list[dict[str, Any]], fake_upstream: FakeUpstream
) -> None:
    answer = '{"city": "Lisbon", "days": 3}'
    before = fake_upstream.count(STRUCTURED)
    completion = client.chat.completions.parse(
        model=STRUCTURED, messages=[{"role": "user", "content": answer}], response_format=Place
    )
    assert completion.choices[0].message.parsed == Place(city="Lisbon", days=3)
    assert fake_upstream.count(STRUCTURED) == before + 1
    received = [r.body for r in fake_upstream.requests if r.model == STRUCTURED][-1]
    assert sent[-1]["response_format"]["type"] == "json_schema"
    assert received["response_format"] == sent[-1]["response_format"]


def test_a_streamed_parse_gets_the_object(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=STRUCTURED,
        messages=[{"role": "user", "content": '{"city": "Oslo", "days": 2}'}],
        response_format=Place,
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == Place(city="Oslo", days=2)


def test_json_object_is_forwarded(client: openai.OpenAI, fake_upstream: FakeUpstream) -> None:
    completion = client.chat.completions.create(
        model=STRUCTURED,
        messages=[{"role": "user", "content": '{"ok": true}'}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"ok": True}
    received = [r.body for r in fake_upstream.requests if r.model == STRUCTURED][-1]
    assert received["response_format"] == {"type": "json_object"}


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "Place", "schema": SCHEMA}},
    ],
)
def test_a_model_without_the_setting_refuses_json_formats(
    client: openai.OpenAI, fake_upstream: FakeUpstream, response_format: Any
) -> None:
    before = fake_upstream.count(PLAIN)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=PLAIN,
            messages=[{"role": "user", "content": "{}"}],
            response_format=response_format,
        )
    error = caught.value
    assert (error.type, error.param, error.code) == (
        "invalid_request_error",
        "response_format",
        "unsupported_value",
    )
    assert PLAIN in error.message and "structured_outputs = true" in error.message
    assert response_format["type"] in error.message
    assert fake_upstream.count(PLAIN) == before  # nothing went upstream


def test_text_is_accepted_on_every_model(
    client: openai.OpenAI, fake_upstream: FakeUpstream
) -> None:
    completion = client.chat.completions.create(
        model=PLAIN,
        messages=[{"role": "user", "content": "plain words"}],
        response_format={"type": "text"},
    )
    assert completion.choices[0].message.content == "plain words"
    received = [r.body for r in fake_upstream.requests if r.model == PLAIN][-1]
    assert "response_format" not in received  # the API's default: not sent


def test_echo_answers_json_formats(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "hello there"}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == {"echo": "hello there"}
    parsed = client.chat.completions.parse(
        model="echo", messages=[{"role": "user", "content": "Rome"}], response_format=Place
    )
    assert parsed.choices[0].message.parsed == Place(city="Rome", days=0)


def test_a_schema_past_the_bound_is_refused_while_others_are_served(
    client: openai.OpenAI, gateway: str
) -> None:
    huge: dict[str, object] = {"type": "object", "description": "x" * (MAX_SCHEMA_BYTES + 1)}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=STRUCTURED,
            messages=[{"role": "user", "content": "{}"}],
            response_format={"type": "json_schema", "json_schema": {"name": "Big", "schema": huge}},
        )
    assert caught.value.param == "response_format"
    assert f"at most {MAX_SCHEMA_BYTES}" in caught.value.message
    # Another user's structured request is served meanwhile.
    with openai.OpenAI(base_url=f"{gateway}/v1", api_key=mint("bob"), max_retries=0) as bob:
        completion = bob.chat.completions.parse(
            model=STRUCTURED,
            messages=[{"role": "user", "content": '{"city": "Graz", "days": 1}'}],
            response_format=Place,
        )
    assert completion.choices[0].message.parsed == Place(city="Graz", days=1)
