"""The runs in flight: every unfinished run of a client, by request id.

Runs outlive the transports under them: when a socket is replaced, every run still here is
sent again on the next one; a run leaves when it ends, however it ends.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

from gateway_client.errors import GatewayError
from gateway_client.events import ErrorEvent, Item
from gateway_client.run import Run


class Runs:
    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._counter = 0

    def new_id(self) -> str:
        """A request id unique in this client, and unlikely to repeat across clients."""
        self._counter += 1
        return f"r{self._counter}-{secrets.token_hex(3)}"

    def add(self, run: Run) -> None:
        self._runs[run.id] = run

    def get(self, run_id: object) -> Run | None:
        return self._runs.get(str(run_id))

    def forget(self, run: Run) -> None:
        self._runs.pop(run.id, None)

    def __iter__(self) -> Iterator[Run]:
        return iter(list(self._runs.values()))  # a copy: ending a run forgets it

    def __bool__(self) -> bool:
        return bool(self._runs)

    def deliver(self, run: Run, item: Item) -> bool:
        """Hand `item` to `run`; True (and the run forgotten) when it ended the run."""
        if run.deliver(item):
            self.forget(run)
            return True
        return False

    def end(self, run: Run) -> None:
        """End `run` with no further events."""
        self.forget(run)
        run.end()

    def end_all(self, error: GatewayError) -> None:
        for run in self:
            run.end(error)
        self._runs.clear()


def oversized(run: Run, max_frame_bytes: int) -> ErrorEvent | None:
    """The error a completion gets instead of being sent when its frame is larger than the
    gateway takes (`MAX_FRAME_BYTES`): sent, it would close the socket (1009)."""
    size = len(json.dumps({"type": "completion", "id": run.id, **(run.body or {})}).encode())
    if size <= max_frame_bytes:
        return None
    text = f"The request has {size} bytes; the gateway takes at most {max_frame_bytes}."
    return ErrorEvent(id=run.id, code="bad_request", message=text, retryable=False)
