"""Logging that never shows a token: redaction, JSON lines (LOG_FORMAT=json), the ids of the
connection, request and generation on every line, and message bodies only when asked for.

    with log_context(connection_id=cid, user=principal.sub):
        log.info("socket open")      # {"ts": ..., "connection_id": "...", "user": "...", ...}

    log.debug("prompt %s", body_for_log(text))   # "<312 chars>" unless LOG_BODIES is on
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from gateway.config import Settings

_TOKEN_IN_QUERY = re.compile(r"((?:^|[?&])(?:token|access_token)=)[^&\s\"']+", re.IGNORECASE)
_BEARER = re.compile(
    r"(bearer[ .])[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*", re.IGNORECASE
)
# An opaque bearer credential (an API key, METRICS_TOKEN): long enough not to be prose.
_BEARER_OPAQUE = re.compile(r"(bearer\s+)[A-Za-z0-9\-._~+/]{16,}=*", re.IGNORECASE)
# A JWT anywhere, e.g. quoted in an exception's message.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")
# OpenAI-style API keys.
_API_KEY = re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}")


def redact(text: str) -> str:
    """`text` with tokens and API keys replaced by `[redacted]`."""
    text = _TOKEN_IN_QUERY.sub(r"\1[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _BEARER_OPAQUE.sub(r"\1[redacted]", text)
    text = _JWT.sub("[redacted]", text)
    return _API_KEY.sub("[redacted]", text)


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Arguments one by one first, so the record keeps its shape (the JSON format reads
        # uvicorn's access arguments as fields); then the whole line, for what spans them.
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class QuietClientFaults(logging.Filter):
    """uvicorn logs a client's invalid UTF-8 frame as an error with a traceback: a client
    could fill the logs with them. They become one info line; the socket closes 1007."""

    MESSAGE = "Invalid UTF-8 sequence received from client."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self.MESSAGE:
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install_redaction() -> None:
    """Attach the filters to the loggers that print request lines; safe to call twice."""
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn", "gateway"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
    uvicorn_errors = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietClientFaults) for f in uvicorn_errors.filters):
        uvicorn_errors.addFilter(QuietClientFaults())


# --- Context: ids every line of a task carries ---------------------------------------------

_context: ContextVar[Mapping[str, str]] = ContextVar(
    "gateway_log_context", default=MappingProxyType({})
)


def bind(**fields: str | None) -> Token[Mapping[str, str]]:
    """Add ids (connection_id, request_id, generation_id, conversation_id, user, ...) to every
    line logged from now on by this task and the tasks it starts; None removes one.

    An ASGI request runs in a task of its own, so a handler may bind at its start and forget
    it. Elsewhere, undo with `unbind(token)` or use `log_context`."""
    merged = {**_context.get(), **fields}
    return _context.set({k: v for k, v in merged.items() if v is not None})


def unbind(token: Token[Mapping[str, str]]) -> None:
    _context.reset(token)


@contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """`bind` for the duration of a block."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def current_context() -> Mapping[str, str]:
    return _context.get()


# --- Bodies ----------------------------------------------------------------------------------

_log_bodies = False


def set_log_bodies(enabled: bool) -> None:
    global _log_bodies
    _log_bodies = enabled


def body_for_log(text: str) -> str:
    """A message body for a log line: the text itself only with LOG_BODIES on, else its
    length (`<312 chars>`), so logs show the shape of traffic without its content."""
    return text if _log_bodies else f"<{len(text)} chars>"


# --- JSON lines ------------------------------------------------------------------------------

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}
_OWN_KEYS = frozenset({"ts", "level", "logger", "message", "exc", "stack"})
_SCALARS = (str, int, float, bool)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC, ms), level, logger, message, the bound
    context ids, scalar `extra=` fields, and `exc` (the traceback as one string). Every
    string is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry.update(_context.get())
        entry.update(_extra_fields(record))
        if record.name == "uvicorn.access":
            entry.update(_access_fields(record))
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _RECORD_FIELDS or key in _OWN_KEYS or key.startswith("_"):
            continue
        if isinstance(value, str):
            fields[key] = redact(value)
        elif isinstance(value, _SCALARS) or value is None:
            fields[key] = value
    return fields


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """uvicorn's access line as fields: (client, method, path, http version, status)."""
    args = record.args
    if not isinstance(args, tuple) or len(args) != 5:
        return {}
    client, method, path, _, status = args
    return {"client": str(client), "method": method, "path": redact(str(path)), "status": status}


def uvicorn_log_options(settings: Settings) -> dict[str, Any]:
    """Options for uvicorn: none for LOG_FORMAT=text (uvicorn's own format, as always), and
    for json a `log_config`, which uvicorn applies in every worker process."""
    if settings.log_format != "json":
        return {}
    return {"log_config": json_logging_config(settings.log_level)}


def json_logging_config(log_level: str) -> dict[str, Any]:
    """Every line to stdout as JSON: uvicorn's, the gateway's (at `log_level`) and other
    libraries' warnings."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    quiet = {"handlers": ["json"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "gateway.logs.JsonFormatter"}},
        "handlers": {"json": handler},
        "loggers": {
            "uvicorn": {**quiet, "level": "INFO"},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {**quiet, "level": "INFO"},
            "gateway": {**quiet, "level": log_level.upper()},
        },
        "root": {"handlers": ["json"], "level": "WARNING"},
    }


def install_logging(settings: Settings) -> None:
    """What the app applies at start-up: redaction filters and LOG_BODIES."""
    install_redaction()
    set_log_bodies(settings.log_bodies)
