"""A fake OpenAI-compatible upstream that speaks the exact wire format, for tests and bench.

Behaviour is chosen by the requested model name, dash-separated options after `fake`:
  n<count>   reply with <count> tokens (default: the words "You said: <last user message>")
  i<ms>      wait <ms> between tokens (default 0)
  drop<k>    cut the connection after <k> content chunks (a mid-stream failure)
  err<code>  answer HTTP <code> with an OpenAI error body
  ctx        answer HTTP 400 context_length_exceeded, as OpenAI does for a too-long prompt
  stamp      each token's content is the send time in ns (for latency measurements)
  verbatim   reply with the last user message itself, in words (a test's own JSON answer)
  hang       send the headers, then nothing until the client goes away
  silent     send nothing at all (not even headers) until the client goes away
  stall<k>   send <k> content chunks, then nothing until the client goes away
  hold<k>    send <k> content chunks, then wait for `release(model)`, then finish
  fail<k>    apply err<code> to only the first <k> requests for this exact model name
  ra<s>      with err<code>: a `Retry-After: <s>` header (seconds)
  radate<s>  with err<code>: a `Retry-After` HTTP date <s> seconds from now
  rams<ms>   with err<code>: a `retry-after-ms: <ms>` header (OpenAI's)
Unknown options are ignored, so a test may add a unique tag (`fake-err503-fail1-k3f9a`) to get
a model name, and so request counts, of its own.
When the request offers `tools` and its last message is not a tool's answer, the reply is a
call of the first tool, with the last user message as its arguments if that is a JSON object
(streamed in fragments, as OpenAI does); after a tool's answer it replies "Result: <answer>".
Every request is recorded with its body, how many requests for the same model were open when
it arrived, and whether the client left before the end; `arrived` waits for requests by model.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_COUNTED = re.compile(r"(stall|hold|fail)(\d+)")
_COUNTED_FIELDS = {"stall": "stall_after", "hold": "hold_after", "fail": "fail_first"}
_RETRY_AFTER = re.compile(r"(radate|rams|ra)(\d+)")


def _retry_header(kind: str, value: int) -> dict[str, str]:
    if kind == "rams":
        return {"retry-after-ms": str(value)}
    if kind == "radate":
        return {"Retry-After": formatdate(time.time() + value, usegmt=True)}
    return {"Retry-After": str(value)}


@dataclass
class Recorded:
    body: dict[str, Any]
    authorization: str | None
    in_flight: int = 0  # this model's other requests still open when this one arrived
    traceparent: str | None = None  # the trace context the gateway sent, if any
    finished: threading.Event = field(default_factory=threading.Event)
    client_left: threading.Event = field(default_factory=threading.Event)

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))


@dataclass(frozen=True)
class Behaviour:
    tokens: list[str]
    interval: float = 0.0
    drop_after: int | None = None
    error_status: int | None = None
    stamp: bool = False
    hang: bool = False
    silent: bool = False
    stall_after: int | None = None
    hold_after: int | None = None
    fail_first: int | None = None
    headers: dict[str, str] = field(default_factory=dict)  # on an error answer
    tool_call: dict[str, str] | None = None

    @staticmethod
    def parse(
        model: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> Behaviour:
        options = model.split("-")[1:]
        count: int | None = None
        verbatim = False
        values: dict[str, Any] = {}
        for option in options:
            if option.startswith("n") and option[1:].isdigit():
                count = int(option[1:])
            elif option.startswith("i") and option[1:].isdigit():
                values["interval"] = int(option[1:]) / 1000
            elif option.startswith("drop") and option[4:].isdigit():
                values["drop_after"] = int(option[4:])
            elif option.startswith("err") and option[3:].isdigit():
                values["error_status"] = int(option[3:])
            elif option == "verbatim":
                verbatim = True
            elif option in ("stamp", "hang", "silent"):
                values[option] = True
            elif counted := _COUNTED.fullmatch(option):
                values[_COUNTED_FIELDS[counted[1]]] = int(counted[2])
            elif waited := _RETRY_AFTER.fullmatch(option):
                values["headers"] = _retry_header(waited[1], int(waited[2]))
            elif option == "ctx":
                values["error_status"] = CONTEXT_ERROR
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        if tools and messages[-1]["role"] != "tool":
            values["tool_call"] = {
                "id": f"call_{uuid.uuid4().hex[:12]}",
                "name": tools[0]["function"]["name"],
                "arguments": _json_object_or_empty(last_user),
            }
        reply = last_user if verbatim else f"You said: {last_user}"
        if messages[-1]["role"] == "tool":
            reply = f"Result: {messages[-1]['content']}"
        words = reply.split(" ")
        tokens = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        if count is not None:
            tokens = [f" t{i}" for i in range(count)]
        return Behaviour(tokens=tokens, **values)


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        self._arrivals = threading.Condition()  # guards the counters; notified per request
        self._seen: Counter[str] = Counter()  # requests per model name
        self._open: Counter[str] = Counter()  # requests per model name not yet answered
        self._holds: dict[str, asyncio.Event] = {}  # only touched on the server's loop
        self._loop: asyncio.AbstractEventLoop | None = None

    def count(self, model: str) -> int:
        """Requests received so far for this model name."""
        with self._arrivals:
            return self._seen[model]

    def arrived(self, model: str, count: int = 1, timeout: float = 10.0) -> bool:
        """Block until `count` requests for `model` were received; False on timeout.
        From async code: `await asyncio.to_thread(fake.arrived, model)`."""
        with self._arrivals:
            return self._arrivals.wait_for(lambda: self._seen[model] >= count, timeout)

    def release(self, model: str) -> None:
        """Let this model's requests held by `hold<k>` finish (once; a later one holds again)."""
        assert self._loop is not None, "no request has arrived yet"
        self._loop.call_soon_threadsafe(self._release, model)

    def _release(self, model: str) -> None:
        self._holds.setdefault(model, asyncio.Event()).set()

    async def _hold(self, model: str) -> None:
        event = self._holds.setdefault(model, asyncio.Event())
        await event.wait()
        if self._holds.get(model) is event:
            del self._holds[model]

    def _arrive(self, body: dict[str, Any], authorization: str | None) -> tuple[Recorded, int]:
        model = str(body["model"])
        with self._arrivals:
            record = Recorded(body, authorization, in_flight=self._open[model])
            self.requests.append(record)
            self._seen[model] += 1
            self._open[model] += 1
            self._arrivals.notify_all()
            return record, self._seen[model]

    def _close(self, record: Recorded) -> None:
        with self._arrivals:
            self._open[record.model] -= 1

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self._loop = asyncio.get_running_loop()
        record, nth = self._arrive(body, request.headers.get("authorization"))
        record.traceparent = request.headers.get("traceparent")
        behaviour = Behaviour.parse(body["model"], body["messages"], body.get("tools"))
        if behaviour.silent:
            return await self._silence(request, record)
        failing = behaviour.fail_first is None or nth <= behaviour.fail_first
        if behaviour.error_status is not None and failing:
            record.finished.set()
            self._close(record)
            return _error(behaviour.error_status, behaviour.headers)
        if not body.get("stream"):
            record.finished.set()
            self._close(record)
            return JSONResponse(_completion(body, behaviour))
        return StreamingResponse(
            self._stream(body, behaviour, record), media_type="text/event-stream"
        )

    async def _silence(self, request: Request, record: Recorded) -> Response:
        """Answer nothing until the client hangs up (uvicorn then reports a disconnect)."""
        while (await request.receive())["type"] != "http.disconnect":
            pass
        record.client_left.set()
        self._close(record)
        return Response(status_code=499)

    async def _stream(
        self, body: dict[str, Any], behaviour: Behaviour, record: Recorded
    ) -> AsyncIterator[str]:
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        try:
            yield _sse(_chunk(cid, created, body["model"], {"role": "assistant", "content": ""}))
            if behaviour.hang:
                await asyncio.Event().wait()
            if behaviour.tool_call is not None:
                for part in _tool_call_fragments(behaviour.tool_call):
                    yield _sse(_chunk(cid, created, body["model"], {"tool_calls": [part]}))
                yield _sse(_chunk(cid, created, body["model"], {}, "tool_calls"))
                if (body.get("stream_options") or {}).get("include_usage"):
                    usage = _usage(body["messages"], 1)
                    yield _sse(
                        {**_chunk(cid, created, body["model"], {}), "choices": [], "usage": usage}
                    )
                yield "data: [DONE]\n\n"
                record.finished.set()
                return
            limit = body.get("max_tokens") or len(behaviour.tokens)
            sent = 0
            for token in behaviour.tokens[:limit]:
                if behaviour.drop_after is not None and sent >= behaviour.drop_after:
                    raise _Drop
                if behaviour.stall_after is not None and sent >= behaviour.stall_after:
                    await asyncio.Event().wait()
                if sent == behaviour.hold_after:
                    await self._hold(body["model"])
                if behaviour.interval:
                    await asyncio.sleep(behaviour.interval)
                content = f" {time.time_ns()}" if behaviour.stamp else token
                yield _sse(_chunk(cid, created, body["model"], {"content": content}))
                sent += 1
            reason = "length" if limit < len(behaviour.tokens) else "stop"
            yield _sse(_chunk(cid, created, body["model"], {}, reason))
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = _usage(body["messages"], sent)
                yield _sse(
                    {**_chunk(cid, created, body["model"], {}), "choices": [], "usage": usage}
                )
            yield "data: [DONE]\n\n"
            record.finished.set()
        except (asyncio.CancelledError, GeneratorExit):
            record.client_left.set()
            raise
        finally:
            self._close(record)


class _Drop(Exception):
    """Raised inside the stream: uvicorn then aborts the connection mid-body."""


def _json_object_or_empty(text: str) -> str:
    try:
        return text if isinstance(json.loads(text), dict) else "{}"
    except ValueError:
        return "{}"


def _tool_call_fragments(call: dict[str, str]) -> list[dict[str, Any]]:
    """The call as OpenAI streams it: id and name first, then the arguments in pieces."""
    arguments = call["arguments"]
    middle = len(arguments) // 2
    first = {
        "index": 0,
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": ""},
    }
    pieces = [arguments[:middle], arguments[middle:]]
    return [first, *({"index": 0, "function": {"arguments": p}} for p in pieces if p)]


def _sse(obj: dict[str, Any]) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


def _chunk(
    cid: str, created: int, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def _usage(messages: list[dict[str, Any]], completion: int) -> dict[str, int]:
    prompt = sum(len(str(m["content"]).split()) for m in messages)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(body: dict[str, Any], behaviour: Behaviour) -> dict[str, Any]:
    limit = body.get("max_tokens") or len(behaviour.tokens)
    tokens = behaviour.tokens[:limit]
    if behaviour.tool_call is not None:
        call = behaviour.tool_call
        message = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
            ],
        }
        return {
            **_completion_head(body),
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
            ],
            "usage": _usage(body["messages"], 1),
        }
    return {
        **_completion_head(body),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(tokens), "refusal": None},
                "logprobs": None,
                "finish_reason": "length" if limit < len(behaviour.tokens) else "stop",
            }
        ],
        "usage": _usage(body["messages"], len(tokens)),
    }


def _completion_head(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": None,
    }


CONTEXT_ERROR = 4000  # not an HTTP status: 400 with OpenAI's context_length_exceeded body


def _error(status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    if status == CONTEXT_ERROR:
        body = {
            "message": "This model's maximum context length is 8192 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
        return JSONResponse({"error": body}, status_code=400, headers=headers)
    kinds = {400: "invalid_request_error", 401: "invalid_request_error", 429: "rate_limit_error"}
    return JSONResponse(
        {
            "error": {
                "message": f"fake upstream error {status}",
                "type": kinds.get(status, "server_error"),
                "param": None,
                "code": None,
            }
        },
        status_code=status,
        headers=headers,
    )
