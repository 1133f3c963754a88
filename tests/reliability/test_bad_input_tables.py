"""Tables of bad config files and bad command lines: one line each, exit 2, no traceback.

Every case is a real ``vendorsync`` process. The outcome table is printed (``pytest -m long
-s tests/reliability/test_bad_input_tables.py``) for the record.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.long

VENDORSYNC = [sys.executable, "-c", "from service.cli import main; main()"]
BASE = """\
[database]
url = "sqlite+aiosqlite:///{tmp}/vs.db"
[vendors.aimsio]
base_url = "http://127.0.0.1:1/aimsio"
auth = { kind = "basic", username = "u", password = "p" }
[vendors.aimsio.streams]
User = {}
"""
V = "[vendors.aimsio]\n"
A = 'auth = { kind = "basic", username = "u", password = "p" }\n'

# (case, text to find in BASE, its replacement, what the one line must say)
CONFIGS: list[tuple[str, str, str, str]] = [
    ("toml syntax", "[database]", "[database", "invalid TOML"),
    ("unknown top-level key", "[database]", "colour = 1\n[database]", "colour"),
    ("unknown vendor key", V, V + "max_paralel = 3\n", "vendors.aimsio.max_paralel"),
    ("max_parallel 0", V, V + "max_parallel = 0\n", "vendors.aimsio.max_parallel"),
    ("max_parallel text", V, V + 'max_parallel = "ten"\n', "vendors.aimsio.max_parallel"),
    ("rate 0", V, V + "rate_per_s = 0\n", "vendors.aimsio.rate_per_s"),
    ("rate negative", V, V + "rate_per_s = -5\n", "vendors.aimsio.rate_per_s"),
    ("rate inf", V, V + "rate_per_s = inf\n", "vendors.aimsio.rate_per_s"),
    ("timeout 0", V, V + "timeout_s = 0\n", "vendors.aimsio.timeout_s"),
    ("timeout nan", V, V + "timeout_s = nan\n", "vendors.aimsio.timeout_s"),
    ("schedule words", V, V + 'schedule = "often"\n', "vendors.aimsio.schedule"),
    ("cron fields", V, V + 'schedule = "cron: 61 * * * *"\n', "vendors.aimsio.schedule"),
    ("schedule zero", V, V + 'schedule = "every 0m"\n', "vendors.aimsio.schedule"),
    ("blackout shape", V, V + 'blackouts = ["6-7"]\n', "vendors.aimsio.blackouts"),
    ("blackout hour 25", V, V + 'blackouts = ["25:00-26:00"]\n', "vendors.aimsio.blackouts"),
    (
        "base_url scheme",
        'base_url = "http://127.0.0.1:1/aimsio"',
        'base_url = "ftp://x/y"',
        "vendors.aimsio.base_url",
    ),
    (
        "base_url empty",
        'base_url = "http://127.0.0.1:1/aimsio"',
        'base_url = ""',
        "vendors.aimsio.base_url",
    ),
    ("base_url missing", 'base_url = "http://127.0.0.1:1/aimsio"\n', "", "vendors.aimsio.base_url"),
    ("auth kind", A, 'auth = { kind = "magic" }\n', "vendors.aimsio.auth.kind"),
    (
        "basic without password",
        A,
        'auth = { kind = "basic", username = "u" }\n',
        "vendors.aimsio.auth",
    ),
    ("apikey without key", A, 'auth = { kind = "apikey" }\n', "vendors.aimsio.auth"),
    (
        "secret file missing",
        A,
        'auth = { kind = "basic", username = "u", password_file = "/nonexistent/pw" }\n',
        "vendors.aimsio.auth.password_file",
    ),
    (
        "auth unknown key",
        A,
        'auth = { kind = "basic", username = "u", password = "p", pin = 1 }\n',
        "vendors.aimsio.auth.pin",
    ),
    (
        "retry attempts 0",
        V,
        V + "retry = { max_attempts = 0 }\n",
        "vendors.aimsio.retry.max_attempts",
    ),
    ("retry unknown", V, V + "retry = { tries = 3 }\n", "vendors.aimsio.retry.tries"),
    ("stream unknown", "User = {}", "Userz = {}", "Userz"),
    (
        "stream schedule",
        "User = {}",
        'User = { schedule = "sometimes" }',
        "vendors.aimsio.streams.User.schedule",
    ),
    (
        "stream full_every",
        "User = {}",
        'User = { full_every = "never" }',
        "vendors.aimsio.streams.User.full_every",
    ),
    (
        "stream unknown key",
        "User = {}",
        "User = { enabeld = false }",
        "vendors.aimsio.streams.User.enabeld",
    ),
    (
        "streams as list",
        "[vendors.aimsio.streams]\nUser = {}\n",
        'streams = ["User"]\n',
        "vendors.aimsio.streams",
    ),
    (
        "vendor name",
        "[vendors.aimsio.streams]",
        '[vendors."aim sio"]\nbase_url = "http://h"\n[vendors.aimsio.streams]',
        "aim sio",
    ),
    (
        "no connector for vendor",
        "[vendors.aimsio.streams]",
        '[vendors.nosuch]\nbase_url = "http://h"\n[vendors.aimsio.streams]',
        "nosuch",
    ),
    (
        "database url scheme",
        'url = "sqlite+aiosqlite:///{tmp}/vs.db"',
        'url = "mongodb://h/db"',
        "database.url",
    ),
    (
        "database url garbage",
        'url = "sqlite+aiosqlite:///{tmp}/vs.db"',
        'url = "::::"',
        "database.url",
    ),
    ("database unknown key", "[database]", "[database]\npool = 5", "database.pool"),
    ("batch size 0", "[database]", "[sync]\nbatch_size = 0\n[database]", "sync.batch_size"),
    (
        "lease ttl negative",
        "[database]",
        "[sync]\nlease_ttl_s = -1\n[database]",
        "sync.lease_ttl_s",
    ),
    ("daemon port", "[database]", "[daemon]\nport = 70000\n[database]", "daemon.port"),
    ("log level", "[database]", 'log_level = "loud"\n[database]', "log_level"),
    ("push batch 0", "[database]", "[push]\nbatch_size = 0\n[database]", "push.batch_size"),
    (
        "mapping field missing",
        "[database]",
        '[push]\nmappings = [{ source_vendor = "aimsio", source_stream = "User", target_vendor = '
        '"aimsio", entity = "User", fields = {} }]\n[database]',
        "push.mappings.0.key_field",
    ),
    ("options not a table", V, V + 'options = "fast"\n', "vendors.aimsio.options"),
]


def command_lines(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(case, arguments, what the one line must say)."""
    cfg = str(tmp / "good.toml")
    return [
        ("no such command", ["frobnicate"], "No such command"),
        ("no such option", ["status", "--colour"], "No such option"),
        ("resync without vendor", ["resync", "--config", cfg], "Missing argument"),
        ("resync unknown vendor", ["resync", "nosuch", "--config", cfg], "unknown vendor"),
        ("resync unknown stream", ["resync", "aimsio", "Nope", "--config", cfg], "unknown stream"),
        (
            "resync extra argument",
            ["resync", "aimsio", "User", "more", "--config", cfg],
            "unexpected extra argument",
        ),
        ("since garbage", ["resync", "aimsio", "--since", "soon", "--config", cfg], "ISO 8601"),
        (
            "since and full",
            ["resync", "aimsio", "--full", "--since", "2026-01-01", "--config", cfg],
            "exclude each other",
        ),
        ("config missing", ["status", "--config", str(tmp / "nope.toml")], "nope.toml"),
        ("config is a directory", ["status", "--config", str(tmp)], str(tmp)),
        ("config without value", ["status", "--config"], "requires an argument"),
        ("check-config missing file", ["check-config", "--config", str(tmp / "x.toml")], "x.toml"),
        ("push unknown vendor", ["push", "--vendor", "nosuch", "--config", cfg], "unknown vendor"),
        ("enqueue without file", ["push", "enqueue", "--config", cfg], "Missing option"),
        (
            "enqueue missing file",
            ["push", "enqueue", "-f", str(tmp / "none.jsonl"), "--config", cfg],
            "none.jsonl",
        ),
        (
            "enqueue not json",
            ["push", "enqueue", "-f", str(tmp / "bad.jsonl"), "--config", cfg],
            "bad.jsonl:1",
        ),
        (
            "enqueue unknown vendor",
            [
                "push",
                "enqueue",
                "-f",
                str(tmp / "row.jsonl"),
                "--vendor",
                "nosuch",
                "--config",
                cfg,
            ],
            "nosuch",
        ),
        ("sandbox port text", ["sandbox", "--port", "http"], "--port"),
        ("sandbox port range", ["sandbox", "--port", "70000"], "--port"),
        ("sandbox records 0", ["sandbox", "--records", "0"], "--records"),
        ("sandbox negative latency", ["sandbox", "--latency-ms", "-1"], "--latency-ms"),
        ("sandbox seed text", ["sandbox", "--seed", "x"], "--seed"),
        ("run extra argument", ["run", "now", "--config", cfg], "unexpected extra argument"),
        (
            "status extra argument",
            ["status", "aimsio", "--config", cfg],
            "unexpected extra argument",
        ),
        ("migrate unknown option", ["migrate", "--to", "0001"], "No such option"),
        ("demo unknown option", ["demo", "--vendors", "all"], "No such option"),
        ("resync blank vendor", ["resync", "", "--config", cfg], "unknown vendor"),
    ]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    env.pop("VENDORSYNC_CONFIG", None)
    return subprocess.run(
        [*VENDORSYNC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def verdict(proc: subprocess.CompletedProcess[str], needle: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if "Traceback" in proc.stderr:
        return "traceback"
    if proc.returncode != 2:
        return f"exit {proc.returncode}: {proc.stderr.strip()[:120]}"
    if len(lines) != 1:
        return f"{len(lines)} lines: {proc.stderr.strip()[:200]}"
    if needle not in lines[0]:
        return f"does not say {needle!r}: {lines[0][:160]}"
    return "ok"


def table(title: str, rows: list[tuple[str, str, str]]) -> str:
    width = max(len(r[0]) for r in rows)
    out = [f"{title}: {sum(r[1] == 'ok' for r in rows)}/{len(rows)} ok"]
    out += [f"  {case:<{width}}  {result:<10} {line[:100]}" for case, result, line in rows]
    return "\n".join(out)


def test_bad_config_files_are_one_line_naming_the_key(tmp_path: Path) -> None:
    assert len(CONFIGS) >= 40
    files = []
    for i, (_case, old, new, _needle) in enumerate(CONFIGS):
        text = BASE.replace("{tmp}", str(tmp_path))
        assert old.replace("{tmp}", str(tmp_path)) in text, old
        path = tmp_path / f"c{i}.toml"
        path.write_text(text.replace(old.replace("{tmp}", str(tmp_path)), new, 1))
        files.append(path)
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda p: run(["check-config", "--config", str(p)], tmp_path), files))
    rows = []
    for (case, _old, _new, needle), proc in zip(CONFIGS, procs, strict=True):
        result = verdict(proc, needle)
        rows.append(
            (
                case,
                "ok" if result == "ok" else "FAIL",
                result if result != "ok" else proc.stderr.strip(),
            )
        )
    print("\n" + table("bad config files", rows))
    assert [r for r in rows if r[1] != "ok"] == []


def test_bad_command_lines_are_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "good.toml").write_text(BASE.replace("{tmp}", str(tmp_path)))
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    (tmp_path / "row.jsonl").write_text('{"entity": "User", "payload": {"userName": "a"}}\n')
    assert run(["migrate", "--config", str(tmp_path / "good.toml")], tmp_path).returncode == 0
    cases = command_lines(tmp_path)
    assert len(cases) >= 25
    with ThreadPoolExecutor(4) as pool:
        procs = list(pool.map(lambda c: run(c[1], tmp_path), cases))
    rows = []
    for (case, _args, needle), proc in zip(cases, procs, strict=True):
        result = verdict(proc, needle)
        rows.append(
            (
                case,
                "ok" if result == "ok" else "FAIL",
                result if result != "ok" else proc.stderr.strip(),
            )
        )
    print("\n" + table("bad command lines", rows))
    assert [r for r in rows if r[1] != "ok"] == []
