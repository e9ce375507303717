"""One completion or followed generation, as the caller iterates it.

A run keeps what a resume needs (the generation id and the last seq seen) and drops anything
at or below that seq, so however often the transport under it is replaced the caller sees
each event once, in order, up to the final one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gateway_client.errors import GatewayError
from gateway_client.events import Chunk, ErrorEvent, Item, Notice


class _End:
    """Queued after the last item: the iterator stops (or raises `error`)."""

    def __init__(self, error: GatewayError | None) -> None:
        self.error = error


class Run:
    """An async iterator of a generation's events (`Start`, `Chunk`, `ToolCall`, `ToolResult`,
    then one `Done` or `ErrorEvent`), with the `Notice`s that concern it in between. Iterate it
    once. Leaving the loop early does not stop the generation: call `cancel()` for that."""

    def __init__(
        self,
        run_id: str,
        on_cancel: Callable[[Run], None],
        *,
        body: dict[str, Any] | None = None,
        generation_id: str | None = None,
        after: int = 0,
    ) -> None:
        self.id = run_id
        self.generation_id = generation_id
        self.conversation_id: str | None = None
        self.last_seq = after
        self.notices: list[Notice] = []
        self.text = ""  # the chunks so far, joined
        self.body = body  # the completion, sent again until the generation id is known
        self.socket: object | None = None  # the transport it was last sent on
        self.cancel_requested = False
        self.cancel_sent = False
        self._on_cancel = on_cancel
        self._queue: asyncio.Queue[Item | _End] = asyncio.Queue()
        self.ended = False

    def cancel(self) -> None:
        """Stop the generation: it ends with `Done(finish_reason="cancelled")` (unless it was
        already finishing). A completion not sent yet ends at once, with no events."""
        if not self.ended:
            self._on_cancel(self)

    def opening_frame(self) -> dict[str, Any]:
        """What (re)starts the run on a new socket: a resume from the last seq once the
        generation is known, else the completion (its idempotency key re-attaches it)."""
        if self.generation_id is not None:
            return {
                "type": "resume",
                "generation_id": self.generation_id,
                "after": self.last_seq,
                "id": self.id,
            }
        return {"type": "completion", "id": self.id, **(self.body or {})}

    def deliver(self, item: Item) -> bool:
        """Hand an item to the caller unless it is a repeat; True when it ends the run."""
        if self.ended:
            return True
        if isinstance(item, Notice):
            if all(seen.code != item.code for seen in self.notices):
                self.notices.append(item)  # a resume elsewhere may bring a code again
                self._queue.put_nowait(item)
            return False
        if item.seq is not None:
            if item.seq <= self.last_seq:
                return False  # replayed by a resume: the caller has it already
            self.last_seq = item.seq
        if item.generation_id:
            self.generation_id = item.generation_id
        if item.conversation_id:
            self.conversation_id = item.conversation_id
        if isinstance(item, Chunk):
            self.text += item.content
        self._queue.put_nowait(item)
        if item.done or isinstance(item, ErrorEvent):
            self.end()
            return True
        return False

    def end(self, error: GatewayError | None = None) -> None:
        if not self.ended:
            self.ended = True
            self._queue.put_nowait(_End(error))

    def __aiter__(self) -> Run:
        return self

    async def __anext__(self) -> Item:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # later calls stop too
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    async def collect(self) -> list[Item]:
        """Every item up to the end of the run."""
        return [item async for item in self]
