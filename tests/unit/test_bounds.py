"""The pure bounds of one generation: how its answer is cut, and what a timeout says."""

from __future__ import annotations

from gateway.bounds import AnswerText, GenerationBounds, timed_out
from gateway.config import Settings


def test_text_that_fits_is_taken_whole() -> None:
    answer = AnswerText(10)
    assert [answer.take("abc"), answer.take("defg")] == ["abc", "defg"]
    assert answer.text == "abcdefg" and not answer.cut


def test_the_chunk_that_does_not_fit_is_cut_to_the_room_left() -> None:
    answer = AnswerText(5)
    assert answer.take("abc") == "abc"
    assert answer.take("defg") == "de"
    assert answer.text == "abcde" and answer.cut


def test_an_answer_of_exactly_the_limit_is_not_cut_until_more_text_comes() -> None:
    answer = AnswerText(4)
    assert answer.take("abcd") == "abcd" and not answer.cut
    assert answer.take("") == "" and not answer.cut  # an empty delta adds nothing
    assert answer.take("e") == "" and answer.cut
    assert answer.text == "abcd"


def test_characters_are_counted_not_bytes() -> None:
    answer = AnswerText(3)
    assert answer.take("héé€") == "héé" and answer.cut


def test_bounds_come_from_the_settings() -> None:
    settings = Settings(
        max_answer_chars=7, max_log_events=8, generation_timeout=9.5, generation_memory_events=10
    )
    assert GenerationBounds.of(settings) == GenerationBounds(7, 8, 9.5, 10)


def test_a_timeout_says_how_long_an_answer_may_take() -> None:
    assert timed_out(900.0) == (
        "The answer was stopped after 900 s, the longest one answer may take."
    )
    assert "0.5 s" in timed_out(0.5)
