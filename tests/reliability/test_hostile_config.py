"""Hostile config values: SQL fragments, ``&?#%`` that could add query parameters, CRLF that
could add headers. Each is either refused by ``check-config`` (one line naming the key,
exit 2, the value's payload not echoed) or passed safely: the sandbox receives it encoded
(its request log shows the raw target) and the staging database stays intact.

The outcome table prints with ``pytest -m long -s tests/reliability/test_hostile_config.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest

from sandbox.app import SandboxOptions
from sandbox.server import start_sandbox
from tests.reliability.conftest import VENDORSYNC, cli_env

pytestmark = pytest.mark.long

SQL = "'; DROP TABLE staged_record; --"
CRLF = "\\r\\nX-Injected: 1"  # as written in TOML: a real CR LF once parsed
DB = '[database]\nurl = "sqlite+aiosqlite:///{tmp}/vs.db"\n'
AIMSIO = """\
[vendors.aimsio]
base_url = "http://127.0.0.1:1/aimsio"
auth = { kind = "basic", username = "u", password = "p" }
"""
AMILIA = """\
[vendors.amilia]
base_url = "http://127.0.0.1:1/amilia"
auth = { kind = "basic_jwt", username = "u@x.test", password = "p" }
streams = { accounts = {} }
"""
IMIS = """\
[vendors.imis]
base_url = "http://127.0.0.1:1/imis"
auth = { kind = "password_grant", username = "u", password = "p" }
"""
AIMMS = """\
[vendors.aimms]
base_url = "http://127.0.0.1:1/aimms"
auth = { kind = "apikey", api_key = "k" }
"""
TASK = 'app = "A", service = "S", key = "id"'

# (case, config after [database], the key the one line must name)
REJECTED: list[tuple[str, str, str]] = [
    ("vendor name: SQL", AIMSIO.replace("aimsio]", f'"x{SQL}"]') + 'streams = { User = {} }\n',
     "vendors"),
    ("vendor name: ?&", AIMSIO.replace("aimsio]", '"aimsio?x=1&y"]') + "streams = {}\n",
     "vendors"),
    ("limit_group: SQL", AIMSIO + f'limit_group = "g{SQL}"\n', "vendors.aimsio.limit_group"),
    ("connector: query", AIMSIO + 'connector = "aimsio?x=1"\n', "vendors.aimsio.connector"),
    ("base_url: query", AIMSIO.replace("/aimsio\"", '/aimsio?limit=1"'),
     "vendors.aimsio.base_url"),
    ("base_url: fragment", AIMSIO.replace("/aimsio\"", '/aimsio#x"'), "vendors.aimsio.base_url"),
    ("base_url: CRLF", AIMSIO.replace("/aimsio\"", f'/aimsio{CRLF}"'),
     "vendors.aimsio.base_url"),
    ("password: CRLF", AIMSIO.replace('password = "p"', f'password = "p{CRLF}"'),
     "vendors.aimsio.auth.password"),
    ("username: CRLF", AIMSIO.replace('username = "u"', f'username = "u{CRLF}"'),
     "vendors.aimsio.auth.username"),
    ("token_path: CRLF", AMILIA.replace("}\nstreams", f', token_path = "/t{CRLF}" }}\nstreams'),
     "vendors.amilia.auth.token_path"),
    ("api key header name", AIMMS.replace('"k" }', '"k", header = "apikey: x" }'),
     "vendors.aimms.auth.header"),
    ("api_key: CRLF", AIMMS.replace('"k" }', f'"k{CRLF}" }}'), "vendors.aimms.auth.api_key"),
    ("api_key_file: CRLF", AIMMS.replace('api_key = "k"', 'api_key_file = "{tmp}/key"'),
     "vendors.aimms.auth.api_key_file"),
    ("stream name: LF", AIMSIO + '[vendors.aimsio.streams]\n"User\\nX" = {}\n',
     "vendors.aimsio.streams"),
    ("stream name: SQL (Aimsio)", AIMSIO + f'[vendors.aimsio.streams]\n"User{SQL}" = {{}}\n',
     "vendors.aimsio.streams.User"),
    ("Amilia org: query", AMILIA + 'options = { org = "8008?perPage=1&x" }\n',
     "vendors.amilia.options.org"),
    ("Amilia org: path", AMILIA + 'options = { org = "8008/../../v2" }\n',
     "vendors.amilia.options.org"),
    ("Amilia org: %", AMILIA + 'options = { org = "8008%2F" }\n', "vendors.amilia.options.org"),
    ("Amilia origin: CRLF", AMILIA + f'options = {{ origin = "me{CRLF}" }}\n',
     "vendors.amilia.options.origin"),
    ("iMIS filter: &", IMIS + 'streams = { Party = { options = { filters = '
     '{ LastName = "eq:a&limit=1" } } } }\n', "vendors.imis.streams.Party.options.filters"),
    ("iMIS filter: #", IMIS + 'streams = { Party = { options = { filters = '
     '{ LastName = "eq:a#x" } } } }\n', "vendors.imis.streams.Party.options.filters"),
    ("iMIS filter property: SQL", IMIS + 'streams = { Party = { options = { filters = '
     f'{{ "Last{SQL}" = "eq:a" }} }} }} }}\n', "vendors.imis.streams.Party.options.filters"),
    ("iMIS IQA query: &", IMIS + 'streams = { Q = { options = { query = "$/Q&limit=1", '
     'key = "ID" } } }\n', "vendors.imis.streams.Q.options.query"),
    ("AIMMS content_type: CRLF", AIMMS + f'streams = {{ X = {{ options = {{ {TASK}, '
     f'content_type = "a/b{CRLF}" }} }} }}\n', "vendors.aimms.streams.X.options.content_type"),
]  # fmt: skip


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VENDORSYNC, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=60
    )


def check_rejected(case: str, body: str, key: str, tmp: Path) -> str:
    """'' when refused as promised, else what went wrong."""
    where = tmp / case.replace(" ", "_").replace(":", "").replace("(", "").replace(")", "")
    where.mkdir()
    (where / "key").write_text("k\r\nX-Injected: 1\n")
    cfg = where / "c.toml"
    cfg.write_text((DB + body).replace("{tmp}", str(where)))
    proc = run(["check-config", "-c", str(cfg)], where)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode != 2:
        return f"exit {proc.returncode}: {proc.stderr[-300:]}"
    if "Traceback" in proc.stderr or len(lines) != 1:
        return f"{len(lines)} lines: {proc.stderr[-300:]}"
    if key not in lines[0]:
        return f"does not name {key}: {lines[0]}"
    if "\r" in proc.stderr:
        return f"a raw CR on stderr: {proc.stderr!r}"
    if any(s in key for s in ("password", "api_key", "secret")) and "X-Injected" in lines[0]:
        return f"echoes the secret: {lines[0]}"
    return ""


def test_hostile_values_are_refused_with_one_line(tmp_path: Path) -> None:
    def verdict(case: tuple[str, str, str]) -> tuple[str, str]:
        return case[0], check_rejected(*case, tmp_path)

    with ThreadPoolExecutor(max_workers=3) as pool:
        verdicts = list(pool.map(verdict, REJECTED))
    print(f"\n{'hostile value':<32} outcome")
    for case, problem in verdicts:
        print(f"{case:<32} {problem or 'refused: exit 2, one line, key named'}")
    bad = [f"{case}: {problem}" for case, problem in verdicts if problem]
    assert not bad, "\n".join(bad)


# --- accepted values reach the vendor encoded; the database stays intact ----------------------

HOSTILE = f"?limit=1&offset=999#x %2F+{SQL}"
AQUA_STREAM = f"Orders{SQL}"


def tables(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(db)) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


async def test_accepted_hostile_values_are_sent_encoded_and_stored_safely(tmp_path: Path) -> None:
    vendors: dict[str, Any] = {
        "aqua": {"queued_s": 0.05, "run_s": 0.1},
        "aimms": {"task_phases_s": {"assigned": 0.02, "running": 0.05, "solving": 0.05}},
    }
    sb = await start_sandbox(
        SandboxOptions(records=25, seed=3, vendors=vendors), vendors=("aqua", "imis", "aimms")
    )
    try:
        imis_param = "ne:" + HOSTILE.replace("&", "").replace("#", "").replace("=", "")
        cfg = tmp_path / "c.toml"
        cfg.write_text(
            f"""\
log_format = "json"
[database]
url = "sqlite+aiosqlite:///{tmp_path}/vs.db"

[vendors.aqua]
base_url = "{sb.url("aqua")}"
retry = {{ max_attempts = 2, base_s = 0.05 }}
auth = {{ kind = "password_grant", client_id = "aqua-demo-client", \
client_secret = "aqua-demo-secret", username = "demo@aims360.test", password = "demo-secret" }}
[vendors.aqua.streams.{_toml(AQUA_STREAM)}]
options = {{ source = "Orders", view = "All orders", key = "Order No", poll_min_s = 0.02, \
poll_max_s = 0.1 }}

[vendors.imis]
base_url = "{sb.url("imis")}"
blackouts = []
auth = {{ kind = "password_grant", username = "demo", password = "demo-secret" }}
[vendors.imis.streams.Members]
options = {{ query = "$/ContactManagement/DefaultSystemQueries/Members", key = "ID", \
parameters = [{_toml(imis_param)}] }}
[vendors.imis.streams.Benign]
options = {{ query = "$/ContactManagement/DefaultSystemQueries/Members", key = "ID", \
parameters = ["ne:zzz"] }}

[vendors.aimms]
base_url = "{sb.url("aimms")}"
retry = {{ max_attempts = 2, base_s = 0.05 }}
auth = {{ kind = "apikey", api_key = "demo-apikey-all-scopes" }}
[vendors.aimms.streams.hostile]
options = {{ app = {_toml("Supply" + HOSTILE)}, service = {_toml("svc/" + HOSTILE)}, \
key = "id", poll_min_s = 0.02, poll_max_s = 0.1, deadline_s = 5 }}
"""
        )
        c = ("-c", str(cfg))
        assert (await asyncio.to_thread(run, ["check-config", *c], tmp_path)).returncode == 0
        assert (await asyncio.to_thread(run, ["migrate", *c], tmp_path)).returncode == 0
        before = tables(tmp_path / "vs.db")

        aqua = await asyncio.to_thread(run, ["resync", "aqua", *c], tmp_path)
        assert aqua.returncode == 0, aqua.stderr
        imis = await asyncio.to_thread(run, ["resync", "imis", *c], tmp_path)
        assert imis.returncode == 0, imis.stderr
        # No such app: the vendor says so (404), the run fails in one line, nothing else.
        aimms = await asyncio.to_thread(run, ["resync", "aimms", *c], tmp_path)
        assert aimms.returncode == 1, aimms.stderr
        assert "Traceback" not in aimms.stderr
        views = await asyncio.to_thread(run, ["views", *c], tmp_path)
        assert views.returncode == 0, views.stderr
        status = await asyncio.to_thread(run, ["status", "--json", *c], tmp_path)
        assert status.returncode == 0, status.stderr

        # iMIS: the prompt value is one `parameter`, nothing added to the query.
        iqa = [
            r
            for r in sb.sims["imis"].request_log
            if "/api/iqa" in r["target"] and "parameter=" in r["target"]
        ]
        assert iqa, "no IQA request reached the sandbox"
        for r in iqa:
            params = parse_qsl(urlsplit(r["target"]).query, keep_blank_values=True)
            assert [v for k, v in params if k == "parameter"] in ([imis_param], ["ne:zzz"])
            assert [k for k, _ in params if k.lower() in ("offset", "limit")].count("offset") <= 1
            assert "999" not in [v for k, v in params if k.lower() == "offset"], r["target"]
        assert any(f"={quote(imis_param, safe='')}" in r["target"] for r in iqa) or any(
            ("parameter", imis_param) in parse_qsl(urlsplit(r["target"]).query) for r in iqa
        ), "the hostile prompt value was never sent"
        # AIMMS: app and service are single path segments, percent-encoded.
        tasks = [r for r in sb.sims["aimms"].request_log if r["method"] == "POST"]
        assert tasks, "no task was created"
        target = tasks[0]["target"]
        parts = urlsplit(target)
        assert parts.query == "", target
        assert parts.fragment == "", target
        # ('&', '=' and quotes are plain characters inside a path segment.)
        segments = [unquote(p) for p in parts.path.split("/")]
        assert segments[-2:] == ["Supply" + HOSTILE, "svc/" + HOSTILE], target

        after = tables(tmp_path / "vs.db")
        assert set(after) >= set(before), f"tables lost: {set(before) - set(after)}"
        with closing(sqlite3.connect(tmp_path / "vs.db")) as conn:
            streams = dict(
                conn.execute(
                    "SELECT stream, count(*) FROM staged_record GROUP BY stream"
                ).fetchall()
            )
            view_names = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='view'")
            ]
        assert streams.get(AQUA_STREAM, 0) > 0, streams  # stored as given, as a bound value
        # As many as with a harmless prompt value: no injected paging or filter.
        assert streams.get("Members", 0) == streams.get("Benign") > 0, streams
        assert all(set(v) <= set("abcdefghijklmnopqrstuvwxyz0123456789_") for v in view_names)
        assert any(v.startswith("aqua__orders") for v in view_names), view_names
        print(f"\naccepted hostile values: {len(iqa)} IQA + {len(tasks)} task requests encoded; "
              f"tables intact ({len(after)}); staged {streams}")  # fmt: skip
    finally:
        await sb.close()


def _toml(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
