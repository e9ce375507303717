"""The retry policy (pure), `Retry-After` reading, and what each upstream failure becomes."""

from __future__ import annotations

import httpx2
import openai
import pytest

from gateway.errors import (
    ContextTooLong,
    UpstreamCredentials,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from gateway.llm import failures
from gateway.llm.bounds import StreamFormatError
from gateway.llm.failures import Failure, StreamCutShort
from gateway.llm.openai.dialect import fault
from gateway.llm.retry import Backoff, RetryPolicy, is_retryable_status, retry_after_seconds

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("draw", "expected"),
    [
        (1.0, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]),  # the ceiling doubles, up to the cap
        (0.5, [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]),
        (0.0, [0.0] * 7),  # full jitter reaches down to no wait at all
    ],
)
def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling(
    draw: float, expected: list[float]
) -> None:
    backoff = Backoff(base=0.5, cap=8.0)
    assert [backoff.delay(retry, lambda: draw) for retry in range(7)] == expected


def test_the_policy_backs_off_until_its_retries_are_spent() -> None:
    policy = RetryPolicy(max_retries=2, max_wait=20.0)
    assert policy.delay(0, None, lambda: 1.0) == 0.5
    assert policy.delay(1, None, lambda: 1.0) == 1.0
    assert policy.delay(2, None, lambda: 1.0) is None


def test_the_policy_obeys_a_short_retry_after_and_gives_up_on_a_long_one() -> None:
    policy = RetryPolicy(max_retries=2, max_wait=20.0)
    assert policy.delay(0, 0.0, lambda: 1.0) == 0.0
    assert policy.delay(0, 20.0, lambda: 1.0) == 20.0
    assert policy.delay(0, 20.5, lambda: 1.0) is None  # longer than we hold a client
    assert policy.delay(2, 1.0, lambda: 1.0) is None  # no retries left


def test_no_retries_means_never() -> None:
    assert RetryPolicy(max_retries=0, max_wait=20.0).delay(0, None, lambda: 0.0) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": "0"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),  # the finer one wins
        ({"retry-after-ms": "soon", "Retry-After": "9"}, 9.0),
        ({"Retry-After": "Tue, 14 Nov 2023 22:13:50 GMT"}, 30.0),
        ({"Retry-After": "Tue, 14 Nov 2023 22:13:50"}, 30.0),  # zone-less: read as GMT
        ({"Retry-After": "Tue, 14 Nov 2023 22:00:00 GMT"}, 0.0),  # already past
        ({"Retry-After": "-3"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "next week"}, None),
        ({"Retry-After": ""}, None),
    ],
)
def test_retry_after_headers(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(httpx2.Headers(headers), NOW) == expected


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_statuses_worth_another_attempt(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_statuses_another_attempt_cannot_fix(status: int) -> None:
    assert not is_retryable_status(status)


# ---------------------------------------------------------------------------------------------
# Classification: the SDK's and httpx's own exception objects, as they would be raised, named
# by the OpenAI dialect and classified by the policy


def classify(name: str, exc: Exception, streamed: bool) -> Failure:
    return failures.classify(name, exc, streamed, fault(exc))


def status_error(status: int, headers: dict[str, str] | None = None, **body: str) -> Exception:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx2.Response(status, headers=headers, request=request)
    return openai.APIStatusError(body.get("message", "upstream text"), response=response, body=body)


def request_of() -> httpx2.Request:
    return httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")


def test_a_429_is_rate_limited_with_the_upstreams_wait() -> None:
    failure = classify("m", status_error(429, {"retry-after-ms": "1500"}), streamed=False)
    assert isinstance(failure.error, UpstreamRateLimited) and failure.retry
    assert failure.error.retry_after == 1.5
    assert "upstream text" not in failure.error.message


def test_a_503_keeps_its_retry_after() -> None:
    failure = classify("m", status_error(503, {"Retry-After": "4"}), streamed=False)
    assert isinstance(failure.error, UpstreamUnavailable) and failure.retry
    assert failure.error.retry_after == 4.0


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (status_error(401), UpstreamCredentials),
        (status_error(403), UpstreamCredentials),
        (status_error(400, message="maximum context length is 8192 tokens"), ContextTooLong),
        (status_error(404), UpstreamError),
    ],
)
def test_what_another_attempt_cannot_fix_is_not_retried(exc: Exception, kind: type) -> None:
    failure = classify("m", exc, streamed=False)
    assert type(failure.error) is kind or (kind is UpstreamError and not failure.error.retryable)
    assert not failure.retry


@pytest.mark.parametrize(
    ("status", "headers", "redirect"),
    [
        (307, {"Location": "http://10.0.0.1/steal"}, True),
        (301, {"Location": "/v2/chat/completions"}, True),
        (308, None, False),  # no Location: nowhere to go, so not told as a redirect
        (304, {"Location": "/x"}, False),
        (300, None, False),
    ],
)
def test_a_redirect_is_told_as_one_and_not_retried(
    status: int, headers: dict[str, str] | None, redirect: bool
) -> None:
    failure = classify("m", status_error(status, headers), streamed=False)
    assert not failure.retry and not failure.error.retryable
    told = f"answered with a redirect (HTTP {status})" in failure.error.message
    assert told is redirect, failure.error.message
    assert "10.0.0.1" not in failure.error.message


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (TimeoutError(), "did not start answering in time"),
        (openai.APITimeoutError(request_of()), "did not answer in time"),
        (openai.APIConnectionError(request=request_of()), "could not be reached"),
        (httpx2.ReadTimeout("slow"), "stopped sending in time"),
        (httpx2.RemoteProtocolError("peer closed"), "broke off before answering"),
        (StreamCutShort(), "broke off before answering"),
    ],
)
def test_before_the_first_token_a_passing_failure_is_unavailable_and_retried(
    exc: Exception, words: str
) -> None:
    failure = classify("m", exc, streamed=False)
    assert type(failure.error) is UpstreamUnavailable and failure.retry
    assert words in failure.error.message


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (httpx2.ReadTimeout("slow"), "went silent mid-answer"),
        (httpx2.RemoteProtocolError("peer closed"), "stopped answering mid-stream"),
        (StreamCutShort(), "ended its stream before the answer did"),
        (StreamFormatError("not json"), "malformed stream"),
    ],
)
def test_after_the_first_token_a_failure_is_an_upstream_error_never_retried(
    exc: Exception, words: str
) -> None:
    failure = classify("m", exc, streamed=True)
    assert type(failure.error) is UpstreamError and not failure.retry
    assert words in failure.error.message


def test_a_malformed_stream_is_not_retried_even_before_the_first_token() -> None:
    failure = classify("m", StreamFormatError("not json"), streamed=False)
    assert type(failure.error) is UpstreamError and not failure.retry
