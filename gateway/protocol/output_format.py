"""The output formats clients ask for, pure: OpenAI chat's `response_format` (and, for the
Responses API's `text.format`, its `json_schema` part) as the provider-neutral
`OutputFormat`, its shape checked and its schema bounded.

Whether the model takes a JSON format is the core's decision (its table's
`structured_outputs`); here only the request's own shape is judged.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.errors import BadRequest, excerpt
from gateway.events import OutputFormat

# A JSON Schema is sent upstream with every request and kept in memory while it runs: 64 KiB
# of compact JSON holds any schema a client library generates for a real answer.
MAX_SCHEMA_BYTES = 64 * 1024
SCHEMA_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for the name
KINDS = ("text", "json_object", "json_schema")
SCHEMA_FIELDS = frozenset({"name", "description", "schema", "strict"})


def parse_response_format(value: Any, where: str = "response_format") -> OutputFormat | None:
    """`{"type": "text" | "json_object"}` or `{"type": "json_schema", "json_schema": {...}}`;
    None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest(f"'{where}' must be an object.")
    kind = value.get("type")
    if kind not in KINDS:
        raise BadRequest(f"'{where}.type' must be one of {', '.join(KINDS)}.")
    allowed = {"type", "json_schema"} if kind == "json_schema" else {"type"}
    _refuse_unknown(value, allowed, where)
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict):
            raise BadRequest(f"'{where}.json_schema' must be an object.")
        return json_schema_format(spec, f"{where}.json_schema")
    return OutputFormat(kind)


def json_schema_format(spec: dict[str, Any], where: str) -> OutputFormat:
    """A json_schema format's fields (`name`, `description`, `schema`, `strict`): nested in
    chat's `response_format.json_schema`, beside `type` in the Responses API's `text.format`
    (whose caller drops `type` first)."""
    _refuse_unknown(spec, SCHEMA_FIELDS, where)
    name = spec.get("name")
    if not isinstance(name, str) or not SCHEMA_NAME_RE.fullmatch(name):
        raise BadRequest(f"'{where}.name' is required: 1-64 characters of a-z, A-Z, 0-9, _ or -.")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise BadRequest(f"'{where}.description' must be a string.")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise BadRequest(f"'{where}.strict' must be a boolean.")
    return OutputFormat(
        "json_schema", name, _schema(spec.get("schema"), where), strict, description
    )


def _schema(schema: Any, where: str) -> dict[str, Any] | None:
    if schema is None:
        return None
    if not isinstance(schema, dict):
        raise BadRequest(f"'{where}.schema' must be a JSON Schema object.")
    # The body was parsed from JSON within its own bound, so this encoding is bounded too.
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    size = len(text.encode("utf-8", "surrogatepass"))  # JSON's escapes can make a lone one
    if size > MAX_SCHEMA_BYTES:
        raise BadRequest(
            f"'{where}.schema' is {size} bytes of JSON; at most {MAX_SCHEMA_BYTES} are accepted."
        )
    return schema


def _refuse_unknown(value: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    for key in value:
        if key not in allowed:
            raise BadRequest(f"Unknown parameter: '{where}.{excerpt(str(key))}'.")
