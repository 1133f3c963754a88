"""Per-vendor request counters: what a compliant client may and may not do."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

WINDOW_S = 1.0
MAX_VIOLATIONS_KEPT = 200


@dataclass
class VendorStats:
    """Counts requests, peak concurrency and the busiest one-second window.

    ``max_parallel`` and ``rate_per_s`` are the vendor's documented caps; a request that
    arrives while the caps are already reached is a *violation*: a compliant client
    would never have sent it, whatever the server then does with it.
    """

    max_parallel: int | None = None
    rate_per_s: float | None = None
    requests: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    max_per_s: int = 0
    rate_limited: int = 0  # 429s produced
    timeouts: int = 0  # overload timeouts produced
    errors_injected: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0
    first_arrival_s: float | None = None  # monotonic, for rates over a measured span
    last_arrival_s: float | None = None
    _arrivals: deque[float] = field(default_factory=deque, repr=False)

    def arrive(self, path: str, now: float | None = None) -> None:
        """Record a request arriving (before any queueing or limiting)."""
        t = time.monotonic() if now is None else now
        self.requests += 1
        if self.first_arrival_s is None:
            self.first_arrival_s = t
        self.last_arrival_s = t
        arrivals = self._arrivals
        while arrivals and t - arrivals[0] >= WINDOW_S:
            arrivals.popleft()
        if self.rate_per_s is not None and len(arrivals) >= self.rate_per_s:
            gaps = ",".join(
                f"{(b - a) * 1000:.0f}" for a, b in zip(arrivals, [*arrivals][1:], strict=False)
            )
            self._violate(
                f"rate: request {self.requests} ({path}) was #{len(arrivals) + 1} in 1 s "
                f"(over {t - arrivals[0]:.3f} s; gaps ms {gaps},{(t - arrivals[-1]) * 1000:.0f})"
            )
        if self.max_parallel is not None and self.in_flight >= self.max_parallel:
            self._violate(
                f"parallel: request {self.requests} ({path}) arrived with {self.in_flight} in flight"
            )
        arrivals.append(t)
        self.max_per_s = max(self.max_per_s, len(arrivals))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def depart(self, status: int) -> None:
        self.in_flight -= 1
        self.by_status[status] = self.by_status.get(status, 0) + 1

    def _violate(self, what: str) -> None:
        self.violation_count += 1
        if len(self.violations) < MAX_VIOLATIONS_KEPT:
            self.violations.append(what)

    def reset(self) -> None:
        in_flight = self.in_flight
        fresh = VendorStats(max_parallel=self.max_parallel, rate_per_s=self.rate_per_s)
        self.__dict__.update(fresh.__dict__)
        self.in_flight = in_flight  # requests still running keep their slot

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "max_per_s": self.max_per_s,
            "rate_limited": self.rate_limited,
            "timeouts": self.timeouts,
            "errors_injected": self.errors_injected,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "violation_count": self.violation_count,
            "arrival_span_s": (
                self.last_arrival_s - self.first_arrival_s
                if self.first_arrival_s is not None and self.last_arrival_s is not None
                else None
            ),
            "violations": list(self.violations),
            "caps": {"max_parallel": self.max_parallel, "rate_per_s": self.rate_per_s},
        }
