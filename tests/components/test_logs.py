"""Tokens never reach a log line; JSON lines carry the context ids."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from gateway.auth.tokens import mint_token
from gateway.config import Secret, Settings
from gateway.obs.logs import (
    MAX_LOGGED_CHARS,
    JsonFormatter,
    RedactTokens,
    bind,
    body_for_log,
    current_context,
    install_logging,
    install_redaction,
    log_context,
    loggable,
    redact,
    set_log_bodies,
    unbind,
    uvicorn_log_options,
)
from tests.support.processes import GatewayProcess, config_file, spawn
from tests.support.redis import RedisServer
from tests.support.serving import free_port
from tests.support.tokens import TEST_SECRET
from tests.support.upstream import FakeUpstream
from tests.support.ws import connected, send, until_done

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"GET /ws?token={JWT} HTTP/1.1", "GET /ws?token=[redacted] HTTP/1.1"),
        (f"/ws?a=1&token={JWT}&b=2", "/ws?a=1&token=[redacted]&b=2"),
        (f"/x?access_token={JWT}", "/x?access_token=[redacted]"),
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer [redacted]"),
        (f"subprotocol bearer.{JWT}", "subprotocol bearer.[redacted]"),
        ("/ws?tokens_used=3", "/ws?tokens_used=3"),
        ("nothing here", "nothing here"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_filter_rewrites_formatted_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s"',
        ("127.0.0.1", "GET", f"/ws?token={JWT}"),
        None,
    )
    assert RedactTokens().filter(record)
    assert JWT not in record.getMessage()
    assert "token=[redacted]" in record.getMessage()


# --- More secrets, JSON lines, context ids, bodies -------------------------------------------

API_KEY = "sk-proj-abcdefghijklmnop0123"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer opaque-metrics-token-123", "Authorization: Bearer [redacted]"),
        (f"upstream refused key {API_KEY}!", "upstream refused key [redacted]!"),
        (f"invalid token '{JWT}'", "invalid token '[redacted]'"),
        ("Bearer short", "Bearer short"),
    ],
)
def test_redact_more_secrets(text: str, expected: str) -> None:
    assert redact(text) == expected


def record(
    message: str,
    *args: object,
    name: str = "gateway.ws",
    level: int = logging.INFO,
    exc_info: Any = None,
    **extra: Any,
) -> logging.LogRecord:
    made = logging.LogRecord(name, level, __file__, 7, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def as_json(made: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(made)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_json_line_fields() -> None:
    made = record("socket %s closed with %d", "c1", 1000, level=logging.WARNING)
    made.created = 1767225600.123456  # 2026-01-01T00:00:00.123456Z
    line = as_json(made)
    assert line == {
        "ts": "2026-01-01T00:00:00.123Z",
        "level": "warning",
        "logger": "gateway.ws",
        "message": "socket c1 closed with 1000",
    }


def test_json_redacts_messages_and_extras() -> None:
    line = as_json(record("auth failed for %s", f"Bearer {JWT}", detail=f"key {API_KEY}"))
    assert JWT not in json.dumps(line) and API_KEY not in json.dumps(line)
    assert line["message"] == "auth failed for Bearer [redacted]"
    assert line["detail"] == "key [redacted]"


def test_json_keeps_scalar_extras_only() -> None:
    line = as_json(record("done", code="rate_limited", seq=4, ok=True, obj=object(), ts="x"))
    assert line["code"] == "rate_limited" and line["seq"] == 4 and line["ok"] is True
    assert "obj" not in line
    assert line["ts"] != "x"  # the line's own fields cannot be overwritten


def test_json_exception_is_one_redacted_field() -> None:
    try:
        raise ValueError(f"rejected {JWT} with key {API_KEY}")
    except ValueError:
        made = record("unhandled error", exc_info=sys.exc_info())
    line = as_json(made)
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: rejected [redacted] with key [redacted]" in line["exc"]
    assert JWT not in line["exc"] and API_KEY not in line["exc"]


def test_json_access_line_has_fields_and_no_token() -> None:
    made = record(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "GET",
        f"/generations/g1/events?token={JWT}",
        "1.1",
        200,
        name="uvicorn.access",
    )
    line = as_json(made)
    assert line["method"] == "GET" and line["status"] == 200
    assert line["client"] == "127.0.0.1:5000"
    assert line["path"] == "/generations/g1/events?token=[redacted]"
    assert JWT not in line["message"]


def test_context_ids_appear_and_go() -> None:
    with log_context(connection_id="c1", user="alice"):
        with log_context(generation_id="g1", request_id=None):
            inner = as_json(record("chunk"))
        outer = as_json(record("open"))
    after = as_json(record("later"))
    assert inner["connection_id"] == "c1" and inner["generation_id"] == "g1"
    assert inner["user"] == "alice" and "request_id" not in inner
    assert outer["connection_id"] == "c1" and "generation_id" not in outer
    assert "connection_id" not in after and current_context() == {}


def test_extra_wins_over_context() -> None:
    with log_context(request_id="from-context"):
        line = as_json(record("x", request_id="from-extra"))
    assert line["request_id"] == "from-extra"


async def test_bound_ids_follow_into_tasks_started_later_only() -> None:
    async def handler(connection_id: str) -> tuple[dict[str, str], dict[str, str]]:
        bind(connection_id=connection_id)  # a handler's task: no need to undo
        child = await asyncio.create_task(owned())
        return dict(current_context()), child

    async def owned() -> dict[str, str]:
        return dict(current_context())

    first, second = await asyncio.gather(handler("c1"), handler("c2"))
    assert first == ({"connection_id": "c1"}, {"connection_id": "c1"})
    assert second == ({"connection_id": "c2"}, {"connection_id": "c2"})
    assert current_context() == {}


def test_unbind_restores() -> None:
    token = bind(user="bob")
    assert current_context() == {"user": "bob"}
    unbind(token)
    assert current_context() == {}


def test_body_for_log_follows_log_bodies() -> None:
    assert body_for_log("hello world") == "<11 chars>"
    set_log_bodies(True)
    try:
        assert body_for_log("hello world") == "hello world"
    finally:
        set_log_bodies(False)
    assert body_for_log("") == "<0 chars>"


def test_install_logging_applies_log_bodies() -> None:
    try:
        install_logging(Settings(log_bodies=True))
        assert body_for_log("abc") == "abc"
    finally:
        install_logging(Settings())
    assert body_for_log("abc") == "<3 chars>"


def test_text_format_leaves_uvicorn_logging_alone() -> None:
    assert uvicorn_log_options(Settings()) == {}
    config = uvicorn_log_options(Settings(log_format="json", log_level="debug"))["log_config"]
    assert config["loggers"]["gateway"]["level"] == "DEBUG"
    assert config["formatters"]["json"]["()"] == "gateway.obs.logs.JsonFormatter"


# --- A real gateway process with LOG_FORMAT=json --------------------------------------------


def test_json_logs_from_a_gateway_process(
    tmp_path: Path, redis_server: RedisServer, upstream: tuple[FakeUpstream, str]
) -> None:
    env = {
        "GATEWAY_CONFIG": str(config_file(tmp_path, upstream[1])),
        "REDIS_URL": redis_server.url,
        "REDIS_PREFIX": f"t{uuid.uuid4().hex[:12]}:",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
    }
    gateway = spawn(tmp_path, env, free_port())
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(gateway, lines), daemon=True)
    reader.start()
    try:
        seen = _until(lines, lambda entry: "Application startup complete" in entry["message"])
        assert seen[-1]["logger"] == "uvicorn.error" and seen[-1]["level"] == "info"
        response = httpx2.get(f"{gateway.url}/healthz?token={JWT}", timeout=10)
        assert response.status_code == 200
        seen += _until(lines, lambda entry: entry.get("path", "").startswith("/healthz"))
        asyncio.run(_failing_completion(gateway.url))
        seen += _until(lines, lambda entry: entry["logger"] == "gateway.upstream")
    finally:
        gateway.stop()
        reader.join(timeout=10)
    # A line logged inside a generation carries its ids and its socket's.
    failure = seen[-1]
    assert failure["level"] == "warning" and "401" in failure["message"]
    assert failure["generation_id"].startswith("gen_")
    assert failure["conversation_id"].startswith("conv_")
    assert failure["connection_id"].startswith("conn_") and failure["user"] == "alice"
    assert failure["request_id"] == "r"  # the completion frame's id
    access = next(entry for entry in seen if entry.get("path", "").startswith("/healthz"))
    assert access["logger"] == "uvicorn.access" and access["status"] == 200
    assert access["path"] == "/healthz?token=[redacted]"
    assert all(JWT not in json.dumps(entry) for entry in seen)


async def _failing_completion(url: str) -> None:
    ws = await connected(url, mint_token(Settings(jwt_secret=Secret(TEST_SECRET)), "alice", 60))
    await send(ws, type="completion", id="r", message="hi", model="fake-err401")
    assert (await until_done(ws, "r"))[-1]["code"] == "upstream_credentials"
    await ws.close()


def _read_lines(gateway: GatewayProcess, lines: queue.Queue[str]) -> None:
    assert gateway.process.stdout is not None
    for line in gateway.process.stdout:
        lines.put(line)


def _until(lines: queue.Queue[str], wanted: Callable[[dict[str, Any]], bool]) -> list[Any]:
    """Every line up to the wanted one, each parsed as JSON: a line that is not fails."""
    seen = []
    while True:
        line = lines.get(timeout=20)
        entry = json.loads(line)
        seen.append(entry)
        if wanted(entry):
            return seen


def test_filter_keeps_the_arguments_of_access_lines() -> None:
    made = record(
        '%s - "%s %s HTTP/%s" %d', "c", "GET", f"/x?token={JWT}", "1.1", 200, name="uvicorn.access"
    )
    assert RedactTokens().filter(made)
    assert made.args == ("c", "GET", "/x?token=[redacted]", "1.1", 200)
    assert as_json(made)["path"] == "/x?token=[redacted]"


# --- Foreign text: short, on one line, no secrets ---------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain words", "plain words"),
        ("two\nlines\r\tand\x00nul\u2028sep", "two\\nlines\\r\\tand\\x00nul\\u2028sep"),
        ('{"api_key": "abc123", "x": 1}', '{"api_key": "[redacted]", "x": 1}'),
        ("password=hunter2&user=a", "password=[redacted]&user=a"),
        ("x-api-key: AbC", "x-api-key: [redacted]"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[redacted]"),
        ("gen_AbCdEfGh12345678 conv_x1 msg_abc", "gen_AbCdEfGh12345678 conv_x1 msg_abc"),
        ("a" * 40, "a" * 40),  # one letter repeated is not a key
        (ValueError("as str()"), "as str()"),
    ],
)
def test_loggable(value: object, expected: str) -> None:
    assert loggable(value) == expected


def test_loggable_cuts_long_text_and_says_how_long() -> None:
    text = loggable("x " * 600_000)
    assert text.startswith("x x") and text.endswith("… <1200000 chars>")
    assert len(text) < MAX_LOGGED_CHARS + 30


def test_a_token_cut_by_the_excerpt_is_still_redacted() -> None:
    text = loggable(" " * (MAX_LOGGED_CHARS - 20) + JWT)
    assert "eyJ" not in text and "[redacted]" in text


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_every_record_is_made_safe_as_it_is_created() -> None:
    """Whichever logger (a library's too) and whichever handler writes it."""
    install_redaction()
    kept = Kept()
    logger = logging.getLogger(f"somelibrary.{uuid.uuid4().hex}")
    logger.addHandler(kept)
    try:
        logger.warning("said %s, %d times", "no\nERROR forged " + "y" * 5000, 3)
        try:
            raise ValueError(f"bad\nline with {API_KEY}")
        except ValueError:
            logger.exception("failed on %r", {"token": JWT})
    finally:
        logger.removeHandler(kept)
    said, failed = (record.getMessage() for record in kept.records)
    assert "\n" not in said and said.startswith("said no\\nERROR forged yyy")
    assert said.endswith("… <5016 chars>, 3 times")
    assert JWT not in failed and API_KEY not in (kept.records[1].exc_text or "")
    traceback_text = kept.records[1].exc_text or ""
    assert "in test_every_record_is_made_safe_as_it_is_created" in traceback_text
    assert traceback_text.endswith("ValueError: bad\\nline with [redacted]")
