"""uvicorn options derived from Settings, shared by the CLI and the test servers."""

from __future__ import annotations

from typing import Any

from gateway.config import Settings
from gateway.obs.logs import uvicorn_log_options
from gateway.server.transport import deadline_protocol, send_deadline_protocol


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    # websockets-sansio is the fastest implementation here and the lightest per socket;
    # permessage-deflate more than doubles memory per socket, so it is off unless asked for.
    return {
        # websockets-sansio, resetting a client that reads nothing for a while: transport.py.
        "ws": send_deadline_protocol(settings.ws_send_timeout),
        "ws_max_size": settings.max_frame_bytes,
        "ws_ping_interval": settings.ws_ping_interval or None,
        "ws_ping_timeout": settings.ws_ping_timeout or None,
        "ws_per_message_deflate": settings.ws_per_message_deflate,
        # httptools with a deadline and a size cap on request heads (slowloris): transport.py.
        "http": deadline_protocol(settings.http_header_timeout),
        "timeout_keep_alive": settings.http_keepalive_timeout,
        "log_level": uvicorn_log_level(settings),
        **uvicorn_log_options(settings),  # LOG_FORMAT=json: gateway/obs/logs.py
        # Sockets close with 1012 at once and SSE streams end when draining begins, so this
        # only bounds stragglers; generations themselves drain in the app's shutdown.
        "timeout_graceful_shutdown": max(1, int(settings.shutdown_drain_seconds)),
    }


def uvicorn_log_level(settings: Settings) -> str:
    """uvicorn's own loggers log WebSocket frames, message text included, at debug level:
    they stay at info unless LOG_BODIES allows bodies in the logs."""
    if settings.log_level in ("debug", "trace") and not settings.log_bodies:
        return "info"
    return settings.log_level
