"""Source selection and citations of the grounded agent: pure."""

from __future__ import annotations

from gateway.agents.grounded import (
    citation_metadata,
    cited_numbers,
    grounded_prompt,
    select_sources,
)
from gateway.protocol import Source

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


def test_citations_in_order_of_first_use() -> None:
    assert cited_numbers("x [2] y [1, 2] z [9] [2]") == [2, 1, 9]
    assert cited_numbers("no citations [a] [1.5]") == []


def test_citation_metadata_names_sources_and_what_was_cut() -> None:
    selection = select_sources([A, B, C], budget_tokens=200)
    metadata = citation_metadata("See [2] and [1], not [3].", selection, "proj")
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
