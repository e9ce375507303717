"""What the `echo` model answers when asked for JSON (pure): for `json_object`,
`{"echo": <the message>}`; for `json_schema`, the smallest instance of the schema that its
types, `required`, `enum`, `const`, `default`, `anyOf`/`oneOf` and local `$ref`s call for,
every string being the message. Other keywords (`pattern`, `format`, `minLength`,
`minimum`, `minItems`, …) are not honoured, so only schemas that those leave alone validate:
echo shows the plumbing, not a model's judgement."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gateway.events import OutputFormat

MAX_DEPTH = 32  # a $ref cycle, or a deep schema, ends in null here


def echo_json(message: str, output: OutputFormat) -> str:
    """The answer's text, with spaces after separators so that it streams in words."""
    if output.kind == "json_schema" and output.schema is not None:
        value = _instance(output.schema, output.schema, message, 0)
    else:
        value = {"echo": message}
    return json.dumps(value, ensure_ascii=False)


def _instance(schema: Any, root: Mapping[str, Any], message: str, depth: int) -> Any:
    if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
        return None
    if "$ref" in schema:
        return _instance(_resolve(schema["$ref"], root), root, message, depth + 1)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _instance(schema[key][0], root, message, depth + 1)
    kind = _type(schema)
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = [n for n in required if n in properties] if isinstance(required, list) else []
        return {n: _instance(properties[n], root, message, depth + 1) for n in names}
    return _SCALARS.get(kind, lambda m: None)(message)


_SCALARS: dict[str | None, Any] = {
    "string": lambda message: message,
    "integer": lambda message: 0,
    "number": lambda message: 0,
    "boolean": lambda message: False,
    "array": lambda message: [],
}


def _type(schema: Mapping[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the first that is not null
        kind = next((k for k in kind if k != "null"), None)
    if kind is None and "properties" in schema:
        return "object"
    return kind if isinstance(kind, str) else None


def _resolve(ref: Any, root: Mapping[str, Any]) -> Any:
    """A local reference (`#/$defs/Name`, `#/definitions/Name`); any other is null."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    node: Any = root
    for part in ref[1:].split("/")[1:]:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part.replace("~1", "/").replace("~0", "~"))
    return node
