"""Prometheus collectors for runs, records and the outbox, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.models import RunResult


class DaemonMetrics:
    def __init__(self, registry: CollectorRegistry, namespace: str = "vendorsync") -> None:
        self.runs = Counter(
            "runs",
            "Stream runs by result.",
            ["vendor", "stream", "status"],
            namespace=namespace,
            registry=registry,
        )
        self.records = Counter(
            "records",
            "Staged records by operation.",
            ["vendor", "stream", "op"],
            namespace=namespace,
            registry=registry,
        )
        self.run_duration = Histogram(
            "run_duration_seconds",
            "Stream run duration.",
            ["vendor", "stream"],
            namespace=namespace,
            registry=registry,
            buckets=(0.5, 1, 5, 15, 60, 300, 900, 3600),
        )
        self.last_success = Gauge(
            "last_success_timestamp_seconds",
            "Unix time of the last successful run.",
            ["vendor", "stream"],
            namespace=namespace,
            registry=registry,
        )
        self.group_assigned = Gauge(
            "group_assigned",
            "1 while this replica schedules the limit group, else 0.",
            ["group"],
            namespace=namespace,
            registry=registry,
        )
        self.replicas_live = Gauge(
            "replicas_live",
            "Live daemon replicas sharing the limit groups (as of the last round).",
            namespace=namespace,
            registry=registry,
        )
        self.outbox = Gauge(
            "outbox_rows",
            "Push outbox rows by status.",
            ["vendor", "entity", "status"],
            namespace=namespace,
            registry=registry,
        )

    def observe_run(self, result: RunResult, finished_at_s: float) -> None:
        labels = {"vendor": result.vendor, "stream": result.stream}
        self.runs.labels(status=result.status, **labels).inc()
        c = result.counts
        for op, n in (
            ("inserted", c.inserted),
            ("updated", c.updated),
            ("unchanged", c.unchanged),
            ("deleted", c.deleted),
            ("invalid", c.invalid),
        ):
            if n:
                self.records.labels(op=op, **labels).inc(n)
        self.run_duration.labels(**labels).observe(result.duration_s)
        if result.status == "succeeded":
            self.last_success.labels(**labels).set(finished_at_s)

    def set_outbox(self, rows: list[dict[str, object]]) -> None:
        self.outbox.clear()
        for r in rows:
            self.outbox.labels(
                vendor=str(r["vendor"]), entity=str(r["entity"]), status=str(r["status"])
            ).set(float(r["n"]))  # type: ignore[arg-type]
