"""Request metrics: plain per-vendor counters plus optional Prometheus collectors.

``RequestStats`` is what benchmarks and the demo summary read; ``HttpMetrics`` feeds
``/metrics`` and is built on a registry the caller passes (nothing global at import).
"""

from __future__ import annotations

import time
from collections import Counter as TallyCounter
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
WAIT_BUCKETS_S = (0.0005, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class LimiterCounts(Protocol):
    """What the gauges read from a limiter (``service.http.limiter.VendorLimiter``)."""

    in_flight: int
    held: int


@dataclass
class RequestTally:
    """Attempts made inside one :func:`request_scope` (e.g. one stream run)."""

    requests: int = 0


_scope: ContextVar[RequestTally | None] = ContextVar("vendorsync_request_scope", default=None)


@contextmanager
def request_scope() -> Iterator[RequestTally]:
    """Count this task's attempts (and those of tasks it starts) apart from other runs.

    Several streams share one vendor client and its counters; a scope gives each run
    its own request count.
    """
    tally = RequestTally()
    token = _scope.set(tally)
    try:
        yield tally
    finally:
        _scope.reset(token)


class RequestStats:
    """Counters for one vendor, one entry per attempt (retries and logins included).

    The one place requests are counted: run summaries (``request_scope``), benchmarks and
    the demo read these, and each count is forwarded to ``metrics`` (Prometheus) as made.
    ``peak_per_s`` is the most attempts the client started within any window of
    ``window_s`` (send times, as the client saw them).
    """

    def __init__(
        self,
        vendor: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = 1.0,
        metrics: HttpMetrics | None = None,
    ) -> None:
        self.vendor = vendor
        self.metrics = metrics
        self._clock = clock
        self.window_s = window_s
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_status: TallyCounter[int] = TallyCounter()
        self.errors: TallyCounter[str] = TallyCounter()
        self.retries = 0
        self.abandoned = 0
        self.rate_limited = 0
        self.latency_sum_s = 0.0
        self.latency_max_s = 0.0
        self.wait_sum_s = 0.0
        self.wait_max_s = 0.0
        self.peak_in_flight = 0
        self.peak_per_s = 0
        self._recent: deque[float] = deque()

    def record_send(self, *, wait_s: float, in_flight: int, at: float | None = None) -> None:
        """An attempt left the client after waiting ``wait_s`` for its limiter slot."""
        now = self._clock() if at is None else at
        self.requests += 1
        tally = _scope.get()
        if tally is not None:
            tally.requests += 1
        self.wait_sum_s += wait_s
        self.wait_max_s = max(self.wait_max_s, wait_s)
        self.peak_in_flight = max(self.peak_in_flight, in_flight)
        recent = self._recent
        recent.append(now)
        while recent and now - recent[0] >= self.window_s:
            recent.popleft()
        self.peak_per_s = max(self.peak_per_s, len(recent))
        if self.metrics is not None:
            self.metrics.observe_wait(self.vendor, wait_s)

    def record_outcome(
        self, *, latency_s: float, status: int | None = None, error: str | None = None
    ) -> None:
        """How an attempt ended: an HTTP status, or an error kind (exception class name)."""
        self.latency_sum_s += latency_s
        self.latency_max_s = max(self.latency_max_s, latency_s)
        if status is not None:
            self.by_status[status] += 1
            if status == 429:
                self.rate_limited += 1
        if error is not None:
            self.errors[error] += 1
        if self.metrics is not None:
            outcome = str(status) if status is not None else "error"
            self.metrics.observe_outcome(self.vendor, outcome, latency_s)

    def record_retry(self) -> None:
        self.retries += 1

    def record_abandoned(self) -> None:
        """An attempt we gave up on after sending; the vendor may still be working on it."""
        self.abandoned += 1
        if self.metrics is not None:
            self.metrics.observe_abandoned(self.vendor)

    def snapshot(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "requests": self.requests,
            "by_status": dict(sorted(self.by_status.items())),
            "errors": dict(sorted(self.errors.items())),
            "retries": self.retries,
            "abandoned": self.abandoned,
            "rate_limited": self.rate_limited,
            "latency_sum_s": self.latency_sum_s,
            "latency_max_s": self.latency_max_s,
            "wait_sum_s": self.wait_sum_s,
            "wait_max_s": self.wait_max_s,
            "peak_in_flight": self.peak_in_flight,
            "peak_per_s": self.peak_per_s,
        }


class HttpMetrics:
    """Prometheus collectors for the HTTP layer, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry, *, namespace: str = "vendorsync") -> None:
        self.requests = Counter(
            "http_requests",
            "HTTP attempts by vendor and outcome (status code or error kind).",
            ["vendor", "status"],
            namespace=namespace,
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request sent to body read, per attempt.",
            ["vendor"],
            namespace=namespace,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.limiter_wait = Histogram(
            "http_limiter_wait_seconds",
            "Time spent waiting for a VendorLimiter slot, per attempt.",
            ["vendor"],
            namespace=namespace,
            buckets=WAIT_BUCKETS_S,
            registry=registry,
        )

        self.abandoned = Counter(
            "http_abandoned_requests",
            "Attempts we gave up on after sending (timeout, cancellation); each keeps a "
            "parallel slot until the vendor would have ended it.",
            ["vendor"],
            namespace=namespace,
            registry=registry,
        )
        self.slots = Gauge(
            "http_limiter_slots",
            "Parallel slots taken now: in_flight (ours) or held (abandoned, vendor-side).",
            ["vendor", "state"],
            namespace=namespace,
            registry=registry,
        )

    def watch_limiter(self, vendor: str, limiter: LimiterCounts) -> None:
        """Read the limiter's slot counts at every scrape."""
        self.slots.labels(vendor=vendor, state="in_flight").set_function(lambda: limiter.in_flight)
        self.slots.labels(vendor=vendor, state="held").set_function(lambda: limiter.held)

    def observe_abandoned(self, vendor: str) -> None:
        self.abandoned.labels(vendor=vendor).inc()

    def observe_wait(self, vendor: str, wait_s: float) -> None:
        self.limiter_wait.labels(vendor=vendor).observe(wait_s)

    def observe_outcome(self, vendor: str, outcome: str, latency_s: float) -> None:
        self.requests.labels(vendor=vendor, status=outcome).inc()
        self.latency.labels(vendor=vendor).observe(latency_s)
