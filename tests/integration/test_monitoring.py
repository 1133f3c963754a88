"""deploy/monitoring/: the alert rules and Grafana dashboard load, and every metric they
query is served by a running daemon's /metrics."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa
import yaml

from sandbox.server import RunningSandbox
from service.daemon.scheduler import Daemon
from service.db import create_engine, migrate
from service.db.tables import push_outbox, sync_run
from service.engine.freshness import LATE_FACTOR
from tests.integration.test_daemon import daemon_settings, sandbox, wait_for

__all__ = ["sandbox"]  # fixture

MONITORING = Path("deploy/monitoring")
METRIC = re.compile(r"\b(vendorsync_[a-z0-9_]+)")
PROMETHEUS_OWN = {"up"}  # Prometheus's own series: not ours to serve


def promtool() -> str:
    found = subprocess.run(
        ["scripts/promtool-up.sh"], capture_output=True, text=True, timeout=300, check=False
    )
    if found.returncode != 0:
        pytest.fail(f"promtool unavailable: {found.stderr.strip()}", pytrace=False)
    return found.stdout.strip().splitlines()[-1]


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (MONITORING / "grafana/dashboards/vendorsync.json").read_text()
    )
    return data


def queried_metrics() -> set[str]:
    exprs = [r["expr"] for r in rules()]
    exprs += [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]
    return {m for e in exprs for m in METRIC.findall(e)}


def test_promtool_accepts_the_rules_and_the_config() -> None:
    tool = promtool()
    checked = subprocess.run(
        [tool, "check", "rules", str(MONITORING / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    config = subprocess.run(
        [tool, "check", "config", "--syntax-only", str(MONITORING / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert config.returncode == 0, config.stdout + config.stderr


def test_alerts_cover_what_operators_need() -> None:
    by_name = {r["alert"]: r for r in rules()}
    assert set(by_name) >= {
        "VendorsyncStreamLate",
        "VendorsyncStreamFailing",
        "VendorsyncDeadLetters",
        "VendorsyncRateLimited",
    }
    late = by_name["VendorsyncStreamLate"]["expr"]
    assert f"> {LATE_FACTOR:g} * " in late  # the status page's "late", same factor
    assert 'status="429"' in by_name["VendorsyncRateLimited"]["expr"]
    for rule in by_name.values():
        assert rule["annotations"]["summary"]


def test_dashboard_and_provisioning_load() -> None:
    dash = dashboard()
    assert dash["uid"] == "vendorsync"
    titles = {p["title"] for p in dash["panels"]}
    for needed in (
        "Requests by vendor and status",
        "429s by vendor",
        "Limiter wait (p95)",
        "Rows by operation",
        "Run duration (p95)",
        "Run results",
        "Lag per stream",
        "Outbox backlog",
        "Dead letters",
    ):
        assert needed in titles
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    source = yaml.safe_load(
        (MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    (ds,) = source["datasources"]
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == ds["uid"]
    provider = yaml.safe_load(
        (MONITORING / "grafana/provisioning/dashboards/vendorsync.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load(Path("docker-compose.yaml").read_text())
    for service in ("prometheus", "grafana"):
        assert compose["services"][service]["profiles"] == ["monitoring"]


def served(metrics_text: str) -> set[str]:
    """Names with at least one sample (``_total``, ``_bucket`` … as exposed)."""
    names = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


async def test_every_queried_metric_is_served_by_a_running_daemon(
    tmp_path: Path, sandbox: RunningSandbox
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    engine = create_engine(url)
    await migrate(engine)
    async with engine.begin() as conn:  # a dead letter, so the outbox series exist
        await conn.execute(
            sa.insert(push_outbox).values(
                vendor="aimsio", entity="User", record_key="k", payload={}, status="dead"
            )
        )
    daemon = Daemon(daemon_settings(url, sandbox))
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:

        async def both_done() -> bool:
            async with engine.connect() as conn:
                done = await conn.execute(
                    sa.select(sync_run.c.stream).where(sync_run.c.status == "succeeded")
                )
                return {r.stream for r in done} == {"User", "Employee"}

        await wait_for(both_done)
        assert daemon.health_url is not None
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{daemon.health_url}/metrics") as r,
        ):
            text = await r.text()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await engine.dispose()
    have = served(text)
    wanted = queried_metrics() - PROMETHEUS_OWN
    assert len(wanted) >= 12
    assert wanted - have == set(), f"queried but not served: {sorted(wanted - have)}"
    assert "vendorsync_outbox_dead_letters 1.0" in text
    assert 'vendorsync_stream_failing{stream="User",vendor="aimsio"} 0.0' in text
    assert 'vendorsync_stream_schedule_seconds{stream="User",vendor="aimsio"} 3600.0' in text
