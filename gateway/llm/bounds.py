"""What one upstream response may send, and the error that ends a generation past it.

Pure: the HTTP transport (`gateway.llm.transport`) and the stream readers (`gateway.llm.sse`,
`gateway.llm.tool_calls`) enforce these as the bytes arrive, so a hostile or broken model API
costs the gateway a bounded amount of memory and CPU for that one generation, and nothing for
anyone else.
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class UpstreamBounds:
    max_line_bytes: int = MIB  # one line of a streamed body
    max_body_bytes: int = 32 * MIB  # a whole body, after decompression
    max_tool_calls: int = 64  # in one model turn
    max_tool_argument_bytes: int = MIB  # all of a turn's tool-call arguments together


DEFAULT_BOUNDS = UpstreamBounds()


class StreamFormatError(ValueError):
    """The upstream sent something that is not a response in its API's format."""


class Overrun(Exception):
    """The upstream sent more than a bound allows; `what` says what, for a person."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def size(n: int) -> str:
    """A byte count as people read it in an error message: 1 MiB, 16 KiB, 300 bytes."""
    if n >= MIB and n % MIB == 0:
        return f"{n // MIB} MiB"
    if n >= KIB and n % KIB == 0:
        return f"{n // KIB} KiB"
    return f"{n} bytes"
