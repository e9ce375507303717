"""Server-sent event lines out of a body's blocks, in no API's format."""

from __future__ import annotations

import pytest

from gateway.llm.sse import data_lines


@pytest.mark.parametrize(
    ("block", "lines"),
    [
        (b"", []),
        (b"\n\n\n", []),
        (b"data: 1", [b"data: 1"]),
        (b"data: 1\n\ndata: 2", [b"data: 1", b"data: 2"]),
        (b": comment\nevent: e\ndata: x\nid: 3\ndata: y\n", [b"data: x", b"data: y"]),
        (b"xdata: 1\ndata:2", [b"data:2"]),
        (b"data: x\nfoo", [b"data: x"]),
    ],
)
def test_only_data_lines_are_read(block: bytes, lines: list[bytes]) -> None:
    assert list(data_lines(block)) == lines
