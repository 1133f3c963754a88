"""``vendorsync demo``: the whole loop against the in-process sandbox, on a local SQLite.

Starts the sandbox on 127.0.0.1, resets and migrates the configured SQLite database (the
embedded default's ``./var/vendorsync.db``, so ``vendorsync status`` shows the demo
afterwards; a previous file is kept as ``….before-demo``), runs a full sync of every
enabled stream, mutates sandbox records, runs an incremental sync, pushes a few users (one
invalid on purpose) and a few rows to every other vendor that accepts pushes (iMIS,
Amilia, AIMMS PRO), and prints what happened next to the vendors' own counters.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from rich.console import Console
from rich.table import Table

from sandbox.app import SandboxOptions
from sandbox.server import start_sandbox
from service.config import Settings, load_settings
from service.connectors import REGISTRY
from service.db import create_engine, migrate, sqlite_file
from service.engine.enqueue import PushRow, enqueue_rows
from service.engine.push import PushReport, push_once
from service.engine.runtime import Runtime
from service.engine.sync import ProgressFn, execute_stream
from service.engine.views import create_views
from service.errors import ConfigError
from service.live import LiveProgress
from service.models import RunResult
from service.render import push_table, runs_table

DEMO_USERS: list[dict[str, Any]] = [
    {
        "userName": f"demo.user{i}@acme-sandbox",
        "userFirstName": "Demo",
        "userLastName": f"User {i}",
        "userRoleNames": ["Field Worker"],
        "userIsActive": True,
        "userShortCode": f"D{i}",
    }
    for i in range(1, 5)
] + [
    {  # invalid on purpose: short codes have at most 3 characters
        "userName": "demo.invalid@acme-sandbox",
        "userFirstName": "Too",
        "userLastName": "Long",
        "userRoleNames": ["Field Worker"],
        "userIsActive": True,
        "userShortCode": "TOOLONG",
    }
]

# One or two rows for every other vendor that accepts pushes (Aqua takes none).
DEMO_PUSHES: list[PushRow] = [
    *(
        PushRow(
            "imis",
            "Party",
            f"demo-party-{i}",
            {
                "PersonName": {"FirstName": "Demo", "LastName": f"Member {i}"},
                "Emails": [{"Address": f"demo.member{i}@example.org", "EmailType": "_Primary"}],
            },
        )
        for i in (1, 2)
    ),
    *(
        PushRow(
            "amilia",
            "accounts",
            f"demo-account-{i}",
            {
                "Owners": [
                    {
                        "FirstName": "Demo",
                        "LastName": f"Family {i}",
                        "Email": f"demo.family{i}@example.org",
                    }
                ],
                "Members": [],
                "Corporate": False,
            },
        )
        for i in (1, 2)
    ),
    *(
        PushRow(
            "aimms",
            "task",
            f"demo.planner{i}@example.test",
            {
                "name": f"Demo Planner {i}",
                "email": f"demo.planner{i}@example.test",
            },
        )
        for i in (1, 2)
    ),
]


@dataclass
class Phase:
    name: str
    results: list[RunResult]
    sandbox: dict[str, dict[str, Any]]
    duration_s: float


def demo_db_path(settings: Settings) -> Path:
    """The configured SQLite file the demo resets (it refuses any other database)."""
    path = sqlite_file(settings.database.url)
    if path is None:
        raise ConfigError(
            "the demo resets its database, so it runs only on a SQLite file; "
            "use the embedded default config",
            key="database.url",
        )
    return path


def _fresh_db(path: Path) -> Path | None:
    """Start from an empty file; an earlier one is kept beside it. Returns the copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = None
    if path.exists() and path.stat().st_size > 0:
        kept = path.with_name(path.name + ".before-demo")
        path.replace(kept)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return kept


def demo_settings(base: Settings, sandbox_url: str) -> Settings:
    """The configured settings, pointed at the in-process sandbox."""
    data = base.model_dump(mode="python")
    vendors = {}
    for name, vendor in data["vendors"].items():
        kind = base.connector_of(name)
        vendor["base_url"] = f"{sandbox_url}/{kind}"
        vendor["enabled"] = vendor["enabled"] and kind in REGISTRY
        vendor["blackouts"] = []  # the demo's sandbox restores nothing (see run_demo)
        for secret in ("password", "client_secret", "api_key"):
            value = vendor["auth"].get(secret)
            if value is not None and hasattr(value, "get_secret_value"):
                vendor["auth"][secret] = value.get_secret_value()
        vendors[name] = vendor
    data["vendors"] = vendors
    return Settings(**data)


async def _control(
    http: aiohttp.ClientSession, url: str, vendor: str, what: str, body: Any = None
) -> Any:
    method = "GET" if what == "stats" else "POST"
    async with http.request(method, f"{url}/{vendor}/_sandbox/{what}", json=body) as resp:
        resp.raise_for_status()
        return await resp.json()


async def _sync_all(rt: Runtime, vendors: list[str], progress: ProgressFn) -> list[RunResult]:
    jobs = [
        execute_stream(rt, v, s, "demo", progress=progress)
        for v in vendors
        for s in rt.settings.vendors[v].enabled_streams()
    ]
    return list(await asyncio.gather(*jobs))


async def run_demo(
    config: Path | None, *, records: int, console: Console, seed: int = 42
) -> tuple[list[Phase], PushReport]:
    base = load_settings(config)
    wanted = tuple(
        {base.connector_of(v) for v, s in base.vendors.items() if s.enabled} & set(REGISTRY)
    )
    # No daily iMIS restore windows: a demo run at 06:00 or 18:00 UTC shows the sync, not a
    # blackout (the restore behaviour has its own tests).
    options = SandboxOptions(
        records=records, seed=seed, vendors={"imis": {"restore_windows_utc": []}}
    )
    sandbox = await start_sandbox(options, vendors=wanted)
    try:
        db_path = demo_db_path(base)
        kept = _fresh_db(db_path)
        settings = demo_settings(base, sandbox.base_url)
        vendors = [v for v, s in settings.vendors.items() if s.enabled]
        console.print(f"sandbox at {sandbox.base_url}; {records} records per entity")
        engine = create_engine(settings.database.url)
        try:
            revision = await migrate(engine)
        finally:
            await engine.dispose()
        note = f" (the previous file is kept as {kept})" if kept else ""
        console.print(f"reset and migrated {db_path} to revision {revision}{note}")
        caps = {v: settings.vendors[v].rate_per_s for v in vendors}
        phases: list[Phase] = []
        async with aiohttp.ClientSession() as http, Runtime(settings) as rt:

            async def phase(name: str) -> None:
                for v in vendors:
                    await _control(http, sandbox.base_url, v, "reset", {"faults": False})
                console.print(f"[bold]{name}[/bold] …")
                started = time.monotonic()
                with LiveProgress(console, caps) as live:
                    results = await _sync_all(rt, vendors, live.update)
                stats = {v: await _control(http, sandbox.base_url, v, "stats") for v in vendors}
                phases.append(Phase(name, results, stats, time.monotonic() - started))

            await phase("full sync")
            for v in vendors:
                for stream in settings.vendors[v].enabled_streams():
                    body = {"entity": stream, "change": 0.05, "delete": 0.02, "add": 2, "seed": 7}
                    try:
                        await _control(http, sandbox.base_url, v, "mutate", body)
                    except aiohttp.ClientResponseError as exc:
                        if exc.status != 400:  # 400: nothing the sandbox can mutate (AIMMS apps)
                            raise
            console.print("mutated the sandbox: ~5% changed, ~2% deleted, 2 added per entity")
            await phase("incremental sync")
            rows = [PushRow("aimsio", "User", u["userName"], u) for u in DEMO_USERS]
            rows += [r for r in DEMO_PUSHES if r.vendor in vendors]
            await enqueue_rows(rt.db, rows)
            pushing = sorted({r.vendor for r in rows if r.vendor in vendors})
            console.print(f"[bold]push[/bold] to {', '.join(pushing)} …")
            report = await push_once(rt)
            views = await create_views(rt.db, settings)
            console.print(f"created {len(views)} staging views, e.g. aimsio__employee")
        return phases, report
    finally:
        await sandbox.close()


def render(phases: list[Phase], report: PushReport, settings_caps: dict[str, Any]) -> list[Table]:
    tables = []
    for ph in phases:
        table = runs_table(f"{ph.name} ({ph.duration_s:.1f} s)", ph.results)
        table.caption = (
            "All streams ran at the same time, each vendor's sharing its one limiter, so "
            f"their durations overlap: the whole phase took {ph.duration_s:.1f} s."
        )
        tables.append(table)
        limits = Table(title=f"{ph.name}: the vendor's view (sandbox counters)")
        for col in (
            "vendor",
            "requests",
            "peak req/s",
            "cap/s",
            "peak in flight",
            "cap",
            "429s",
            "timeouts",
            "violations",
        ):
            limits.add_column(col, justify="left" if col == "vendor" else "right")
        for vendor, s in ph.sandbox.items():
            caps = settings_caps.get(vendor, {})
            limits.add_row(
                vendor,
                str(s["requests"]),
                str(s["max_per_s"]),
                str(caps.get("rate_per_s", "-")),
                str(s["peak_in_flight"]),
                str(caps.get("max_parallel", "-")),
                str(s["rate_limited"]),
                str(s["timeouts"]),
                str(s["violation_count"]),
            )
        tables.append(limits)
    tables.append(push_table("push outcomes", report))
    return tables


def summary_json(phases: list[Phase], report: PushReport) -> str:
    return json.dumps(
        {
            ph.name: {
                "rows": sum(r.counts.inserted + r.counts.updated for r in ph.results),
                "deleted": sum(r.counts.deleted for r in ph.results),
                "requests": sum(r.requests for r in ph.results),
                "violations": sum(s["violation_count"] for s in ph.sandbox.values()),
            }
            for ph in phases
        }
        | {"push": {f"{v}/{e}": c for (v, e), c in report.counts().items()}}
    )
