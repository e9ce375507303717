"""Structured outputs: the provider-neutral `OutputFormat`, its OpenAI rendering, and
`response_format` on /v1/chat/completions end to end with the official `openai` SDK."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.config import ModelConfig
from gateway.events import Message, OutputFormat
from gateway.llm.base import ModelParams
from gateway.llm.bounds import UpstreamBounds
from gateway.llm.openai.dialect import OpenAIDialect, wire_response_format

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
