"""The AsyncAPI 3.0 document of the WebSocket protocol at `/ws`: the words here, the message
schemas generated from the protocol's wire types (`schemas.SOCKET`, `schemas.EVENTS`).

docs/asyncapi.yaml is this document, written by `python -m gateway.apidocs.asyncapi`; a test
holds the file to `build()`, so the published schemas cannot drift from the parsers.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

from gateway.apidocs.schemas import ERROR_CODES, EVENTS, NATIVE, SOCKET, Schema, ref
from gateway.protocol.frames import PROTOCOL_VERSION, SUBPROTOCOL

Json = dict[str, Any]


@dataclass(frozen=True)
class Message:
    """One frame type: its words, its payload's schema(s), and examples that must fit."""

    title: str
    payload: tuple[str, ...]
    summary: str = ""
    examples: tuple[Json, ...] = field(default=())


GENERATION = "gen_Vb3kP0xQy7LmA2cD"
CLIENT: dict[str, Message] = {
    "auth": Message(
        "Authenticate or renew",
        ("AuthFrame",),
        "The first frame when no token came with the handshake; later, a fresh token for the "
        "same user.",
        ({"type": "auth", "token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.c2ln"},),
    ),
    "completion": Message(
        "Start a generation",
        ("CompletionFrame",),
        "One turn of a conversation; its events carry the frame's `id`.",
        (
            {
                "type": "completion",
                "id": "req-1",
                "message": "What is the capital of France?",
                "conversation_id": "trip-planning",
                "max_tokens": 256,
            },
        ),
    ),
    "resume": Message(
        "Replay and follow a generation",
        ("ResumeFrame",),
        "Every event after `after`, then live ones, from any instance. Answered by `resumed`.",
        ({"type": "resume", "generation_id": GENERATION, "after": 7, "id": "req-1"},),
    ),
    "cancel": Message(
        "Stop a generation",
        ("CancelFrame",),
        "By the `id` it runs under on this socket, or by `generation_id`. Never acknowledged "
        "by a frame of its own.",
        ({"type": "cancel", "id": "req-1"}, {"type": "cancel", "generation_id": GENERATION}),
    ),
    "ping": Message(
        "Application-level liveness check",
        ("PingFrame",),
        "Answered at once with `pong`; counts as activity for WS_IDLE_TIMEOUT.",
        ({"type": "ping"},),
    ),
}
SERVER: dict[str, Message] = {
    "ready": Message(
        "Authenticated",
        ("ReadyFrame",),
        "The first server frame after authentication (unless over the connection limit).",
        (
            {
                "type": "ready",
                "protocol": PROTOCOL_VERSION,
                "user": "alice",
                "connection_id": "conn_q3Jm8YtR0aZk",
                "expires_at": 1767225600,
            },
        ),
    ),
    "authenticated": Message(
        "Token renewed", ("AuthenticatedFrame",), "The answer to an `auth` frame on a live socket."
    ),
    "token_expiring": Message(
        "The token expires soon",
        ("TokenExpiringFrame",),
        "TOKEN_EXPIRY_WARNING seconds before `exp`; send an `auth` frame to renew.",
    ),
    "resumed": Message(
        "A replay begins", ("ResumedFrame",), "Introduces the events of a `resume`."
    ),
    "start": Message("A generation started", ("StartEvent",)),
    "chunk": Message("The next piece of the answer", ("ChunkEvent",)),
    "tool_call": Message("The model called a tool", ("ToolCallEvent",)),
    "tool_result": Message("A tool the gateway ran returned", ("ToolResultEvent",)),
    "done": Message("The generation finished", ("DoneEvent",)),
    "error": Message(
        "An error",
        ("ErrorEvent", "ErrorFrame"),
        "Either the final event of a failed generation, or the refusal of a frame that "
        "started nothing.",
        (
            {
                "type": "error",
                "id": "req-2",
                "code": "bad_request",
                "message": "'message' must be a non-empty string.",
                "retryable": False,
                "done": True,
            },
        ),
    ),
    "notice": Message(
        "News about a generation",
        ("Notice",),
        "Not an event - no seq, not stored, not replayed; at most once per code per generation.",
    ),
    "pong": Message("The answer to `ping`", ("PongFrame",)),
}

DESCRIPTION = f"""\
The native WebSocket protocol at `/ws`, version {PROTOCOL_VERSION} (docs/protocol.md is the \
full reference).
Every frame, both ways, is one WebSocket text frame holding one JSON object; binary frames
close the socket (1003). Unknown fields in client frames are ignored, and an optional field
set to null counts as absent.

Authentication: the server accepts every handshake, then authenticates. The token (a JWT)
is taken from the first of: the `Authorization: Bearer` header, a `bearer.<jwt>` entry of
the subprotocol list (offer `{SUBPROTOCOL}` too; the server selects it), the `token`
query parameter, or a first `auth` frame sent within AUTH_TIMEOUT. A refused token closes
the socket with 4401 and a readable reason; success sends `ready`.

Several completions and resumes may run at once on one socket; their frames are told apart
by `id`. Within one `id`, events arrive in `seq` order and end with a frame whose `done` is
true.
"""

# Close codes and error codes, as docs/protocol.md §7 and §6.3 describe them.
CLOSE_CODES: dict[int, str] = {
    1000: "Idle - no client frame for WS_IDLE_TIMEOUT while nothing ran (`Idle - no frames "
    "for 300 s.`).",
    1003: "A binary frame was received.",
    1008: "More than MAX_ERROR_FRAMES frames were refused within a minute.",
    1009: "A frame larger than MAX_FRAME_BYTES.",
    1011: "No pong to the server's protocol-level ping within WS_PING_TIMEOUT.",
    1012: "The instance is shutting down; reconnect and resume.",
    4008: "The client is not reading fast enough (MAX_QUEUED_FRAMES).",
    4401: "The token was refused, expired on the socket, or a renewal was for another user.",
    4403: "The browser's Origin is not in ALLOWED_ORIGINS.",
    4408: "No auth frame within AUTH_TIMEOUT.",
    4429: "The user already has LIMIT_CONNECTIONS sockets open (one `error` frame comes first).",
}
ERROR_CODE_WORDS: dict[str, str] = {
    "bad_request": "A frame is invalid, names an unknown model or agent, or reuses a running "
    "id. Not retryable.",
    "unauthorized": "A refused token renewal (a failed connect closes with 4401 instead).",
    "forbidden": "Reserved; not sent by version 1.",
    "not_found": "A conversation, message or generation that is unknown, expired, deleted or "
    "another user's.",
    "conversation_full": "The conversation holds MAX_STORED_MESSAGES messages in all its "
    "branches, or the message answered has MAX_SIBLINGS answers or versions. Not retryable.",
    "rate_limited": "A per-user or per-connection limit, or the model's API asked to slow "
    "down. Retryable; `retry_after` when known.",
    "upstream_error": "The model's stream broke off, was malformed, or went silent mid-answer.",
    "upstream_unavailable": "The model's API could not be reached, timed out, or answered "
    "5xx. Retryable.",
    "upstream_credentials": "The model's API refused the gateway's own key. Not retryable.",
    "context_too_long": "The prompt exceeds the model's context window. Not retryable.",
    "interrupted": "The process running the generation stopped before it ended. Retryable.",
    "unavailable": "The instance is draining, or cannot reach Redis. Retryable.",
    "internal": "The gateway failed. Not retryable.",
}
BINDINGS: Json = {
    "ws": {
        "method": "GET",
        "query": {
            "type": "object",
            "properties": {
                "token": {
                    "type": "string",
                    "description": "The JWT, when no header or subprotocol carries it (URLs "
                    "end up in logs).",
                }
            },
        },
        "headers": {
            "type": "object",
            "properties": {
                "Authorization": {
                    "type": "string",
                    "description": "`Bearer <jwt>`, for clients that can set headers.",
                },
                "Sec-WebSocket-Protocol": {
                    "type": "string",
                    "description": f"`{SUBPROTOCOL}, bearer.<jwt>`: the recommended carrier "
                    "for browsers.",
                },
            },
        },
        "bindingVersion": "0.1.0",
    }
}


def message_object(name: str, message: Message) -> Json:
    payload: Schema = (
        ref(message.payload[0])
        if len(message.payload) == 1
        else {"oneOf": [ref(kind) for kind in message.payload]}
    )
    result: Json = {"name": name, "title": message.title}
    if message.summary:
        result["summary"] = message.summary
    result["payload"] = payload
    if message.examples:
        result["examples"] = [{"payload": example} for example in message.examples]
    return result


def operation(action: str, title: str, summary: str, messages: dict[str, Message]) -> Json:
    return {
        "action": action,
        "title": title,
        "summary": summary,
        "channel": {"$ref": "#/channels/socket"},
        "messages": [{"$ref": f"#/channels/socket/messages/{name}"} for name in messages],
    }


def build() -> Json:
    every = {**CLIENT, **SERVER}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "chat-gateway WebSocket protocol",
            "version": str(PROTOCOL_VERSION),
            "description": DESCRIPTION,
            "license": {"name": "MIT"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "gateway": {
                "host": "localhost:8000",
                "protocol": "ws",
                "description": "A gateway instance; `wss` behind TLS. Any instance serves any "
                "generation.",
            }
        },
        "channels": {
            "socket": {
                "address": "/ws",
                "title": "The gateway socket",
                "description": "One authenticated, multiplexed socket per client.",
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in every},
                "bindings": BINDINGS,
            }
        },
        "operations": {
            "receiveClientFrame": operation(
                "receive",
                "Client frames",
                "What a client sends; frames are handled one at a time in arrival order.",
                CLIENT,
            ),
            "sendServerFrame": operation("send", "Server frames", "What the server sends.", SERVER),
        },
        "components": {
            "messages": {name: message_object(name, message) for name, message in every.items()},
            "schemas": {
                "ErrorCode": {"enum": list(ERROR_CODES)},
                **SOCKET,
                **EVENTS,
                "Notice": NATIVE["Notice"],
                "Usage": NATIVE["Usage"],
            },
        },
        "x-close-codes": CLOSE_CODES,
        "x-error-codes": ERROR_CODE_WORDS,
    }


HEADER = "# Written by `python -m gateway.apidocs.asyncapi > docs/asyncapi.yaml`; do not edit.\n"


def main() -> None:
    import yaml  # a development tool's dependency, needed only to write the file

    class Dumper(yaml.SafeDumper):
        """Text of several lines as a block, as a person would write it."""

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    doc = json.loads(json.dumps(build()))  # as JSON sees it: the close codes' keys as text
    sys.stdout.write(HEADER + yaml.dump(doc, Dumper=Dumper, sort_keys=False, width=100))


if __name__ == "__main__":
    main()
