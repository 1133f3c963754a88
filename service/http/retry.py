"""Retry policy: classification, backoff maths and Retry-After parsing.

Plain functions, no I/O and no clock of their own: the client passes time in.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

from service.errors import (
    AuthError,
    RateLimited,
    RequestRejected,
    RetriableError,
    ServerError,
    TransportError,
    VendorError,
)

# Overload answers: the whole vendor pauses, not just the task that saw it.
OVERLOAD_STATUSES = frozenset({429, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry one request.

    ``max_attempts`` counts sends (the first one included); ``max_elapsed_s`` bounds the
    time from the first send to the start of the last retry. ``jitter_kind`` picks
    "equal" jitter (half the step fixed, half random: never retries immediately) or
    "full" jitter (uniform in ``[0, step]``: spreads a large herd best).
    """

    max_attempts: int = 6
    base_s: float = 0.5
    max_backoff_s: float = 30.0
    max_elapsed_s: float = 120.0
    jitter: bool = True
    jitter_kind: Literal["equal", "full"] = "equal"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_s < 0 or self.max_backoff_s < 0 or self.max_elapsed_s < 0:
            raise ValueError("retry durations must be >= 0")


def backoff_s(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Delay before the retry that follows failed attempt number ``attempt`` (1-based).

    The step doubles per attempt from ``base_s`` and is capped at ``max_backoff_s``;
    the result always lies in ``[0, max_backoff_s]``.
    """
    exponent = min(max(attempt, 1) - 1, 62)  # 2**62 * base already exceeds any cap
    step = min(policy.max_backoff_s, policy.base_s * math.ldexp(1.0, exponent))
    if not policy.jitter:
        return step
    if policy.jitter_kind == "full":
        return rng.uniform(0.0, step)
    return step / 2 + rng.uniform(0.0, step / 2)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    Returns ``None`` when absent or unparseable; a date in the past gives ``0.0``.
    ``now`` must be UTC-aware.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; "-0000" parses as naive
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify_status(status: int) -> type[VendorError] | None:
    """The error class for an HTTP status, or ``None`` for 1xx/2xx/3xx.

    429 → RateLimited; any 5xx → ServerError (500 included: vendors answer 500 for
    transient faults, and the attempt/elapsed bounds keep a real bug from looping);
    408 → TransportError (the server timed out reading us); 401/403 → AuthError;
    other 4xx → RequestRejected.
    """
    if status < 400:
        return None
    if status == 429:
        return RateLimited
    if status >= 500:
        return ServerError
    if status == 408:
        return TransportError
    if status in (401, 403):
        return AuthError
    return RequestRejected


def should_retry(
    exc: BaseException,
    attempt: int,
    elapsed_s: float,
    policy: RetryPolicy,
    *,
    next_delay_s: float = 0.0,
    retry_on: tuple[type[BaseException], ...] = (RetriableError,),
) -> bool:
    """Whether to try again after failed attempt number ``attempt`` (1-based).

    True only for errors of a ``retry_on`` class, while attempts remain and while the
    next retry would still start within ``max_elapsed_s`` of the first send.
    """
    if not isinstance(exc, retry_on):
        return False
    if attempt >= policy.max_attempts:
        return False
    return elapsed_s + max(next_delay_s, 0.0) <= policy.max_elapsed_s
