"""A failed run's error is one stderr line however long (the vendor-faults matrix found a
refused connection's message wrapped over two lines when stderr is a pipe)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from service.cli import app


def test_a_long_run_error_stays_one_line(tmp_path: Path) -> None:
    path = "/aimms/" + "x" * 180  # a long URL: the error line runs past 200 columns
    cfg = tmp_path / "vs.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/vs.db"\n'
        f'[vendors.aimms]\nbase_url = "http://127.0.0.1:1{path}"\n'
        'auth = { kind = "apikey", api_key = "k" }\n'
        "retry = { max_attempts = 1 }\n"
        "[vendors.aimms.streams]\napplications = {}\n"
    )
    assert CliRunner().invoke(app, ["migrate", "--config", str(cfg)]).exit_code == 0
    result = CliRunner().invoke(app, ["resync", "aimms", "--config", str(cfg)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("applications:")]
    assert len(lines) == 1, result.stderr
    assert len(lines[0]) > 200
    assert path in lines[0]
    assert lines[0].rstrip().endswith("]"), result.stderr  # the message's end, same line
