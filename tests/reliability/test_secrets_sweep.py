"""No secret leaks: every vendor run with distinctive good and wrong secrets, every channel grepped.

The sandbox (in this process) accepts users and keys made up for this test; the service
runs as real ``vendorsync`` processes with ``log_level = "debug"``: migrate, check-config
(plain and ``--show``), ``run --once``, ``resync`` of each vendor, push enqueue and push,
status (table and ``--json``), and the daemon, whose ``/metrics``, ``/healthz``, ``/readyz``
and status page ``/`` (without and with the admin token, and one admin action) are read.
Then every table of the staging database is dumped. Each secret (vendor credentials, good
and wrong, the admin token, the database password), its base64 forms, the Basic-auth
``user:password`` base64, its URL-encoded form, the random cores inside it (so a half-masked
secret is caught too), and the bearer tokens the sandbox issued must appear nowhere.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import sqlite3
import subprocess
import time
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from sqlalchemy.engine import make_url

from sandbox.aimms.config import SCOPES, YEAR_S
from sandbox.aimms.model import DEMO_USER_ID
from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from tests.conftest import PG_CONNECT_TIMEOUT_S, pg_dsn, require_pg
from tests.reliability.conftest import VENDORSYNC, cli_env, log_events

pytestmark = [pytest.mark.long, pytest.mark.timeout(360)]

VENDORS = ("aimsio", "aqua", "imis", "amilia", "aimms")
WAIT_S = 90.0


def distinctive(kind: str) -> tuple[str, list[str]]:
    """A secret holding characters redaction regexes stop at (``,'&``), and its random cores
    (each alone would betray a partly masked secret)."""
    cores = [secrets.token_hex(8), secrets.token_hex(8)]
    return f"{kind}-{cores[0]},'&{cores[1]}", cores


@dataclass
class Secret:
    label: str
    value: str
    cores: list[str]
    user: str | None = None  # for Basic auth: base64(user:value) is a form too

    def needles(self) -> dict[str, str]:
        raw = self.value.encode()
        forms = {
            "raw": self.value,
            "base64": base64.b64encode(raw).decode(),
            "base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
            "url-encoded": urllib.parse.quote(self.value, safe=""),
            "form-encoded": urllib.parse.quote_plus(self.value),
        }
        if self.user is not None:
            basic = f"{self.user}:{self.value}".encode()
            forms["basic user:password base64"] = base64.b64encode(basic).decode()
        forms |= {f"core {i}": c for i, c in enumerate(self.cores)}
        return {f"{self.label} ({form})": text for form, text in forms.items()}


@dataclass
class Creds:
    """One set of credentials for the five vendors (good or wrong)."""

    tag: str
    aimsio: Secret
    aqua_client: Secret
    aqua_password: Secret
    imis: Secret
    amilia: Secret
    aimms: Secret

    @classmethod
    def make(cls, tag: str) -> Creds:
        def s(label: str, user: str | None = None) -> Secret:
            value, cores = distinctive(f"{tag}{label}")
            return Secret(f"{tag} {label}", value, cores, user)

        return cls(
            tag,
            aimsio=s("aimsio password", "sweep"),
            aqua_client=s("aqua client_secret", "sweep-client"),
            aqua_password=s("aqua password", "sweep@aims360.test"),
            imis=s("imis password", "sweep"),
            amilia=s("amilia password", "sweep@amilia.test"),
            aimms=s("aimms api_key"),
        )

    def all(self) -> list[Secret]:
        return [
            self.aimsio,
            self.aqua_client,
            self.aqua_password,
            self.imis,
            self.amilia,
            self.aimms,
        ]


def sandbox_settings(good: Creds) -> dict[str, dict[str, Any]]:
    """The sandbox accepts exactly the good credentials (and its own demo ones)."""
    return {
        "aimsio": {"users": {"sweep": {"password": good.aimsio.value, "api": True}}},
        "aqua": {
            "queued_s": 0.05,
            "run_s": 0.1,
            "users": [
                {
                    "username": "sweep@aims360.test",
                    "password": good.aqua_password.value,
                    "company": "DEMO01",
                }
            ],
            "clients": [
                {
                    "client_id": "sweep-client",
                    "client_secret": good.aqua_client.value,
                    "company": "DEMO01",
                }
            ],
        },
        "imis": {"users": {"sweep": good.imis.value}},
        "amilia": {"users": {"sweep@amilia.test": {"password": good.amilia.value, "orgs": [8008]}}},
        "aimms": {
            "task_phases_s": {"assigned": 0.02, "running": 0.05, "solving": 0.05},
            "tick_interval_s": 0.02,
            "api_keys": [
                {
                    "key": good.aimms.value,
                    "name": "sweep",
                    "scopes": sorted(SCOPES),
                    "expires_in_s": YEAR_S,
                    "user": DEMO_USER_ID,
                }
            ],
        },
    }


def q(text: str) -> str:
    return json.dumps(text)  # a TOML basic string (ASCII text)


def write_config(
    path: Path, creds: Creds, *, db_url: str, sb: RunningSandbox, admin: Secret
) -> Path:
    key_file = path.parent / f"{creds.tag}-aimms.key"
    key_file.write_text(creds.aimms.value + "\n")
    fast_poll = "poll_min_s = 0.02, poll_max_s = 0.1"
    retry = "retry = { max_attempts = 2, base_s = 0.05, max_backoff_s = 0.1 }"
    path.write_text(
        f"""\
log_level = "debug"
log_format = "json"

[database]
url = {q(db_url)}

[daemon]
host = "127.0.0.1"
port = 0
shutdown_grace_s = 2
admin_token = {q(admin.value)}

[push]
backoff_base_s = 0.1

[vendors.aimsio]
base_url = {q(sb.url("aimsio"))}
schedule = "every 1h"
{retry}
auth = {{ kind = "basic", username = "sweep", password = {q(creds.aimsio.value)} }}
streams = {{ User = {{}} }}

[vendors.aqua]
base_url = {q(sb.url("aqua"))}
schedule = "every 1h"
{retry}
auth = {{ kind = "password_grant", client_id = "sweep-client", \
client_secret = {q(creds.aqua_client.value)}, username = "sweep@aims360.test", \
password = {q(creds.aqua_password.value)} }}
[vendors.aqua.streams.Orders]
options = {{ source = "Orders", view = "All orders", key = "Order No", {fast_poll} }}

[vendors.imis]
base_url = {q(sb.url("imis"))}
schedule = "every 1h"
{retry}
auth = {{ kind = "password_grant", username = "sweep", password = {q(creds.imis.value)} }}
options = {{ time_zone = "UTC", lookback_s = 3600, page_size = 50 }}
blackouts = []
streams = {{ Party = {{}} }}

[vendors.amilia]
base_url = {q(sb.url("amilia"))}
schedule = "every 1h"
{retry}
auth = {{ kind = "basic_jwt", username = "sweep@amilia.test", \
password = {q(creds.amilia.value)} }}
options = {{ org = "8008", language = "en" }}
streams = {{ accounts = {{}} }}

[vendors.aimms]
base_url = {q(sb.url("aimms"))}
schedule = "every 1h"
{retry}
auth = {{ kind = "apikey", api_key_file = {q(str(key_file))} }}
[vendors.aimms.options.push]
app = "SupplyPlanner"
service = "import_users"
{fast_poll.replace(", ", chr(10))}
deadline_s = 20
[vendors.aimms.streams]
applications = {{}}
users = {{}}
"""
    )
    return path


PUSH_ROWS = [
    {"vendor": "aimsio", "entity": "User", "key": "sweep.user", "payload": {
        "userName": "sweep.user", "userFirstName": "A", "userLastName": "B",
        "userRoleNames": ["Field Worker"], "userIsActive": True}},
    {"vendor": "imis", "entity": "Party", "key": "sweep-party", "payload": {
        "PersonName": {"FirstName": "Sweep", "LastName": "Party"},
        "Emails": [{"Address": "sweep@example.org", "EmailType": "_Primary"}]}},
    {"vendor": "amilia", "entity": "accounts", "key": "sweep-account", "payload": {
        "Owners": [{"FirstName": "Sweep", "LastName": "Owner", "Email": "o@example.org"}],
        "Members": [], "Corporate": False}},
    {"vendor": "aimms", "entity": "task", "key": "sweep@example.test", "payload": {
        "name": "Sweep", "email": "sweep@example.test"}},
]  # fmt: skip


@dataclass
class Channels:
    """Everything the service wrote, by where it was found."""

    texts: dict[str, str] = field(default_factory=dict)

    def add(self, where: str, text: str) -> None:
        self.texts[where] = text

    def leaks(self, needles: dict[str, str]) -> list[str]:
        found = []
        for where, text in self.texts.items():
            for label, needle in needles.items():
                at = text.find(needle)
                if at >= 0:
                    excerpt = text[max(0, at - 60) : at + len(needle) + 20].replace("\n", "⏎")
                    found.append(f"{label} in {where}: …{excerpt}…")
        return found


async def vendorsync(
    channels: Channels, name: str, *args: str, cwd: Path, expect: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess[str]:
    t0 = time.monotonic()
    proc = await asyncio.to_thread(
        subprocess.run,
        [*VENDORSYNC, *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    print(f"  {name}: exit {proc.returncode} in {time.monotonic() - t0:.1f}s")
    channels.add(f"`{name}` stdout", proc.stdout)
    channels.add(f"`{name}` stderr (debug log)", proc.stderr)
    assert proc.returncode in expect, f"{name}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, f"{name}:\n{proc.stderr[-3000:]}"
    return proc


async def daemon_channels(channels: Channels, cfg: Path, cwd: Path, admin: Secret) -> None:
    """Run the daemon until it has run streams; read every page it serves."""
    log_path = cwd / "daemon.log"
    with log_path.open("w") as log:
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [*VENDORSYNC, "run", "-c", str(cfg)],
            cwd=cwd,
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        url = None
        deadline = time.monotonic() + WAIT_S
        while url is None:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "daemon health server did not start"
            found = log_events(log_path.read_text(), "health server")
            url = found[0]["url"] if found else None
            await asyncio.sleep(0.2)
        headers = {"X-Admin-Token": admin.value}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

            async def get(path: str, **kw: Any) -> str:
                async with http.get(f"{url}{path}", **kw) as r:
                    return f"HTTP {r.status} {dict(r.headers)}\n{await r.text()}"

            async with http.post(f"{url}/actions/run/aimsio/User", headers=headers) as r:
                channels.add("daemon POST run-now", f"{r.status} {await r.text()}")
                assert r.status == 202, await r.text()
            # Its config's short schedule starts runs within seconds.
            while "vendorsync_runs_total{" not in await get("/metrics"):
                assert time.monotonic() < deadline, "the daemon's run did not finish"
                await asyncio.sleep(0.3)
            for path in ("/metrics", "/healthz", "/readyz", "/"):
                channels.add(f"daemon GET {path}", await get(path))
            channels.add("daemon GET / with admin token", await get("/", headers=headers))
            async with http.post(
                f"{url}/actions/run/aimsio/User", headers={"X-Admin-Token": "x" * 20}
            ) as r:
                channels.add("daemon POST run-now (bad token)", f"{r.status} {await r.text()}")
                assert r.status in (401, 403)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    channels.add("daemon stderr (debug log)", log_path.read_text())


# --- databases ------------------------------------------------------------------------------


@dataclass
class Db:
    url: str
    password: Secret | None  # PostgreSQL: the role's own distinctive password
    dump: Any  # async () -> {table: text}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
async def sweep_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Db]:
    if request.param == "sqlite":
        path = tmp_path / "sweep.db"

        async def dump_sqlite() -> dict[str, str]:
            with closing(sqlite3.connect(path)) as conn:
                names = [
                    r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                ]
                return {n: repr(conn.execute(f'SELECT * FROM "{n}"').fetchall()) for n in names}

        yield Db(f"sqlite+aiosqlite:///{path}", None, dump_sqlite)
        return
    base = await require_pg()
    tag = secrets.token_hex(5)
    role, schema = f"vs_sweep_{tag}", f"sweep_{tag}"
    password = Secret("database password", f"dbpw-{secrets.token_hex(12)}", [])
    admin = await asyncpg.connect(pg_dsn(base), timeout=PG_CONNECT_TIMEOUT_S)
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password.value}'")
        await admin.execute(f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
        u = make_url(base).set(username=role, password=password.value)
        u = u.update_query_dict({"options": f"-csearch_path={schema}"})

        async def dump_pg() -> dict[str, str]:
            rows = await admin.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                schema,
            )
            out = {}
            for r in rows:
                data = await admin.fetch(f'SELECT * FROM {schema}."{r["table_name"]}"')
                out[r["table_name"]] = repr([dict(x) for x in data])
            return out

        yield Db(u.render_as_string(hide_password=False), password, dump_pg)
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


# --- the sweep ------------------------------------------------------------------------------

JWT = re.compile(r"eyJ[\w-]{10,}\.[\w-]{10,}")


async def test_no_secret_reaches_any_output(tmp_path: Path, sweep_db: Db) -> None:
    started = time.monotonic()
    good, wrong = Creds.make("good"), Creds.make("wrong")
    admin = Secret("admin token", *distinctive("admin"))
    options = SandboxOptions(records=30, seed=7, vendors=sandbox_settings(good))
    sb = await start_sandbox(options, vendors=VENDORS)
    channels = Channels()
    try:
        good_cfg = write_config(
            tmp_path / "good.toml", good, db_url=sweep_db.url, sb=sb, admin=admin
        )
        wrong_cfg = write_config(
            tmp_path / "wrong.toml", wrong, db_url=sweep_db.url, sb=sb, admin=admin
        )
        rows = tmp_path / "rows.jsonl"
        rows.write_text("".join(json.dumps(r) + "\n" for r in PUSH_ROWS))

        async def cli(name: str, *args: str, expect: tuple[int, ...] = (0,)) -> Any:
            return await vendorsync(channels, name, *args, cwd=tmp_path, expect=expect)

        g, w = ("-c", str(good_cfg)), ("-c", str(wrong_cfg))
        await cli("migrate", "migrate", *g)
        for tag, c in (("good", g), ("wrong", w)):
            await cli(f"{tag} check-config", "check-config", *c)
            await cli(f"{tag} check-config --show", "check-config", "--show", *c)
        # Wrong secrets first: their failures (runs, outbox errors) stay in the tables.
        await cli("wrong run --once", "run", "--once", *w, expect=(1,))
        for vendor in VENDORS:
            await cli(f"wrong resync {vendor}", "resync", vendor, *w, expect=(1,))
        await cli("push enqueue", "push", "enqueue", "--file", str(rows), *w)
        await cli("wrong push", "push", *w, expect=(1,))
        await cli("wrong status", "status", *w)
        await cli("wrong status --json", "status", "--json", *w)

        await cli("good run --once", "run", "--once", *g)
        await cli("good resync aimsio", "resync", "aimsio", "--full", *g)
        await cli("good push", "push", *g, expect=(0, 1))
        await cli("good status", "status", *g)
        await cli("good status --json", "status", "--json", *g)
        daemon_cfg = tmp_path / "daemon.toml"
        daemon_cfg.write_text(good_cfg.read_text().replace('"every 1h"', '"every 2s"'))
        await daemon_channels(channels, daemon_cfg, tmp_path, admin)

        if sweep_db.password is not None:  # a wrong database password: one error line
            bad_db = tmp_path / "bad-db.toml"
            bad_db.write_text(
                good_cfg.read_text().replace(sweep_db.password.value, "wrong-db-password-x1")
            )
            await cli(
                "status (wrong database password)", "status", "-c", str(bad_db), expect=(1, 2)
            )
        for table, text in (await sweep_db.dump()).items():
            channels.add(f"table {table}", text)

        issued = sb.sims["aqua"].accounts.tokens.keys() | sb.sims["imis"].tokens._tokens.keys()
    finally:
        await sb.close()

    needles: dict[str, str] = {}
    for s in [
        *good.all(),
        *wrong.all(),
        admin,
        *([sweep_db.password] if sweep_db.password else []),
    ]:
        needles |= s.needles()
    assert len(issued) >= 2, "the sandbox issued no bearer tokens: did logins happen?"
    needles |= {f"issued bearer token #{i}": t for i, t in enumerate(sorted(issued))}
    # The search itself works: the config files hold every secret in one form or another.
    configs = Channels({"config": good_cfg.read_text() + wrong_cfg.read_text()})
    held = {label.split(" (")[0] for label in configs.leaks(needles)}
    assert len(held) >= 11, held  # 6 + 6 vendor secrets (AIMMS keys are in files), token, db
    leaks = channels.leaks(needles)
    for where, text in channels.texts.items():
        leaks += [f"a JWT in {where}: {m[:40]}…" for m in JWT.findall(text)]
    # The sweep read something real: data staged, auth failures recorded, pages served.
    everything = "\n".join(channels.texts.values())
    assert "vendorsync_runs_total" in everything
    assert re.search(r"HTTP 40[13]", everything), "no auth failure was exercised"
    staged = channels.texts["table staged_record"]
    assert all(f"'{v}'" in staged for v in VENDORS), "not every vendor staged rows"
    print(f"\nsecrets sweep: {len(channels.texts)} outputs, {len(needles)} needles, "
          f"{len(leaks)} leaks, {time.monotonic() - started:.1f}s")  # fmt: skip
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks[:40])
