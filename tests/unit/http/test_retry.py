"""Pure retry policy: backoff bounds, Retry-After parsing, status classification."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import (
    AuthError,
    ParseError,
    RateLimited,
    RequestRejected,
    ServerError,
    TransportError,
)
from service.http.retry import (
    RetryPolicy,
    backoff_s,
    classify_status,
    parse_retry_after,
    should_retry,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 20),
    base_s=st.floats(0, 10, allow_nan=False),
    max_backoff_s=st.floats(0, 120, allow_nan=False),
    max_elapsed_s=st.floats(0, 600, allow_nan=False),
    jitter=st.booleans(),
    jitter_kind=st.sampled_from(["equal", "full"]),
)


@given(policy=policies, attempt=st.integers(1, 10_000), seed=st.integers(0, 2**32))
def test_backoff_within_bounds(policy: RetryPolicy, attempt: int, seed: int) -> None:
    delay = backoff_s(policy, attempt, random.Random(seed))
    step = min(policy.max_backoff_s, policy.base_s * 2 ** min(attempt - 1, 62))
    assert 0.0 <= delay <= policy.max_backoff_s
    assert delay <= step + 1e-9
    if policy.jitter and policy.jitter_kind == "equal":
        assert delay >= step / 2 - 1e-9
    if not policy.jitter:
        assert delay == pytest.approx(step)


def test_backoff_without_jitter_doubles_then_caps() -> None:
    policy = RetryPolicy(base_s=0.5, max_backoff_s=3, jitter=False)
    rng = random.Random(0)
    assert [backoff_s(policy, a, rng) for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_full_jitter_spreads_over_the_whole_step() -> None:
    policy = RetryPolicy(base_s=1, max_backoff_s=8, jitter_kind="full")
    rng = random.Random(1)
    delays = [backoff_s(policy, 4, rng) for _ in range(500)]
    assert min(delays) < 1.0
    assert max(delays) > 7.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("Wed, 01 May 2024 12:00:30 GMT", 30.0),
        ("Wed, 01 May 2024 11:59:00 GMT", 0.0),  # in the past
        ("Wed, 01 May 2024 12:01:00 -0000", 60.0),
        ("Wed, 01 May 2024 14:00:10 +0200", 10.0),
        ("Wed, 41 Foo 2024 12:00:30 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    got = parse_retry_after(value, NOW)
    assert got == (None if expected is None else pytest.approx(expected))


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(value: str) -> None:
    got = parse_retry_after(value, NOW)
    assert got is None or got >= 0


@given(st.integers(0, 10**6))
def test_parse_retry_after_http_date_roundtrip(seconds: int) -> None:
    when = NOW + timedelta(seconds=seconds)
    value = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(value, NOW) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (200, None),
        (204, None),
        (301, None),
        (304, None),
        (400, RequestRejected),
        (404, RequestRejected),
        (409, RequestRejected),
        (422, RequestRejected),
        (401, AuthError),
        (403, AuthError),
        (408, TransportError),
        (429, RateLimited),
        (500, ServerError),
        (502, ServerError),
        (503, ServerError),
        (504, ServerError),
    ],
)
def test_classify_status(status: int, cls: type | None) -> None:
    assert classify_status(status) is cls


def test_should_retry_bounds() -> None:
    policy = RetryPolicy(max_attempts=3, max_elapsed_s=10)
    transient = ServerError("x", status=503)
    assert should_retry(transient, 1, 0.0, policy)
    assert should_retry(transient, 2, 9.0, policy, next_delay_s=1.0)
    assert not should_retry(transient, 3, 0.0, policy)  # attempts used up
    assert not should_retry(transient, 1, 9.5, policy, next_delay_s=1.0)  # out of time
    assert not should_retry(RequestRejected("x", status=404), 1, 0.0, policy)
    assert not should_retry(AuthError("x", status=401), 1, 0.0, policy)
    assert not should_retry(ValueError("x"), 1, 0.0, policy)
    assert not should_retry(ParseError("x"), 1, 0.0, policy)
    assert should_retry(ParseError("x"), 1, 0.0, policy, retry_on=(ParseError,))


@given(policy=policies, attempt=st.integers(1, 50), elapsed=st.floats(0, 1000))
def test_should_retry_never_exceeds_policy(
    policy: RetryPolicy, attempt: int, elapsed: float
) -> None:
    if should_retry(TransportError("x"), attempt, elapsed, policy):
        assert attempt < policy.max_attempts
        assert elapsed <= policy.max_elapsed_s


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
