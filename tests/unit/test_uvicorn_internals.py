"""What gateway/server/transport.py relies on in uvicorn beyond its public API. pyproject bounds
uvicorn below its next minor release; before raising the bound, these must still pass."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

CONSTRUCTOR = ["self", "config", "server_state", "app_state", "_loop"]


async def app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError


@pytest.mark.parametrize("protocol", [HttpToolsProtocol, WebSocketsSansIOProtocol])
def test_the_protocols_are_made_as_we_make_them(protocol: Any) -> None:
    assert list(inspect.signature(protocol.__init__).parameters) == CONSTRUCTOR


@pytest.mark.parametrize(
    ("protocol", "methods"),
    [
        (
            HttpToolsProtocol,
            [
                "connection_made",
                "connection_lost",
                "data_received",
                "on_message_begin",
                "on_headers_complete",
                "on_message_complete",
                "handle_websocket_upgrade",
                "on_response_complete",
            ],
        ),
        (
            WebSocketsSansIOProtocol,
            ["connection_made", "connection_lost", "pause_writing", "resume_writing"],
        ),
    ],
)
def test_the_hooks_we_override_exist(protocol: type, methods: list[str]) -> None:
    assert [name for name in methods if not callable(getattr(protocol, name, None))] == []


async def test_the_attributes_we_read_are_set() -> None:
    config = Config(app=app)
    config.load()
    state = ServerState()
    http = HttpToolsProtocol(config, state, {}, asyncio.get_running_loop())
    assert {"pipeline", "cycle", "loop", "server_state", "transport"} <= set(vars(http))
    ws = WebSocketsSansIOProtocol(config, state, {}, asyncio.get_running_loop())
    assert {"loop", "transport"} <= set(vars(ws)) | set(dir(ws))
    assert hasattr(ws, "client") or "client" in dir(WebSocketsSansIOProtocol)


def test_status_lines_are_bytes_by_status() -> None:
    assert STATUS_LINE[408].startswith(b"HTTP/1.1 408") and STATUS_LINE[431].startswith(
        b"HTTP/1.1 431"
    )
