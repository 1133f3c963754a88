"""Freshness judgement and schedule maths: pure, on a fixed clock; the admin token setting."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings, effective_config
from service.engine.freshness import judge, next_run_at, period_s

NOW = datetime(2026, 12, 2, 10, 7, tzinfo=UTC)


def test_period_of_interval_and_cron() -> None:
    assert period_s("every 15m", NOW) == 900
    assert period_s("*/5 * * * *", NOW) == 300
    assert period_s("0 6 * * *", NOW) == 86400


def test_next_run() -> None:
    assert next_run_at("every 15m", NOW, None) == NOW
    started = NOW - timedelta(minutes=5)
    assert next_run_at("every 15m", NOW, started) == started + timedelta(minutes=15)
    assert next_run_at("every 15m", NOW, NOW - timedelta(hours=1)) == NOW  # overdue: now
    assert next_run_at("*/5 * * * *", NOW, None) == NOW.replace(minute=10)


def test_judge() -> None:
    def j(status: str | None, success_ago_s: float | None, first_ago_s: float | None = None) -> str:
        return judge(
            period=900,
            last_status=status,
            last_success_at=None
            if success_ago_s is None
            else NOW - timedelta(seconds=success_ago_s),
            first_seen_at=None if first_ago_s is None else NOW - timedelta(seconds=first_ago_s),
            now=NOW,
        )

    assert j("succeeded", 60) == "fresh"
    assert j("succeeded", 1800) == "fresh"  # exactly two periods: not yet late
    assert j("succeeded", 1801) == "late"
    assert j("running", 60) == "fresh"
    assert j("failed", 60) == "failing"
    assert j("abandoned", 60) == "failing"
    assert j("cancelled", 60) == "fresh"  # a shutdown is no failure
    assert j(None, None) == "never"
    assert j("running", None, first_ago_s=60) == "never"
    assert j("running", None, first_ago_s=3600) == "late"  # never succeeded, for too long


def test_admin_token_is_a_masked_secret(tmp_path: Path) -> None:
    token = "s3cret-admin-token-value"
    settings = Settings.model_validate({"daemon": {"admin_token": token}, "vendors": {}})
    assert token not in json.dumps(effective_config(settings))
    assert token not in repr(settings)
    (tmp_path / "token").write_text(token + "\n")
    from_file = Settings.model_validate(
        {"daemon": {"admin_token_file": str(tmp_path / "token")}, "vendors": {}}
    )
    assert from_file.daemon.admin_token is not None
    assert from_file.daemon.admin_token.get_secret_value() == token
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings.model_validate({"daemon": {"admin_token": "short"}, "vendors": {}})
