"""create_app(settings): routes and lifespan. The one place that names implementations."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import FileResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from gateway.config import Settings
from gateway.errors import RequestError
from gateway.handlers import ai_sdk, openai_compat, responses
from gateway.handlers.activity import activity_events, running_generations
from gateway.handlers.common import on_http_exception, on_request_error, on_unexpected
from gateway.handlers.health import healthz, readyz
from gateway.handlers.metrics import metrics
from gateway.handlers.openapi import docs_page, openapi_json
from gateway.handlers.rest import (
    agents,
    conversation_resource,
    conversations,
    delete_message,
    fork_conversation,
    models,
)
from gateway.handlers.runtime import Runtime
from gateway.handlers.sse import cancel_generation, completion, generation_events
from gateway.handlers.websocket import websocket_endpoint
from gateway.obs.logs import install_logging
from gateway.obs.metrics import GatewayMetrics
from gateway.obs.tracing import install as install_tracing
from gateway.server.devmode import dev_secret
from gateway.server.timing import OverheadHeader
from gateway.server.traffic import TrafficCounter
from gateway.services import open_services

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


def create_app(settings: Settings, *, upstream_retries: int | None = None) -> Starlette:
    if settings.dev_mode:
        settings = settings.with_secret(dev_secret(settings.data_dir))

    counters = GatewayMetrics()  # shared by the services and the connection counter
    # Chosen once, before the models are made: off, nothing traces (see gateway.obs.tracing).
    tracing = install_tracing(os.environ)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        install_logging(settings)
        async with open_services(settings, upstream_retries, counters) as services:
            runtime: Runtime = services  # what the handlers see of it (checked here by mypy)
            app.state.services = runtime
            # Start-up objects live as long as the process: keep them out of every later full
            # collection, whose pauses show up as chunk-lag outliers under load.
            gc.collect()
            gc.freeze()
            yield
        tracing.shutdown()  # exports the spans still buffered

    async def index(_: object) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/completion", completion, methods=["POST"]),
        Route("/generations", running_generations),
        Route("/activity", activity_events),
        Route("/generations/{generation_id}/events", generation_events),
        Route("/generations/{generation_id}/cancel", cancel_generation, methods=["POST"]),
        Route(
            "/conversations/{conversation_id}",
            conversation_resource,
            methods=["GET", "PATCH", "DELETE"],
        ),
        Route("/conversations/{conversation_id}/fork", fork_conversation, methods=["POST"]),
        Route(
            "/conversations/{conversation_id}/messages/{message_id}",
            delete_message,
            methods=["DELETE"],
        ),
        Route("/conversations", conversations),
        Route("/models", models),
        Route("/agents", agents),
        Route("/openapi.json", openapi_json),
        Route("/docs", docs_page),
        Route("/api/chat", ai_sdk.chat, methods=["POST"]),
        Route("/api/chat/{chat_id}/stream", ai_sdk.resume),
        Route("/v1/chat/completions", openai_compat.chat_completions, methods=["POST"]),
        Route("/v1/models", openai_compat.list_models, methods=["GET"]),
        Route("/v1/responses", responses.create, methods=["POST"]),
        Route("/v1/responses/{response_id}", responses.retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", responses.delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/cancel", responses.cancel, methods=["POST"]),
        Route("/v1/responses/{response_id}/input_items", responses.input_items, methods=["GET"]),
        Route("/v1/models/{model:path}", openai_compat.retrieve_model, methods=["GET"]),
        WebSocketRoute("/ws", websocket_endpoint),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        # After every /v1 route: other /v1 paths get OpenAI's 404.
        Route("/v1/{path:path}", openai_compat.unknown_path, methods=openai_compat.ALL_METHODS),
    ]
    middleware = [Middleware(OverheadHeader), Middleware(TrafficCounter, metrics=counters)]
    if tracing.enabled:
        middleware.insert(0, Middleware(tracing.asgi, routes=routes))
    if settings.allowed_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.allowed_origins),
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                # Reflect whatever an allowed origin's preflight asks for: the official SDKs
                # send headers of their own (the OpenAI SDK's x-stainless-* family grows with
                # its versions), and a list of ours would refuse the next one.
                allow_headers=["*"],
                # What the SDKs and our clients read from a response; browsers hide the rest.
                expose_headers=[
                    "X-Conversation-Id",
                    "X-Generation-Id",
                    "X-Gateway-Overhead-Ms",
                    "Retry-After",
                    "X-Should-Retry",
                ],
                max_age=600,
            )
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            RequestError: on_request_error,
            HTTPException: on_http_exception,
            Exception: on_unexpected,
        },
    )


def app_from_env() -> Starlette:
    """uvicorn factory: `uvicorn --factory gateway.app:app_from_env`."""
    return create_app(Settings.from_env(os.environ))
