"""docs/asyncapi.yaml: the document `gateway.apidocs.asyncapi` builds from the wire types, a
valid AsyncAPI 3.0 document (checked with the official AsyncAPI 3.0.0 JSON Schema, vendored in
tests/schemas/), that names exactly the frames, close codes and error codes of the code, and
whose message schemas describe what a real gateway sends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from jsonschema import Draft7Validator
from pydantic import TypeAdapter, ValidationError
from websockets.asyncio.client import ClientConnection

from gateway import errors
from gateway.apidocs import asyncapi, schemas
from gateway.core import conversations
from gateway.core.notices import NOTICES
from gateway.errors import BadRequest, ErrorCode, RateLimited
from gateway.events import (
    Chunk,
    Done,
    Event,
    Failed,
    GenerationRef,
    Start,
    ToolCalled,
    ToolReturned,
    Usage,
)
from gateway.protocol import frames as protocol
from gateway.protocol import server_models, views
from gateway.store.messages import MessageStatus
from gateway.store.records import Status
from tests.client import close_code, connected, receive, send
from tests.conftest import GatewayFactory

ROOT = Path(__file__).resolve().parents[2]
Json = dict[str, Any]
CLIENT_FRAMES = {
    "auth": protocol.Auth,
    "completion": protocol.CompletionRequest,
    "resume": protocol.Resume,
    "cancel": protocol.Cancel,
    "ping": protocol.Ping,
}


def load() -> Json:
    """The document as JSON sees it (YAML's integer keys become strings)."""
    doc: Json = json.loads(json.dumps(yaml.safe_load((ROOT / "docs/asyncapi.yaml").read_text())))
    return doc


DOC = load()


def messages(operation: str) -> list[str]:
    return [m["$ref"].rsplit("/", 1)[-1] for m in DOC["operations"][operation]["messages"]]


def payload_validator(message: str) -> Draft7Validator:
    root = {"$ref": f"#/components/messages/{message}/payload", "components": DOC["components"]}
    return Draft7Validator(root)


def assert_documented(frame: Json) -> None:
    """The frame validates against the message of its own type."""
    kind = frame["type"]
    assert kind in DOC["channels"]["socket"]["messages"], kind
    problems = [e.message for e in payload_validator(kind).iter_errors(frame)]
    assert not problems, f"{kind}: {problems[:3]} in {frame}"


def test_the_file_is_the_document_the_wire_types_make() -> None:
    """Regenerate with `python -m gateway.apidocs.asyncapi > docs/asyncapi.yaml`."""
    assert json.loads(json.dumps(asyncapi.build())) == DOC


def test_the_document_is_valid_asyncapi_3() -> None:
    spec = json.loads((ROOT / "tests/schemas/asyncapi-3.0.0.json").read_text())
    validator = Draft7Validator(spec)
    assert [e.message for e in validator.iter_errors(DOC)] == []
    broken = {**DOC, "channels": {"socket": {"address": 7}}}
    assert not validator.is_valid(broken)  # the validator does look inside


def test_every_example_fits_its_message() -> None:
    count = 0
    for name, message in DOC["components"]["messages"].items():
        for example in message.get("examples", []):
            assert not list(payload_validator(name).iter_errors(example["payload"])), name
            count += 1
    assert count >= 8


def test_client_frames_are_the_parsers_frames() -> None:
    assert messages("receiveClientFrame") == list(CLIENT_FRAMES)
    assert set(CLIENT_FRAMES.values()) == set(get_args(protocol.ClientFrame))
    for name, kind in CLIENT_FRAMES.items():
        for example in DOC["components"]["messages"][name]["examples"]:
            assert isinstance(protocol.parse_frame_object(example["payload"]), kind)
    with pytest.raises(BadRequest, match="Unknown frame type"):
        protocol.parse_frame_object({"type": "subscribe"})


def server_frames() -> list[Json]:
    """One of every frame the server's renderers make."""
    ref = GenerationRef("gen_0123456789abcdef", "trip-planning")
    events: list[Event] = [
        Start(1, "echo", "chat"),
        Chunk(2, "Paris", {}),
        ToolCalled(3, "call_1", "calculate", '{"expression": "6*7"}'),
        ToolReturned(4, "call_1", "calculate", "42", False),
        Done(5, "stop", Usage(3, 1), {}),
        Failed(5, "rate_limited", "Slow down.", True, 2.5),
    ]
    assert {type(e) for e in events} == set(get_args(Event))
    frames = [protocol.event_object(e, ref, "req-1") for e in events]
    texts = [
        protocol.ready_frame("alice", "conn_q3Jm8YtR0aZk", 1767225600),
        protocol.authenticated_frame("alice", 1767225600),
        protocol.token_expiring_frame(58),
        protocol.resumed_frame("req-1", ref.generation_id, 2, "running", None),
        protocol.error_frame("req-2", RateLimited("Too many.", retry_after=3), done=True),
        protocol.PONG_FRAME,
    ]
    notice = protocol.notice_object("req-1", ref, schemas.NOTICE_CODES[0], "Degraded.")
    return [*frames, *(json.loads(t) for t in texts), notice]


def test_server_frames_are_the_renderers_frames() -> None:
    frames = server_frames()
    assert sorted(messages("sendServerFrame")) == sorted({f["type"] for f in frames})
    assert set(schemas.EVENT_TYPES) <= set(messages("sendServerFrame"))
    for frame in frames:
        assert_documented(frame)


def test_event_schemas_agree_with_the_openapi_ones() -> None:
    ours = DOC["components"]["schemas"]
    for name, schema in schemas.EVENTS.items():
        assert set(ours[name]["properties"]) == set(schema["properties"]), name
        assert set(ours[name]["required"]) == set(schema["required"]), name
    notice = ours["Notice"]["properties"]["code"]["enum"]
    assert notice == list(schemas.NOTICE_CODES)


def test_every_rendered_frame_is_its_wire_type() -> None:
    types = {
        **{t.__name__: t for t in server_models.EVENTS.values()},
        **server_models.SOCKET_FRAMES,
        "Notice": server_models.Notice,
    }
    by_type = {
        "start": "StartEvent",
        "chunk": "ChunkEvent",
        "tool_call": "ToolCallEvent",
        "tool_result": "ToolResultEvent",
        "done": "DoneEvent",
        "notice": "Notice",
        "ready": "ReadyFrame",
        "authenticated": "AuthenticatedFrame",
        "token_expiring": "TokenExpiringFrame",
        "resumed": "ResumedFrame",
        "pong": "PongFrame",
    }
    for frame in server_frames():
        name = by_type.get(frame["type"]) or ("ErrorEvent" if "seq" in frame else "ErrorFrame")
        TypeAdapter(types[name]).validate_python(frame)
    with pytest.raises(ValidationError):  # the wire types do look: no field beyond theirs
        TypeAdapter(server_models.PongFrame).validate_python({"type": "pong", "extra": 1})


def test_the_enumerations_on_the_wire_are_the_stores_and_the_cores() -> None:
    assert get_args(server_models.GenerationStatus) == get_args(Status)
    assert get_args(server_models.NoticeCode) == tuple(NOTICES)
    assert get_args(views.MessageStatus) == get_args(MessageStatus)
    assert views.MAX_TITLE_CHARS == conversations.MAX_TITLE_CHARS


def test_close_codes_are_the_codes_constants() -> None:
    constants = {v for k, v in vars(errors).items() if k.startswith("CLOSE_")}
    keepalive_timeout = 1011  # sent by the WebSocket layer when a ping goes unanswered
    assert {int(code) for code in DOC["x-close-codes"]} == constants | {keepalive_timeout}


def test_error_codes_are_the_codes_of_the_error_tree() -> None:
    codes = list(get_args(ErrorCode))
    assert DOC["components"]["schemas"]["ErrorCode"]["enum"] == codes
    assert list(DOC["x-error-codes"]) == codes


# A real session.


async def frames_until_done(ws: ClientConnection, request_id: str, seen: list[Json]) -> None:
    while True:
        frame = await receive(ws)
        seen.append(frame)
        if frame.get("id") == request_id and frame.get("done") is True:
            return


async def test_a_real_session_sends_only_documented_frames(
    start_gateway: GatewayFactory, token: Any
) -> None:
    seen: list[Json] = []
    with start_gateway() as url:
        ws = await connected(url, token())
        await send(ws, type="completion", id="a", message="one two three", model="echo")
        await frames_until_done(ws, "a", seen)
        generation_id = seen[0]["generation_id"]
        await send(ws, type="resume", generation_id=generation_id, after=1, id="again")
        await frames_until_done(ws, "again", seen)
        await send(
            ws, type="completion", id="calc", agent="calc-only", message='{"expression": "6*7"}'
        )
        await frames_until_done(ws, "calc", seen)
        await send(ws, type="completion", id="bad", message="")
        await frames_until_done(ws, "bad", seen)
        await send(ws, type="completion", id="up", message="x", model="fake-err401")
        await frames_until_done(ws, "up", seen)
        await send(ws, type="ping")
        seen.append(await receive(ws))
        await send(ws, type="auth", token=token())
        seen.append(await receive(ws))
        await send(ws, type="cancel", generation_id="gen_nobody")
        seen.append(await receive(ws))
        await ws.send(b"\x00binary")
        code = await close_code(ws)
    kinds = {frame["type"] for frame in seen}
    assert kinds >= {"start", "chunk", "done", "resumed", "tool_call", "tool_result", "error"}
    assert kinds >= {"pong", "authenticated"}
    for frame in seen:
        assert_documented(frame)
    assert str(code) in DOC["x-close-codes"] and code == errors.CLOSE_UNSUPPORTED_DATA
