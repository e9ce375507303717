"""Source selection and citations of the grounded agent: pure."""

from __future__ import annotations

import random

import pytest

from gateway.agents.grounded import (
    MAX_MARKER_CHARS,
    CitationScanner,
    citation_metadata,
    cited_numbers,
    grounded_prompt,
    select_sources,
)
from gateway.protocol.frames import Source

A = Source("alpha " * 10, title="A", url="https://a.example", id="a")
B = Source("beta " * 400, title="B", id="b")
C = Source("gamma", id="c")


def test_everything_fits_a_large_budget() -> None:
    selection = select_sources([A, B, C], budget_tokens=10_000)
    assert [i.number for i in selection.included] == [1, 2, 3]
    assert not any(i.trimmed for i in selection.included) and selection.omitted == ()


def test_the_source_that_overflows_is_cut_and_the_rest_are_listed() -> None:
    selection = select_sources([A, B, C], budget_tokens=200)
    assert [i.source.id for i in selection.included] == ["a", "b"]
    assert selection.included[1].trimmed and selection.included[1].text.endswith(" …")
    assert len(selection.included[1].text) < len(B.content)
    assert selection.omitted == (C,)


def test_the_prompt_numbers_sources_with_their_titles() -> None:
    prompt = grounded_prompt("Be brief.", select_sources([A, C], 1000))
    assert prompt.startswith("Be brief.\n\nAnswer using only the numbered sources")
    assert "[1] A <https://a.example>\nalpha" in prompt and "[2]\ngamma" in prompt
    assert "No sources were given." in grounded_prompt(None, select_sources([], 1000))


@pytest.mark.parametrize(
    ("text", "sources", "expected"),
    [
        ("x [2] y [1, 2] z [9] [2]", 9, [2, 1, 9]),
        ("x [2] y [1, 2] z [9] [2]", 2, [2, 1]),  # [9] names no source
        ("no citations [a] [1.5] [] [,1] [1,] [-1]", 9, []),
        ("[3,1 , 2][1,\n2]", 3, [3, 1, 2]),
        ("[0] [0001] [12345] [2]", 9, [1, 2]),  # five digits name nothing
        ("[" + "9" * 5000 + "] [1]", 9, [1]),  # int() of it would raise
        ("[[[1]]] [2[3]", 9, [1, 3]),
        ("[1" + " " * 4 + ", 2] [2]", 9, [2]),  # too much space: not a marker
        ("[" + ", ".join(["1"] * 50) + "]", 1, [1]),
        ("[" + ", ".join(["1"] * 51) + "]", 1, []),  # more numbers than sources could be
        ("see [1] and [2]", 0, []),
    ],
)
def test_citations_in_order_of_first_use(text: str, sources: int, expected: list[int]) -> None:
    assert cited_numbers(text, sources) == expected


def pieces(text: str, cuts: random.Random) -> list[str]:
    """`text` cut at random places, as an upstream's chunks might be."""
    at = sorted(cuts.sample(range(1, len(text)), min(len(text) - 1, len(text) // 3)))
    return [text[i:j] for i, j in zip([0, *at], [*at, len(text)], strict=True)]


@pytest.mark.parametrize("seed", range(20))
def test_citations_do_not_depend_on_how_the_answer_is_cut(seed: int) -> None:
    rng = random.Random(seed)
    words = ["[1]", "[2, 3]", "[", "]", ",", " ", "7", "[4,", " 5]", "x", "[99999]", "\n"]
    text = "".join(rng.choice(words) for _ in range(300))
    scanner = CitationScanner(9)
    for piece in pieces(text, rng):
        scanner.feed(piece)
    assert scanner.numbers() == cited_numbers(text, 9)
    assert scanner.read <= 4 * len(text)


@pytest.mark.parametrize(
    ("marker", "count", "piece_chars"),
    [
        ("[1]", 200_000, 3),
        ("[1]", 200_000, 1),
        ("[1]", 200_000, 1000),
        ("[1, 2]", 200_000, 4),
        ("[1, 2,", 200_000, 7),  # never closed
        ("[" + "1" * 600, 1000, 5),  # never closed, longer than any marker
    ],
)
def test_reading_citations_is_linear_in_the_answer(
    marker: str, count: int, piece_chars: int
) -> None:
    # The markers cite only sources 1 and 2 of three, so the whole answer is read; the work is
    # counted in characters matched, within the same bound for every cut.
    text = marker * count
    scanner = CitationScanner(3)
    for start in range(0, len(text), piece_chars):
        scanner.feed(text[start : start + piece_chars])
    assert scanner.read <= 4 * len(text)
    assert scanner.numbers() == cited_numbers(text, 3)
    assert len(scanner._open) <= MAX_MARKER_CHARS


def test_once_every_source_is_cited_the_rest_is_not_read() -> None:
    scanner = CitationScanner(2)
    scanner.feed("[2] then [1]")
    before = scanner.read
    for _ in range(100_000):
        scanner.feed("[1]")
    assert scanner.read == before and scanner.numbers() == [2, 1]


def test_citation_metadata_names_sources_and_what_was_cut() -> None:
    selection = select_sources([A, B, C], budget_tokens=200)
    cited = cited_numbers("See [2] and [1], not [3].", len(selection.included))
    metadata = citation_metadata(cited, selection, "proj")
    assert metadata["citations"] == [
        {"n": 2, "id": "b", "title": "B", "url": None},
        {"n": 1, "id": "a", "title": "A", "url": "https://a.example"},
    ]
    assert metadata["sources"] == {
        "included": 2,
        "trimmed": [{"n": 2, "id": "b", "title": "B", "url": None}],
        "omitted": [{"n": None, "id": "c", "title": None, "url": None}],
    }
    assert metadata["project_id"] == "proj"
