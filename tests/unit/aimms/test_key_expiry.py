"""A credential's expiry in config (AIMMS PRO keys live at most a year) is warned about
30 days ahead by check-config, status and the daemon (``expiry_warnings``)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from typer.testing import CliRunner

from service.cli import app
from service.config import Settings, config_warnings, expiry_warnings

TODAY = date(2026, 12, 2)


def settings(expires: str | None, enabled: bool = True) -> Settings:
    auth = {"kind": "apikey", "api_key": "k", **({"expires": expires} if expires else {})}
    return Settings(
        vendors={
            "aimms": {"base_url": "http://127.0.0.1:1/aimms", "enabled": enabled, "auth": auth}
        }
    )


def test_no_expiry_or_far_away_warns_nothing() -> None:
    assert expiry_warnings(settings(None), TODAY) == []
    assert expiry_warnings(settings("2027-06-30"), TODAY) == []


def test_within_30_days_and_expired_are_warned() -> None:
    (soon,) = expiry_warnings(settings("2026-12-20"), TODAY)
    assert "vendors.aimms.auth.expires" in soon
    assert "in 18 days" in soon
    (gone,) = expiry_warnings(settings("2026-12-01"), TODAY)
    assert "expired on 2026-12-01" in gone
    assert expiry_warnings(settings("2026-12-20", enabled=False), TODAY) == []


def test_check_config_and_status_print_the_warning(tmp_path: Path) -> None:
    soon = date.today().toordinal() + 10
    cfg = tmp_path / "vs.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/vs.db"\n'
        '[vendors.aimms]\nbase_url = "http://127.0.0.1:1/aimms"\n'
        f'auth = {{ kind = "apikey", api_key = "k", expires = "{date.fromordinal(soon)}" }}\n'
        "[vendors.aimms.streams]\napplications = {}\n"
    )
    assert any("in 10 days" in w for w in config_warnings(Settings.model_validate(
        {"vendors": {"aimms": {"base_url": "http://127.0.0.1:1/aimms", "auth": {
            "kind": "apikey", "api_key": "k", "expires": date.fromordinal(soon)}}}}
    )))  # fmt: skip
    result = CliRunner().invoke(app, ["check-config", "--config", str(cfg)])
    assert "in 10 days" in result.output, result.output
    assert CliRunner().invoke(app, ["migrate", "--config", str(cfg)]).exit_code == 0
    status = CliRunner().invoke(app, ["status", "--config", str(cfg)])
    assert status.exit_code == 0, status.output
    assert "in 10 days" in status.output, status.output
    as_json = CliRunner().invoke(app, ["status", "--config", str(cfg), "--json"])
    assert "in 10 days" in as_json.output, as_json.output
