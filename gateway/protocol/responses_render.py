"""The OpenAI Responses API's answer side (pure): a generation's events as the response
object and as the streamed events OpenAI publishes (`ResponseRenderer`, the stream's
renderer).

Every streamed event has a `sequence_number`: its position in the stream the generation's
events render to, from 0. Rendering is a function of those events alone (no clock, no
notices), so a replay of the generation from its first event on any instance numbers every
event the same; `starting_after=N` renders from the first event and writes only those
numbered above N: exactly the rest, no gap, no duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.events import (
    Chunk,
    Done,
    Event,
    Failed,
    GenerationRef,
    Start,
    ToolCalled,
    ToolReturned,
)
from gateway.protocol.openai import Body
from gateway.protocol.responses import Echo, response_id
from gateway.protocol.server_frames import dumps, json_string
from gateway.protocol.sse import FELL_BEHIND, KEEP_ALIVE

# The response's status and the event that ends its stream, by our finish reason.
ENDINGS = {
    "stop": ("completed", "response.completed"),
    "tool_calls": ("completed", "response.completed"),
    "length": ("incomplete", "response.incomplete"),
    # OpenAI has no event for a cancelled stream: it ends as incomplete, status cancelled.
    "cancelled": ("cancelled", "response.incomplete"),
}
# A failed response's `error.code` is one of OpenAI's few (the SDKs type it so): a refusal
# by the user's limits is theirs, everything else a server error; the message says which.


def failure_code(code: str) -> str:
    return "rate_limit_exceeded" if code == "rate_limited" else "server_error"


@dataclass
class ResponseState:
    """A response as its events so far make it: output items, text, usage, status."""

    ref: GenerationRef
    echo: Echo
    status: str = "in_progress"
    model: str = ""
    text: str | None = None  # the message item's text, once it is open
    output: list[Body] = field(default_factory=list)  # finished items
    pending: list[ToolCalled] = field(default_factory=list)
    usage: Body | None = None
    error: Body | None = None
    incomplete: Body | None = None

    @property
    def message_id(self) -> str:
        return "msg_" + self.ref.generation_id.removeprefix("gen_")

    def call_id(self, index: int) -> str:
        return f"fc_{self.ref.generation_id.removeprefix('gen_')}_{index}"

    def message_item(self, status: str) -> Body:
        content = [] if status == "in_progress" else [output_text(self.text or "")]
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def obj(self) -> Body:
        """The response object as it stands."""
        output = list(self.output)
        if self.text is not None and self.status == "in_progress":  # its text so far
            output.append({**self.message_item("in_progress"), "content": [output_text(self.text)]})
        texts = [
            part["text"] for item in output if item["type"] == "message" for part in item["content"]
        ]
        echo = self.echo
        return {
            "id": response_id(self.ref.generation_id),
            "object": "response",
            "created_at": echo.created_at,
            "status": self.status,
            "background": echo.background,
            "error": self.error,
            "incomplete_details": self.incomplete,
            "instructions": echo.instructions,
            "max_output_tokens": echo.max_output_tokens,
            "metadata": echo.metadata,
            "model": self.model or echo.model,
            "output": output,
            "output_text": "".join(texts),
            "parallel_tool_calls": True,
            "previous_response_id": echo.previous_response_id,
            "store": echo.store,
            "temperature": echo.temperature,
            "text": echo.text,
            "tool_choice": echo.tool_choice,
            "tools": echo.tools,
            "top_p": None,
            "truncation": "disabled",
            "usage": self.usage,
            "user": None,
        }


def output_text(text: str) -> Body:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def usage_object(done: Done) -> Body:
    usage = done.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


class ResponseRenderer:
    """One response's events as OpenAI's streamed events (`events`), or as the object they
    make (`state.obj()`). As the stream's renderer, `event` gives the SSE text of the events
    numbered above `after`."""

    heartbeat = KEEP_ALIVE

    def __init__(self, echo: Echo, after: int = -1) -> None:
        self.echo = echo
        self.after = after
        self.number = -1  # the last sequence_number given
        self._state: ResponseState | None = None

    @property
    def state(self) -> ResponseState:
        assert self._state is not None  # set by the first event
        return self._state

    def events(self, ref: GenerationRef, event: Event) -> list[Body]:
        """The streamed events one of ours makes, each with its sequence_number."""
        if self._state is None:
            self._state = ResponseState(ref, self.echo)
        state = self._state
        out: list[Body] = []
        if isinstance(event, Start):
            state.model = event.model
            out += self._opening()
        elif isinstance(event, Chunk) and event.content:
            if state.text is None:
                out += self._open_message()
            state.text = (state.text or "") + event.content
            out.append(self._delta(event.content))
        elif isinstance(event, ToolCalled):
            state.pending.append(event)
        elif isinstance(event, ToolReturned):  # answered by the agent: not the client's
            state.pending = [c for c in state.pending if c.call_id != event.call_id]
        elif isinstance(event, Done):
            out += self._finish(event)
        elif isinstance(event, Failed):
            out += self._fail(event)
        return out

    def event(self, ref: GenerationRef, event: Event) -> str:
        if isinstance(event, Chunk) and event.content and self._open():
            return self._delta_text(event.content)  # a token's event, formatted by hand
        rendered = self.events(ref, event)
        return "".join(sse_event(e) for e in rendered if e["sequence_number"] > self.after)

    def _open(self) -> bool:
        return self._state is not None and self._state.text is not None

    def notice(self, ref: GenerationRef, code: str, message: str) -> str:
        return ""  # the Responses stream has no place for them

    def closed(self) -> str:
        """The stream's end when its client fell `MAX_QUEUED_FRAMES` behind."""
        error = {"type": "error", "code": "slow_client", "message": FELL_BEHIND, "param": None}
        return sse_event(self._numbered(error))

    def _numbered(self, body: Body) -> Body:
        self.number += 1
        body["sequence_number"] = self.number
        return body

    def _response(self, kind: str) -> Body:
        return self._numbered({"type": kind, "response": self.state.obj()})

    def _opening(self) -> list[Body]:
        """As OpenAI opens a stream: a background response is created queued, then runs."""
        if not self.state.echo.background:
            return [self._response("response.created"), self._response("response.in_progress")]
        self.state.status = "queued"
        queued = [self._response("response.created"), self._response("response.queued")]
        self.state.status = "in_progress"
        return [*queued, self._response("response.in_progress")]

    def _open_message(self) -> list[Body]:
        state = self.state
        state.text = ""
        index = len(state.output)
        added = {
            "type": "response.output_item.added",
            "output_index": index,
            "item": state.message_item("in_progress"),
        }
        part = {
            "type": "response.content_part.added",
            "item_id": state.message_id,
            "output_index": index,
            "content_index": 0,
            "part": output_text(""),
        }
        return [self._numbered(added), self._numbered(part)]

    def _delta(self, text: str) -> Body:
        return self._numbered(
            {
                "type": "response.output_text.delta",
                "item_id": self.state.message_id,
                "output_index": len(self.state.output),
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            }
        )

    def _delta_text(self, text: str) -> str:
        """`sse_event(self._delta(text))` for a message already open, without building it."""
        state = self.state
        state.text = (state.text or "") + text
        self.number += 1
        if self.number <= self.after:
            return ""
        return (
            "event: response.output_text.delta\n"
            'data: {"type":"response.output_text.delta",'
            f'"item_id":{json_string(state.message_id)},'
            f'"output_index":{len(state.output)},"content_index":0,"delta":{json_string(text)},'
            f'"logprobs":[],"sequence_number":{self.number}}}\n\n'
        )

    def _close_message(self, status: str) -> list[Body]:
        state = self.state
        if state.text is None:
            return []
        index, text, item_id = len(state.output), state.text, state.message_id
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        done = [
            {"type": "response.output_text.done", **where, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **where, "part": output_text(text)},
        ]
        item = state.message_item(status)
        state.output.append(item)
        state.text = None
        done.append({"type": "response.output_item.done", "output_index": index, "item": item})
        return [self._numbered(e) for e in done]

    def _calls(self) -> list[Body]:
        state = self.state
        out: list[Body] = []
        for call in state.pending:
            index = len(state.output)
            item = {
                "id": state.call_id(index),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": "",
            }
            where = {"item_id": item["id"], "output_index": index}
            finished = {**item, "status": "completed", "arguments": call.arguments}
            out += [
                {"type": "response.output_item.added", "output_index": index, "item": item},
                {
                    "type": "response.function_call_arguments.delta",
                    **where,
                    "delta": call.arguments,
                },
                {
                    "type": "response.function_call_arguments.done",
                    **where,
                    "arguments": call.arguments,
                },
                {"type": "response.output_item.done", "output_index": index, "item": finished},
            ]
            state.output.append(finished)
        state.pending = []
        return [self._numbered(e) for e in out]

    def _finish(self, done: Done) -> list[Body]:
        state = self.state
        status, kind = ENDINGS[done.finish_reason]
        out = self._close_message("incomplete" if status == "incomplete" else "completed")
        out += self._calls()
        state.status = status
        state.usage = usage_object(done)
        if done.finish_reason == "length":
            state.incomplete = {"reason": "max_output_tokens"}
        return [*out, self._response(kind)]

    def _fail(self, failed: Failed) -> list[Body]:
        state = self.state
        out = self._close_message("incomplete")
        state.status = "failed"
        state.error = {"code": failure_code(failed.code), "message": failed.message}
        return [*out, self._response("response.failed")]


def sse_event(body: Body) -> str:
    return f"event: {body['type']}\ndata: {dumps(body)}\n\n"


def response_object(
    ref: GenerationRef, echo: Echo, events: list[Event], status: str | None = None
) -> Body:
    """The response object its events make; `status` overrides theirs (a running one's)."""
    renderer = ResponseRenderer(echo)
    renderer._state = ResponseState(ref, echo)
    for event in events:
        renderer.events(ref, event)
    obj: Body = renderer.state.obj()
    if status is not None:
        obj["status"] = status
    return obj


def deleted_object(response_id: str) -> Body:
    return {"id": response_id, "object": "response.deleted", "deleted": True}
