"""Server-sent events as an upstream streams them: complete lines out of network reads.

A dialect's stream reader (`gateway.llm.openai.stream`) subclasses `LineStream` and reads the
`data:` lines of each block of complete lines in its API's format; this module knows no
format. Work per byte is constant however the upstream splits its bytes, and a line is
bounded (`UpstreamBounds.max_line_bytes`): past it, `Overrun`.

Subclassing rather than wrapping keeps the hot path at one method call per network read.
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.llm.bounds import DEFAULT_BOUNDS, Overrun, UpstreamBounds, size


class LineStream:
    """A line-framed body fed a piece at a time. `feed` hands each block of complete lines
    (a line may span pieces) to `_read`, which returns the text found in it."""

    def __init__(self, bounds: UpstreamBounds = DEFAULT_BOUNDS) -> None:
        # A line not yet ended; a bytearray, so that a line dripped a byte at a time costs
        # linear time to gather (bytes concatenation would copy it once per byte).
        self._tail = bytearray()
        self._max_line = bounds.max_line_bytes

    def feed(self, piece: bytes) -> str:
        """The text of the complete lines so far. Overrun when a line grows past the bound."""
        end = piece.rfind(b"\n")
        if end < 0:
            self._tail += piece
            if len(self._tail) > self._max_line:
                raise Overrun(f"a line longer than {size(self._max_line)}")
            return ""
        if self._tail:
            self._tail += piece[:end]
            block = bytes(self._tail)
            self._tail.clear()
        else:
            block = piece if end == len(piece) - 1 else piece[:end]
        self._tail += piece[end + 1 :]
        return self._read(block)

    def close(self) -> str:
        """The text of a last line left without its newline."""
        tail = bytes(self._tail)
        self._tail.clear()
        return self._read(tail)

    def _read(self, block: bytes) -> str:
        """The text of whole lines (joined by newlines); the API's reader says what that is."""
        raise NotImplementedError


def data_lines(block: bytes) -> Iterator[bytes]:
    """The lines of `block` that start with `data:`. Only these carry anything; the others
    (blank separators, comments, `event:` and `id:` lines) are skipped by `bytes.find`, not
    one by one, so a body of millions of blank lines costs a scan, not a loop."""
    start = 0 if block.startswith(b"data:") else _next_data_line(block, 0)
    while start >= 0:
        end = block.find(b"\n", start)
        if end < 0:
            yield block[start:]
            return
        yield block[start:end]
        start = _next_data_line(block, end)


def _next_data_line(block: bytes, after: int) -> int:
    found = block.find(b"\ndata:", after)
    return found + 1 if found >= 0 else -1
