"""Whole tool calls out of the pieces a stream sends of them, within bounds.

APIs stream a call in parts: its id and name first, its JSON arguments a fragment at a time,
calls told apart by an index. A dialect's reader hands each part to `ToolCalls.part`; the
calls come out whole, in index order, at the end of the turn. A turn holds at most
`max_tool_calls` calls with `max_tool_argument_bytes` of arguments in all: past either,
`Overrun`.
"""

from __future__ import annotations

from gateway.events import ToolCall
from gateway.llm.bounds import DEFAULT_BOUNDS, Overrun, StreamFormatError, UpstreamBounds, size


class _PartialCall:
    __slots__ = ("arguments", "id", "name")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []  # joined once at the end: linear in their length


class ToolCalls:
    def __init__(self, bounds: UpstreamBounds = DEFAULT_BOUNDS) -> None:
        self._calls: dict[int, _PartialCall] = {}
        self._max_calls = bounds.max_tool_calls
        self._max_bytes = bounds.max_tool_argument_bytes
        self._bytes = 0

    def part(self, index: int, call_id: str, name: str, arguments: str) -> None:
        """One part of the call at `index`: an empty id or name leaves the one known."""
        call = self._calls.get(index)
        if call is None:
            if len(self._calls) >= self._max_calls:
                raise Overrun(f"more than {self._max_calls} tool calls in one turn")
            call = self._calls[index] = _PartialCall()
        call.id = call_id or call.id
        call.name = name or call.name
        if arguments:
            self._bytes += len(arguments.encode())
            if self._bytes > self._max_bytes:
                raise Overrun(f"more than {size(self._max_bytes)} of tool call arguments")
            call.arguments.append(arguments)

    def calls(self) -> list[ToolCall]:
        """The whole calls, by index. A call without a name cannot be run or answered: a
        format error. One without an id gets one, as some compatible servers send none."""
        whole = []
        for index, call in sorted(self._calls.items()):
            if not call.name:
                raise StreamFormatError("a tool call has no function name")
            whole.append(ToolCall(call.id or f"call_{index}", call.name, "".join(call.arguments)))
        return whole
