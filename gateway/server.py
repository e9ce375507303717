"""uvicorn options derived from Settings, shared by the CLI and the test servers."""

from __future__ import annotations

from typing import Any

from gateway.config import Settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    # websockets-sansio is the fastest implementation here and the lightest per socket;
    # permessage-deflate more than doubles memory per socket, so it is off unless asked for.
    return {
        "ws": "websockets-sansio",
        "ws_max_size": settings.max_frame_bytes,
        "ws_ping_interval": settings.ws_ping_interval or None,
        "ws_ping_timeout": settings.ws_ping_timeout or None,
        "ws_per_message_deflate": settings.ws_per_message_deflate,
        "log_level": settings.log_level,
        # Sockets close with 1012 at once and SSE streams end when draining begins, so this
        # only bounds stragglers; generations themselves drain in the app's shutdown.
        "timeout_graceful_shutdown": max(1, int(settings.shutdown_drain_seconds)),
    }
