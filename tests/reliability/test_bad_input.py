"""Bad input meets one clear line and exit 2, at check time; data is never rich markup.

Real processes against a temp config, as a user meets them; database cases on both backends.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from service.db import create_engine
from tests.reliability.test_cli import one_line_error, project, run, sandbox_url

__all__ = ["project", "sandbox_url"]  # fixtures shared with test_cli

BASE = """
[database]
url = "sqlite+aiosqlite:///{tmp}/vs.db"
[vendors.aimsio]
base_url = "http://127.0.0.1:1/aimsio"
auth = { kind = "basic", username = "u", password = "p" }
[vendors.aimsio.streams]
User = {}
"""
VENDOR = 'base_url = "http://127.0.0.1:1/aimsio"'
DB = 'url = "sqlite+aiosqlite:///{tmp}/vs.db"'


def config(tmp_path: Path, *changes: tuple[str, str], db_url: str | None = None) -> Path:
    def fill(t: str) -> str:
        return t.replace("{tmp}", str(tmp_path))

    text = fill(BASE)
    if db_url is not None:
        text = text.replace(fill(DB), f'url = "{db_url}"')
    for old, new in changes:
        assert fill(old) in text, old
        text = text.replace(fill(old), fill(new))
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ((VENDOR, VENDOR + '\nschedule = "every 99999999999999h"'), "vendors.aimsio.schedule:"),
        ((VENDOR, VENDOR + "\ntimeout_s = inf"), "vendors.aimsio.timeout_s:"),
        ((VENDOR, VENDOR + "\ntimeout_s = 1e12"), "vendors.aimsio.timeout_s:"),
        ((VENDOR, VENDOR + "\nrate_per_s = 1e-300"), "vendors.aimsio.rate_per_s:"),
        ((VENDOR, VENDOR + "\nrate_per_s = nan"), "vendors.aimsio.rate_per_s:"),
        ((VENDOR, VENDOR + "\noptions = { x = { y = -nan } }"), "vendors.aimsio.options.x.y:"),
        (("[vendors.aimsio]", "[sync]\nlease_ttl_s = nan\n[vendors.aimsio]"), "sync.lease_ttl_s:"),
        ((DB, 'url = "mysql://u@h/db"'), "database.url: unsupported database 'mysql'"),
        ((DB, 'url = "not a database url"'), "database.url: not a database URL"),
        ((DB, 'url = "postgresql+asyncpg://u:pw@h:port/db"'), "database.url: bad port"),
        ((DB, 'url = "sqlite://relative.db"'), "database.url: a SQLite URL needs three slashes"),
        (
            (DB, 'url = "sqlite+aiosqlite:///{tmp}"'),
            "database.url: the SQLite database path is a directory",
        ),
        ((DB, 'url = "postgresql://u:p@ss@h/db"'), "database.url: the password contains '@'"),
        ((VENDOR, 'base_url = "http://127.0.0.1:1/aimsio v2"'), "vendors.aimsio.base_url:"),
        ((VENDOR, 'base_url = "http://127.0.0.1:99999/x"'), "vendors.aimsio.base_url:"),
        (
            ("User = {}", "User = {}\nuser = {}"),
            "vendors.aimsio.streams: streams 'User' and 'user' differ only in case",
        ),
    ],
)
def test_check_config_rejects_naming_the_key(
    tmp_path: Path, change: tuple[str, str], needle: str
) -> None:
    proc = run("check-config", "--config", str(config(tmp_path, change)), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert line.startswith("error: config: "), line
    assert needle in line
    assert "ss@h" not in line  # the password is not echoed either


def test_binary_and_empty_files(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b"log_level = 'info'\n\x89PNG\r\n\x1a\n\x00\xff\xfe")
    proc = run("check-config", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{cfg}:2: not UTF-8 text (byte 0x89)" in one_line_error(proc)
    for text in ("", "\n  \n", "# only a comment\n"):
        cfg.write_text(text)
        proc = run("check-config", "--config", str(cfg), cwd=tmp_path)
        assert proc.returncode == 2
        assert "config file is empty" in one_line_error(proc)


def test_nan_from_the_environment(tmp_path: Path) -> None:
    proc = run(
        "check-config",
        "--config",
        str(config(tmp_path)),
        cwd=tmp_path,
        env={"VENDORSYNC_VENDORS__AIMSIO__RATE_PER_S": "nan"},
    )
    assert proc.returncode == 2
    assert "vendors.aimsio.rate_per_s: " in one_line_error(proc)


def test_other_commands_reject_at_load(tmp_path: Path) -> None:
    cfg = config(tmp_path, (DB, 'url = "mysql://u@h/db"'))
    for args in (("status",), ("migrate",), ("resync", "aimsio"), ("push", "--dry-run")):
        proc = run(*args, "--config", str(cfg), cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "database.url: unsupported database 'mysql'" in one_line_error(proc)


def test_check_config_lists_every_error(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        (VENDOR, VENDOR + "\nmax_parallel = 0\nrate_per_s = inf"),
        (DB, 'url = "mysql://u@h/db"'),
    )
    proc = run("check-config", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3, proc.stderr
    for key in ("database.url", "vendors.aimsio.max_parallel", "vendors.aimsio.rate_per_s"):
        assert any(line.startswith(f"error: config: {key}: ") for line in lines), proc.stderr
    status = run("status", "--config", str(cfg), cwd=tmp_path)  # others: first + count
    assert "(and 2 more)" in one_line_error(status)


def test_short_timeout_is_a_warning(tmp_path: Path) -> None:
    cfg = config(tmp_path, (VENDOR, VENDOR + "\ntimeout_s = 5\nvendor_timeout_s = 30"))
    proc = run("check-config", "--show", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("warning: vendors.aimsio.timeout_s: 5s is below vendor_timeout_s")
    assert json.loads(proc.stdout)["vendors"]["aimsio"]["timeout_s"] == 5
    fine = config(tmp_path, (VENDOR, VENDOR + "\ntimeout_s = 30\nvendor_timeout_s = 30"))
    assert run("check-config", "--config", str(fine), cwd=tmp_path).stderr == ""


def test_check_config_never_prints_url_secrets(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        (VENDOR, 'base_url = "http://api:basesecret@127.0.0.1:1/aimsio"'),
        (DB, 'url = "postgresql+asyncpg://app@db.test/vs?password=dbsecret"'),
    )
    proc = run("check-config", "--show", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "basesecret" not in proc.stdout + proc.stderr
    assert "dbsecret" not in proc.stdout + proc.stderr
    encoded = config(tmp_path, (DB, 'url = "postgresql://u:p%40ss@h/db"'))
    proc = run("check-config", "--show", "--config", str(encoded), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "p%40ss" not in proc.stdout


# --- push enqueue ---------------------------------------------------------------------------

GOOD = {
    "userName": "a@x",
    "userFirstName": "A",
    "userLastName": "B",
    "userRoleNames": ["Field Worker"],
    "userIsActive": True,
}


def good_line(**extra: object) -> bytes:
    row = {"vendor": "aimsio", "entity": "User", "payload": {**GOOD, **extra}}
    return json.dumps(row).encode()


BAD_ROWS: list[tuple[bytes, str]] = [
    (b'{"vendor": "aimsio", "entity": "User", "payload": {"userName": "b\xff"}}', "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (good_line(deep=json.loads("[" * 150 + "]" * 150)), "nested deeper than 100 levels"),
    (good_line(userName="k" * 513), "the key is 513 characters long; at most 512"),
    (good_line(x=1).replace(b'"x": 1', b'"x": NaN'), "NaN is not valid JSON"),
    (good_line(x=1).replace(b'"x": 1', b'"x": -Infinity'), "-Infinity is not valid JSON"),
    (good_line(x=1).replace(b'"x": 1', b'"x": 1e999'), "out of range"),
    (good_line(userFirstName="A\u0000B"), "NUL"),
    (good_line(x=1).replace(b'"x": 1', b'"x": "\\ud800"'), "unpaired surrogate"),
    (
        json.dumps({"vendor": ["aimsio"], "entity": "User", "payload": GOOD}).encode(),
        "must be strings",
    ),
]


async def outbox_rows(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        async with engine.connect() as conn:
            return int(
                (await conn.execute(sa.text("SELECT count(*) FROM push_outbox"))).scalar_one()
            )
    finally:
        await engine.dispose()


async def test_bad_rows_are_one_line_and_nothing_is_enqueued(tmp_path: Path, db_url: str) -> None:
    cfg = str(config(tmp_path, db_url=db_url))
    migrated = await asyncio.to_thread(run, "migrate", "--config", cfg, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    rows = tmp_path / "rows.jsonl"
    for bad, needle in BAD_ROWS:
        # A good row first: all or none.
        rows.write_bytes(good_line(userName="first@x") + b"\n" + bad + b"\n")
        proc = await asyncio.to_thread(
            run, "push", "enqueue", "--file", str(rows), "--config", cfg, cwd=tmp_path
        )
        assert proc.returncode == 2, (needle, proc.stderr[-2000:])
        line = one_line_error(proc)
        assert line.startswith(f"error: {rows}:2: "), line
        assert needle in line
    assert await outbox_rows(db_url) == 0
    # The same file without the bad line goes in (the checks do not reject good rows).
    rows.write_bytes(
        good_line(userName="first@x") + b"\n" + good_line(note="\u00e9 \u2603") + b"\n"
    )
    ok = await asyncio.to_thread(
        run, "push", "enqueue", "--file", str(rows), "--config", cfg, cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stderr
    assert await outbox_rows(db_url) == 2


# --- rich markup ----------------------------------------------------------------------------


def test_markup_in_arguments_is_printed_as_is(project: Path) -> None:
    assert run("migrate", cwd=project).returncode == 0
    proc = run("resync", "[/x]", cwd=project)
    assert proc.returncode == 2
    assert "unknown vendor '[/x]'" in one_line_error(proc)
    proc = run("resync", "aimsio", "[bold]User[/x]", cwd=project)
    assert proc.returncode == 2
    assert "'[bold]User[/x]'" in one_line_error(proc)


def test_markup_in_pushed_data_is_printed_as_is(project: Path) -> None:
    assert run("migrate", cwd=project).returncode == 0
    rows = project / "rows.jsonl"
    rows.write_bytes(good_line(userShortCode="[/x]", userFirstName="[red]A") + b"\n")
    assert run("push", "enqueue", "--file", str(rows), cwd=project).returncode == 0
    pushed = run("push", cwd=project)
    assert pushed.returncode == 1, pushed.stderr  # the row is invalid, and push says so
    assert "Traceback" not in pushed.stderr
    assert "[/x]" in pushed.stdout  # the rejection reason names the value
    status = run("status", cwd=project)
    assert status.returncode == 0, status.stderr
    assert "[/x]" in status.stdout
    assert "Traceback" not in status.stderr
