"""A Python client for the gateway's wire protocol (docs/protocol.md), on asyncio and the
`websockets` library. Guide: docs/client-python.md.

    async with GatewayClient("http://127.0.0.1:8000", token=token) as client:
        async for event in client.complete("Hello", model="echo"):
            if isinstance(event, Chunk):
                print(event.content, end="", flush=True)
"""

from gateway_client.client import GatewayClient
from gateway_client.connection import ConnectionState
from gateway_client.errors import GatewayError
from gateway_client.events import (
    Chunk,
    Done,
    ErrorEvent,
    Event,
    Item,
    Notice,
    Start,
    ToolCall,
    ToolResult,
    Usage,
    parse_frame,
)
from gateway_client.run import Run
from gateway_client.tokens import TokenRefresh

__all__ = [
    "Chunk",
    "ConnectionState",
    "Done",
    "ErrorEvent",
    "Event",
    "GatewayClient",
    "GatewayError",
    "Item",
    "Notice",
    "Run",
    "Start",
    "TokenRefresh",
    "ToolCall",
    "ToolResult",
    "Usage",
    "parse_frame",
]
