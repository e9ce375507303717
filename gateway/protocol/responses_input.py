"""The Responses API's input items (pure): `input` as the core's messages, the items a
response keeps and lists (`input_items`), and `item_reference`s to earlier output items.
The request's other fields are `responses.py`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from gateway.errors import excerpt
from gateway.events import Message, ToolCall
from gateway.protocol.openai import (
    Body,
    InvalidParameter,
    _invalid_type,
    bounded_list,
    text_parts,
)

# What follows `resp_` (and `gen_`) in an id.
ID_SUFFIX = "[A-Za-z0-9_-]{1,60}"
SUFFIX_RE = re.compile(f"^{ID_SUFFIX}$")
TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# The earlier responses one request's `item_reference`s may name (each is read from its log).
MAX_REFERENCED_RESPONSES = 64


def input_items(value: str | list[Body]) -> list[Body]:
    """The input as items (a string is one user message), for `input_items`."""
    if isinstance(value, str):
        content = [{"type": "input_text", "text": value}]
        return [{"type": "message", "role": "user", "content": content}]
    return value


def parse_input(value: Any) -> list[Message]:
    """`input` as messages: a string (one user message), or items: messages (roles system,
    developer, user, assistant; a string or text parts), function_call items (joined to the
    assistant message before them) and function_call_output items."""
    if isinstance(value, str):
        return [Message("user", value)]
    items = bounded_list(value, "input", "a string or an array of input items", "items")
    messages: list[Message] = []
    for i, item in enumerate(items):
        _add_item(messages, item, f"input[{i}]")
    return messages


def _add_item(messages: list[Message], item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise _invalid_type(where, "an object")
    kind = item.get("type", "message")
    if kind == "message":
        messages.append(_message(item, where))
    elif kind == "function_call":
        call = ToolCall(
            _string(item, "call_id", where),
            _string(item, "name", where),
            _string(item, "arguments", where),
        )
        before = messages[-1] if messages else None
        if before is not None and before.role == "assistant":
            messages[-1] = Message("assistant", before.content, (*before.tool_calls, call))
        else:
            messages.append(Message("assistant", "", (call,)))
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else _text(output, f"{where}.output")
        messages.append(Message("tool", text, tool_call_id=_string(item, "call_id", where)))
    else:
        shown = excerpt(kind) if isinstance(kind, str) else "invalid"
        raise InvalidParameter(
            f"Input items of type '{shown}' are not supported.",
            f"{where}.type",
            "unsupported_value",
        )


def _message(item: Body, where: str) -> Message:
    role = item.get("role")
    content = item.get("content")
    text = content if isinstance(content, str) else _text(content, f"{where}.content")
    if role in ("system", "developer"):
        return Message("system", text)
    if role in ("user", "assistant"):
        return Message(role, text)
    raise InvalidParameter(
        f"Invalid value for {where}.role: expected one of system, developer, user or assistant.",
        f"{where}.role",
        "invalid_value",
    )


def _text(parts: Any, where: str) -> str:
    """Text content parts (input_text, output_text), joined by newlines."""
    return text_parts(parts, where, TEXT_PARTS, refusals=True)


def _string(item: Body, name: str, where: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise InvalidParameter(
            f"Missing or invalid {where}.{name}: expected a string.",
            f"{where}.{name}",
            "missing_required_parameter" if value is None else "invalid_type",
        )
    return value


def input_item_page(response_id: str, items: list[Body], query: Mapping[str, str]) -> Body:
    """A page of a response's input items (`order` asc or desc, the default; `limit` 1-100,
    20 by default; `after` an item id), each with an id and text parts as OpenAI lists them."""
    suffix = response_id.removeprefix("resp_")
    # `_in<i>`: never the id of an output item (`msg_<suffix>`, `fc_<suffix>_<i>`).
    listed = [_listed_item(item, f"{suffix}_in{i}") for i, item in enumerate(items)]
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidParameter("'order' must be 'asc' or 'desc'.", "order", "invalid_value")
    if order == "desc":
        listed.reverse()
    limit_text = query.get("limit", "20")
    limit = int(limit_text) if limit_text.isascii() and limit_text.isdigit() else 0
    if not 1 <= limit <= 100:
        raise InvalidParameter("'limit' must be from 1 to 100.", "limit", "invalid_value")
    after = query.get("after")
    if after is not None:
        ids = [item["id"] for item in listed]
        listed = listed[ids.index(after) + 1 :] if after in ids else []
    page = listed[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(listed) > limit,
    }


def _listed_item(item: Body, suffix: str) -> Body:
    kind = item.get("type", "message")
    if kind == "function_call":
        return {"id": f"fc_{suffix}", "status": "completed", **item}
    if kind == "function_call_output":
        return {"id": f"fco_{suffix}", "status": "completed", **item}
    role = item.get("role")
    content = item.get("content")
    if isinstance(content, str):
        part = "output_text" if role == "assistant" else "input_text"
        content = [{"type": part, "text": content}]
    listed = {"id": f"msg_{suffix}", "type": "message", "role": role, "status": "completed"}
    return {**listed, "content": content}


def referenced_items(body: Body) -> dict[str, set[str]]:
    """The output items `item_reference` input items name (what the AI SDK sends for earlier
    answers of a stored response), by the generation that made them: at most
    MAX_REFERENCED_RESPONSES responses, each read once."""
    found: dict[str, set[str]] = {}
    items = body.get("input")
    for i, item in enumerate(items if isinstance(items, list) else ()):
        if not isinstance(item, dict) or item.get("type") != "item_reference":
            continue
        item_id = item.get("id")
        generation = _item_generation(item_id) if isinstance(item_id, str) else None
        if generation is None:
            raise _unknown_item(item_id, i)
        found.setdefault(generation, set()).add(item_id)  # type: ignore[arg-type]
    if len(found) > MAX_REFERENCED_RESPONSES:
        raise InvalidParameter(
            f"'input' may reference items of at most {MAX_REFERENCED_RESPONSES} responses.",
            "input",
            "array_above_max_length",
        )
    return found


def with_references(body: Body, items: Mapping[str, Body]) -> Body:
    """The body with each `item_reference` replaced by the output item it names."""
    given = body.get("input")
    if not isinstance(given, list):
        return body
    resolved = []
    for i, item in enumerate(given):
        if isinstance(item, dict) and item.get("type") == "item_reference":
            found = items.get(item.get("id"))  # type: ignore[arg-type]
            if found is None:
                raise _unknown_item(item.get("id"), i)
            item = found
        resolved.append(item)
    return {**body, "input": resolved}


def _item_generation(item_id: str) -> str | None:
    """The generation whose response holds an output item: `msg_<suffix>`, or
    `fc_<suffix>_<index>` (the ids `responses_render` gives)."""
    if item_id.startswith("msg_"):
        suffix = item_id.removeprefix("msg_")
    elif item_id.startswith("fc_") and "_" in item_id[3:]:
        suffix, _, index = item_id.removeprefix("fc_").rpartition("_")
        if not index.isdigit():
            return None
    else:
        return None
    return "gen_" + suffix if SUFFIX_RE.fullmatch(suffix) else None


def _unknown_item(item_id: Any, index: int) -> InvalidParameter:
    shown = excerpt(item_id) if isinstance(item_id, str) else "invalid"
    return InvalidParameter(
        f"Item with id '{shown}' not found.", f"input[{index}].id", "invalid_value"
    )
