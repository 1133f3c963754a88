"""Per-vendor request stats and Prometheus collectors on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from service.http.metrics import HttpMetrics, RequestStats


def test_request_stats_counts_and_peak_window() -> None:
    now = 0.0
    stats = RequestStats("acme", clock=lambda: now)
    for i in range(25):
        now = i * 0.05  # 20 per second
        stats.record_send(wait_s=0.01 * i, in_flight=1 + i % 3)
        stats.record_outcome(latency_s=0.1, status=200 if i % 5 else 429)
    stats.record_outcome(latency_s=0.5, error="TimeoutError")
    stats.record_retry()
    snap = stats.snapshot()
    assert snap["requests"] == 25
    assert snap["by_status"] == {200: 20, 429: 5}
    assert snap["rate_limited"] == 5
    assert snap["errors"] == {"TimeoutError": 1}
    assert snap["retries"] == 1
    assert snap["peak_in_flight"] == 3
    assert snap["peak_per_s"] == 20  # any 1 s window holds 20 sends at 0.05 s spacing
    assert snap["latency_max_s"] == 0.5
    assert snap["wait_max_s"] == 0.24
    stats.reset()
    assert stats.snapshot()["requests"] == 0
    assert stats.snapshot()["by_status"] == {}


def test_prometheus_collectors_on_given_registry() -> None:
    registry = CollectorRegistry()
    metrics = HttpMetrics(registry)
    metrics.observe_outcome("acme", "200", 0.2)
    metrics.observe_outcome("acme", "error", 1.0)
    metrics.observe_wait("acme", 0.05)
    get = registry.get_sample_value
    assert get("vendorsync_http_requests_total", {"vendor": "acme", "status": "200"}) == 1
    assert get("vendorsync_http_request_duration_seconds_count", {"vendor": "acme"}) == 2
    assert get("vendorsync_http_limiter_wait_seconds_sum", {"vendor": "acme"}) == 0.05
    HttpMetrics(CollectorRegistry())  # a second registry does not clash


def test_abandoned_requests_and_held_slots_are_exported() -> None:
    from types import SimpleNamespace

    registry = CollectorRegistry()
    metrics = HttpMetrics(registry)
    limiter = SimpleNamespace(in_flight=3, held=2)
    metrics.watch_limiter("acme", limiter)
    metrics.observe_abandoned("acme")
    get = registry.get_sample_value
    assert get("vendorsync_http_abandoned_requests_total", {"vendor": "acme"}) == 1
    assert get("vendorsync_http_limiter_slots", {"vendor": "acme", "state": "held"}) == 2
    limiter.held = 0  # read at each scrape
    assert get("vendorsync_http_limiter_slots", {"vendor": "acme", "state": "held"}) == 0
    assert get("vendorsync_http_limiter_slots", {"vendor": "acme", "state": "in_flight"}) == 3
    stats = RequestStats("acme")
    stats.record_abandoned()
    assert stats.snapshot()["abandoned"] == 1
