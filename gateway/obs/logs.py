"""Logging that never shows a token, and never copies foreign text whole: redaction, bounded
and escaped arguments, JSON lines (LOG_FORMAT=json), the ids of the connection, request and
generation on every line, and message bodies only when asked for.

    with log_context(connection_id=cid, user=principal.sub):
        log.info("socket open")      # {"ts": ..., "connection_id": "...", "user": "...", ...}

    log.debug("prompt %s", body_for_log(text))   # "<312 chars>" unless LOG_BODIES is on

Text from a client or an upstream (an error body, a tool's arguments, a request path) can reach
a log line as an argument or in an exception's message. Every record made in the process passes
`make_safe` as it is created (a log record factory, installed at start-up): each argument that
is not a number becomes a short excerpt (`loggable`: at most MAX_LOGGED_CHARS characters, control
characters escaped so that no newline forges a line, keys and tokens redacted), and an
exception's traceback is kept with its message treated the same way.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from gateway.config import Settings

MAX_LOGGED_CHARS = 300
# Redaction reads this much of a long text before it is cut, so a token that starts within
# the excerpt is found whole.
_REDACTION_WINDOW = 16 * MAX_LOGGED_CHARS

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
# A value named like a secret: `api_key=…`, `"password": "…"`, `x-api-key: …`.
_NAMED_SECRET = re.compile(
    r"((?:api[_-]?key|secret|password|passwd|access[_-]?token|auth[_-]?token)[\"']?\s*[:=]\s*"
    r"[\"']?)[^\s\"',;&}]+",
    re.IGNORECASE,
)
# A long run of key-like characters mixing letters and digits: the shape of most credentials
# (GitHub, Google, AWS secret keys...), and of nothing a log line needs whole.
_OPAQUE = re.compile(r"[A-Za-z0-9_\-+/]{32,}={0,2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _opaque(match: re.Match[str]) -> str:
    run = match.group(0)
    mixed = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
    return "[redacted]" if mixed else run


def redact(text: str) -> str:
    """`text` with tokens, API keys and anything shaped like a credential replaced by
    `[redacted]`."""
    text = _TOKEN_IN_QUERY.sub(r"\1[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    text = _BEARER_OPAQUE.sub(r"\1[redacted]", text)
    text = _JWT.sub("[redacted]", text)
    text = _API_KEY.sub("[redacted]", text)
    text = _NAMED_SECRET.sub(r"\1[redacted]", text)
    return _OPAQUE.sub(_opaque, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return named.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 256 else f"\\u{ord(char):04x}")


def loggable(value: object) -> str:
    """A value as a log line may show it: redacted, at most MAX_LOGGED_CHARS characters (a
    longer one says how long it was), and on one line (control characters escaped)."""
    text = value if isinstance(value, str) else str(value)
    length = len(text)
    text = redact(text[:_REDACTION_WINDOW])
    if len(text) > MAX_LOGGED_CHARS or length > _REDACTION_WINDOW:
        text = f"{text[:MAX_LOGGED_CHARS]}… <{length} chars>"
    return _CONTROL.sub(_escape, text)


_PLAIN = (int, float, bool, type(None))


def make_safe(record: logging.LogRecord) -> None:
    """Make a record safe to write: arguments and a non-string message as `loggable`
    excerpts, a token spanning the template and an argument redacted, and its exception's
    traceback kept with its message bounded and escaped."""
    if isinstance(record.args, tuple):
        record.args = tuple(a if isinstance(a, _PLAIN) else loggable(a) for a in record.args)
    elif isinstance(record.args, Mapping):
        record.args = {
            k: v if isinstance(v, _PLAIN) else loggable(v) for k, v in record.args.items()
        }
    if not isinstance(record.msg, str):
        record.msg = loggable(record.msg)
    try:
        message = record.getMessage()
    except (TypeError, ValueError):  # a template that does not fit its arguments
        record.msg, record.args = loggable(record.msg), ()
        message = record.msg
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, ()
    if record.exc_info:
        record.exc_text = exception_text(record)


def exception_text(record: logging.LogRecord) -> str | None:
    """The record's traceback: where the exception was raised, and what it said as a
    `loggable` excerpt (the frames name our code; the message may carry anyone's text)."""
    if record.exc_text:
        return record.exc_text
    exc = record.exc_info[1] if record.exc_info else None
    if exc is None:
        return None
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{type(exc).__qualname__}: {loggable(exc)}"


class RedactTokens(logging.Filter):
    """`make_safe` as a filter, for loggers whose records were made before the factory was
    installed (uvicorn's)."""

    def filter(self, record: logging.LogRecord) -> bool:
        make_safe(record)
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


class _SafeRecords:
    """A log record factory around the one before it: every record is made safe as it is
    created, whichever logger or library makes it and whichever handler writes it."""

    def __init__(self, made_by: Callable[..., logging.LogRecord]) -> None:
        self.made_by = made_by

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.made_by(*args, **kwargs)
        make_safe(record)
        return record


def install_redaction() -> None:
    """Make every log record safe as it is created, and attach the filters to uvicorn's
    loggers; safe to call twice."""
    if not isinstance(logging.getLogRecordFactory(), _SafeRecords):
        logging.setLogRecordFactory(_SafeRecords(logging.getLogRecordFactory()))
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
        if record.exc_info and (text := exception_text(record)):
            entry["exc"] = text
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
        "formatters": {"json": {"()": "gateway.obs.logs.JsonFormatter"}},
        "handlers": {"json": handler},
        "loggers": {
            "uvicorn": {**quiet, "level": "INFO"},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {**quiet, "level": "INFO"},
            "gateway": {**quiet, "level": log_level.upper()},
        },
        "root": {"handlers": ["json"], "level": "WARNING"},
    }


class TextFormatter(logging.Formatter):
    """uvicorn's text layout for the gateway's own lines: `WARNING:  gateway.core.chat: …`."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelprefix = f"{record.levelname}:".ljust(9)
        return super().format(record)


def install_text_logging(log_level: str) -> None:
    """With LOG_FORMAT=text, the gateway's lines go to stderr at LOG_LEVEL (uvicorn configures
    only its own loggers); safe to call twice."""
    logger = logging.getLogger("gateway")
    logger.setLevel(log_level.upper())
    if not any(isinstance(h.formatter, TextFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TextFormatter("%(levelprefix)s %(name)s: %(message)s"))
        logger.addHandler(handler)


def install_logging(settings: Settings) -> None:
    """What the app applies at start-up: safe records, the text handler, LOG_BODIES."""
    install_redaction()
    if settings.log_format == "text":
        install_text_logging(settings.log_level)
    set_log_bodies(settings.log_bodies)
