"""The ``vendorsync`` command line.

Every command reports failures as one line on stderr: exit 2 for bad input (arguments,
configuration), 1 for a failed operation; never a traceback for an expected error.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperOption
from typer.exceptions import TyperException

from service.config import (
    ConfigProblems,
    Settings,
    config_warnings,
    effective_config,
    expiry_warnings,
    load_settings,
)
from service.console import (
    DEBUG_ENV,
    EX_TEMPFAIL,
    ONE_LINE,
    err,
    error_line,
    fail,
    internal_error,
    one_line,
    out,
    run_async,
)
from service.errors import ConfigError, InputError, SyncError
from service.logging import setup_logging
from service.render import plain, push_summary, push_table, runs_table
from service.secrets import redact_text

if TYPE_CHECKING:
    from service.db.views import ViewInfo


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """Flags take no value, so their help shows no type (typer prints ``<bool>``)."""
    return None if self.is_flag else _typer_display_type(self, ctx)


_typer_display_type = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

app = typer.Typer(
    name="vendorsync",
    help="Incremental sync from vendor APIs into a SQL staging database, and push-back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config file (default: $VENDORSYNC_CONFIG or config/vendorsync.toml).",
    ),
]


def settings_from(path: Path | None, *, every_error: bool = False) -> Settings:
    try:
        settings = load_settings(path)
    except ConfigProblems as exc:
        for problem in exc.problems if every_error else [exc]:
            err.print(error_line(f"config: {problem}"), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except ConfigError as exc:
        fail(f"config: {exc}", 2)
    setup_logging(settings.log_level, settings.log_format)
    return settings


def parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 date or time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "-"
    seconds = int((now - ts).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help=f"Show tracebacks of internal errors (or {DEBUG_ENV}=1)."
    ),
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


@app.command("check-config")
def check_config(
    config: ConfigOpt = None,
    show: bool = typer.Option(
        False, "--show", help="Print the effective settings (JSON, secrets masked)."
    ),
) -> None:
    """Validate the configuration: every error one line each (exit 2), warnings about
    wasteful values on stderr, then a short summary (or the settings with --show)."""
    from service.engine.runtime import check_streams

    settings = settings_from(config, every_error=True)
    try:
        check_streams(settings)
    except ConfigProblems as exc:
        for problem in exc.problems:
            err.print(error_line(f"config: {problem}"), highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    for warning in config_warnings(settings):
        err.print(error_line(warning, "warning:"), highlight=False, soft_wrap=True)
    if show:
        out.print_json(json.dumps(effective_config(settings)))
        return
    out.print(plain(config_summary(settings, config)), soft_wrap=True)


def config_summary(settings: Settings, path: Path | None) -> str:
    """``config OK`` plus where the data goes and what runs, one line each."""
    from service.config import config_path, mask_url

    lines = [f"config OK: {config_path(path)}", f"database: {mask_url(settings.database.url)}"]
    for name, vs in settings.vendors.items():
        if not vs.enabled:
            lines.append(f"{name}: disabled")
            continue
        streams = vs.enabled_streams()
        lines.append(
            f"{name}: {len(streams)} stream(s) ({', '.join(streams) or 'none'}), "
            f"{vs.auth.kind} auth, {vs.max_parallel} parallel, {vs.rate_per_s:g}/s, "
            f"schedule {vs.schedule}"
        )
    lines.append("(--show prints the effective settings, secrets masked)")
    return "\n".join(lines)


@app.command()
def migrate(config: ConfigOpt = None) -> None:
    """Upgrade the staging database schema to the latest migration."""
    from service.db import create_engine, translate_db_errors
    from service.db import migrate as do_migrate
    from service.engine.views import create_views

    settings = settings_from(config)

    async def go() -> tuple[str, list[ViewInfo]]:
        engine = create_engine(settings.database.url)
        try:
            with translate_db_errors("migrating"):
                revision = await do_migrate(engine)
            return revision, await create_views(engine, settings)
        finally:
            await engine.dispose()

    revision, made = run_async(go())
    out.print(f"schema at revision {revision}")
    out.print(plain(views_summary(made)), soft_wrap=True)


@app.command()
def views(config: ConfigOpt = None) -> None:
    """(Re)create the typed SQL views <connection>__<stream> over the staged records.

    Columns come from the payloads staged so far: run it again after a first sync."""
    from service.db import check_schema, create_engine, translate_db_errors
    from service.engine.views import create_views

    settings = settings_from(config)

    async def go() -> list[ViewInfo]:
        engine = create_engine(settings.database.url)
        try:
            with translate_db_errors("creating the staging views"):
                await check_schema(engine)
            return await create_views(engine, settings)
        finally:
            await engine.dispose()

    made = run_async(go())
    for v in made:
        if not v.name:
            err.print(plain(f"warning: {v.vendor}/{v.stream}: its view name is taken"))
            continue
        line = f"{v.name}: {len(v.columns)} field column(s)"
        if v.skipped:
            line += f"; left out (unsafe names): {', '.join(map(repr, v.skipped[:5]))}"
        out.print(plain(line), soft_wrap=True)
    out.print(plain(views_summary(made)), soft_wrap=True)


def views_summary(made: list[ViewInfo]) -> str:
    n = sum(1 for v in made if v.name)
    return f"{n} staging view(s) <connection>__<stream> (vendorsync views rebuilds them)"


@app.command()
def status(config: ConfigOpt = None, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show each stream's last run, result, rows, cursor and age; which replica holds
    which limit group."""
    from service.engine.status import collect_status

    settings = settings_from(config)
    report = run_async(collect_status(settings))
    warnings = expiry_warnings(settings, datetime.now(UTC).date())
    if warnings:
        report["warnings"] = warnings
    if as_json:
        out.print_json(json.dumps(report, default=str))
        return
    now = datetime.now(UTC)
    table = Table(title="streams")
    cols = ("vendor", "stream", "last run (UTC)", "result", "rows", "staged", "cursor", "age")
    for col in (*cols, "full re-read"):
        table.add_column(col, justify="right" if col in ("rows", "staged") else "left")
    for s in report["streams"]:
        started = s["last_run_started_at"]
        table.add_row(
            *map(
                plain,
                (
                    s["vendor"],
                    s["stream"],
                    started.strftime("%Y-%m-%d %H:%M:%S") if started else "never",
                    s["last_run_status"] or "-",
                    "-" if s["last_run_rows"] is None else s["last_run_rows"],
                    s["staged_rows"],
                    s["cursor"] or "-",
                    age(s["last_run_finished_at"] or started, now),
                    full_reread_text(s),
                ),
            )
        )
    out.print(table)
    if any(g["replica"] or g["running"] for g in report["groups"]):
        groups = Table(title=f"limit groups ({len(report['replicas'])} live replica(s))")
        for col in ("group", "connections", "replica", "running now"):
            groups.add_column(col)
        for g in report["groups"]:
            row = (g["group"], ", ".join(g["connections"]), g["replica"], g["running"])
            groups.add_row(*(plain(c or "-") for c in row))
        out.print(groups)
    for warning in warnings:
        err.print(error_line(warning, "warning:"), highlight=False, soft_wrap=True)
    print_schedule(report, now)
    if report["outbox"]:
        backlog = Table(title="push outbox")
        for col in ("vendor", "entity", "status", "rows"):
            backlog.add_column(col, justify="right" if col == "rows" else "left")
        for r in report["outbox"]:
            backlog.add_row(*map(plain, (r["vendor"], r["entity"], r["status"], r["n"])))
        out.print(backlog)
    if report["failures"]:
        failed = Table(title="recent push failures (rejected / invalid / dead)")
        for col in ("id", "vendor", "entity", "key", "status", "attempts", "last error"):
            failed.add_column(col)
        for r in report["failures"]:
            cells = (r["id"], r["vendor"], r["entity"], r["record_key"], r["status"])
            error = redact_text(r["last_error"] or "")[:80]
            failed.add_row(*map(plain, (*cells, r["attempts"], error)))
        out.print(failed)


def print_schedule(report: dict[str, Any], now: datetime) -> None:
    """Freshness per stream (fresh / late / failing / never) and the dead letters."""
    table = Table(title="schedule (late: last success older than 2 periods)")
    for col in ("vendor", "stream", "schedule", "health", "lag", "next run (UTC)", "held by"):
        table.add_column(col)
    colour = {"fresh": "green", "late": "yellow", "failing": "red"}
    for f in report.get("freshness", []):
        state = f["state"]
        lag = "-" if f["lag_s"] is None else age(now - timedelta(seconds=f["lag_s"]), now)
        cells = (f["vendor"], f["stream"], f["schedule"], state, lag)
        nxt = "due" if f["next_run_at"] <= now else f["next_run_at"].strftime("%Y-%m-%d %H:%M:%S")
        row = [plain(str(c)) for c in (*cells, nxt, f["holder"] or "-")]
        if state in colour:
            row[3].stylize(colour[state])
        table.add_row(*row)
    out.print(table)
    dead = report.get("dead_letters", [])
    if dead:
        letters = Table(title="dead letters (requeue on the daemon's status page)")
        for col in ("id", "vendor", "entity", "key", "attempts", "last error"):
            letters.add_column(col)
        for r in dead:
            cells = (r["id"], r["vendor"], r["entity"], r["record_key"], r["attempts"])
            letters.add_row(*map(plain, (*cells, (r["last_error"] or "")[:80])))
        out.print(letters)


def full_reread_text(s: dict[str, Any]) -> str:
    """``every 7d, next 2026-12-09 10:00 UTC`` (or ``-`` when the stream has none)."""
    every = s.get("full_every_s")
    if not every:
        return "-"
    span = next(
        f"{every / n:g}{u}"
        for n, u in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))
        if every >= n or n == 1
    )
    due = s.get("next_full_due")
    when = due.strftime("%Y-%m-%d %H:%M UTC") if due else "next scheduled run"
    return f"every {span}, next {when}"


def _known(settings: Settings) -> str:
    from service.connectors import REGISTRY

    lines = []
    for name, vendor in settings.vendors.items():
        state = "" if vendor.enabled and settings.connector_of(name) in REGISTRY else " (disabled)"
        lines.append(f"{name}{state}: {', '.join(vendor.streams) or 'no streams'}")
    return "; ".join(lines)


@app.command()
def resync(
    vendor: Annotated[str, typer.Argument(help="Vendor id, e.g. aimsio.")],
    stream: Annotated[str | None, typer.Argument(help="One stream; default: all enabled.")] = None,
    full: Annotated[
        bool, typer.Option("--full", help="Ignore checkpoints; re-read everything.")
    ] = False,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Also re-read records changed at or after this ISO 8601 time (UTC if no "
            "zone), even if staged and unchanged. Not a filter: new and changed records "
            "are read as always, and a first run reads everything.",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Inside one of the vendor's blackout windows (e.g. iMIS database "
            "restores), wait for its end instead of refusing to start.",
        ),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Run one vendor's streams (or one stream) now, outside the schedule.

    Refuses to start inside one of the vendor's blackout windows (exit 75, try again
    later) unless ``--wait`` is given.
    """
    from service.engine.resync import resync_streams
    from service.engine.runtime import vendor_blackout_s

    if full and since:
        fail("--full and --since exclude each other", 2)
    since_dt = parse_since(since)
    settings = settings_from(config)
    if vendor not in settings.vendors:
        fail(f"unknown vendor {vendor!r}. Known vendors and streams: {_known(settings)}", 2)
    blackout_s = vendor_blackout_s(settings, vendor)
    if blackout_s > 0 and not wait:
        until = datetime.now(UTC) + timedelta(seconds=blackout_s)
        fail(
            f"{vendor} is in a blackout window until {until:%H:%M:%S} UTC "
            f"({blackout_s:.0f} s); try again then, or pass --wait",
            EX_TEMPFAIL,
        )
    from service.live import LiveProgress

    caps = {v: s.rate_per_s for v, s in settings.vendors.items()}
    with LiveProgress(err, caps) as live:
        results = run_async(
            resync_streams(
                settings, vendor, stream, full=full, since=since_dt, progress=live.update
            )
        )
    out.print(runs_table(f"resync {vendor}", results))
    failed = any(r.status != "succeeded" for r in results)
    for r in results:
        # One line each, however long (piped stderr would wrap at its width otherwise).
        if r.error:
            err.print(plain(one_line(f"{r.stream}: {redact_text(r.error)}")), **ONE_LINE)
        if r.note:
            err.print(plain(one_line(f"{r.stream}: note: {redact_text(r.note)}")), **ONE_LINE)
    if failed:
        raise typer.Exit(1)


@app.command()
def run(
    config: ConfigOpt = None,
    once: bool = typer.Option(
        False,
        "--once",
        help="Run every enabled stream and the outbox once, then exit (1 if any run failed).",
    ),
) -> None:
    """The daemon: scheduled syncs and pushes, /healthz, /readyz and /metrics."""

    from service.daemon.scheduler import Daemon

    settings = settings_from(config)
    daemon = Daemon(settings)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await daemon.run(stop, once=once)

    run_async(go())
    if once and daemon.failures:
        first = f"; first: {daemon.first_failure}" if daemon.first_failure else ""
        fail(f"{daemon.failures} run(s) failed{first} (see the log above)", 1)


push_app = typer.Typer(help="Send the push outbox to the vendors, or add rows to it.")
app.add_typer(push_app, name="push")


@push_app.callback(invoke_without_command=True)
def push(
    ctx: typer.Context,
    vendor: str | None = typer.Option(None, "--vendor", help="Only this vendor's rows."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be sent and why."),
    config: ConfigOpt = None,
) -> None:
    """Run the outbox once (mapping rules first): validate, skip unchanged, send, record.

    Exit status: 0 when every due row was sent, skipped (unchanged) or superseded by a
    newer row for its key, or nothing was due; 1 when any row was rejected, invalid,
    dead-lettered, left for retry (transient or unexpected error), deferred (vendor
    disabled, or another process holds its lease), or a vendor's authentication failed
    (its rows stay pending). --dry-run writes nothing and exits by the same rule on what
    it would do.
    """
    if ctx.invoked_subcommand is not None:
        return
    from service.engine.push import push_once
    from service.engine.runtime import Runtime

    settings = settings_from(config)
    if vendor is not None and vendor not in settings.vendors:
        fail(f"unknown vendor {vendor!r}. Known vendors and streams: {_known(settings)}", 2)

    async def go() -> Any:
        async with Runtime(settings) as rt:
            return await push_once(rt, vendor=vendor, dry_run=dry_run)

    report = run_async(go())
    out.print(push_table("push (dry run: nothing written or sent)" if dry_run else "push", report))
    out.print(push_summary(report) or "outbox empty: nothing to send")
    problem = report.problem()
    if problem is not None:
        fail(problem, report.exit_code)


@push_app.command("enqueue")
def push_enqueue(
    file: Path = typer.Option(..., "--file", "-f", help="JSON lines; '-' reads stdin."),
    vendor: str | None = typer.Option(None, "--vendor", help="Vendor for lines that omit it."),
    entity: str | None = typer.Option(None, "--entity", help="Entity for lines that omit it."),
    force: bool = typer.Option(False, "--force", help="Add rows even if equal to earlier ones."),
    config: ConfigOpt = None,
) -> None:
    """Add rows to the push outbox from a JSON-lines file (all lines or none)."""
    from service.db import check_schema, create_engine, translate_db_errors
    from service.engine.enqueue import enqueue_rows, parse_rows

    settings = settings_from(config)
    try:
        # Bytes: parse_rows decodes each line, so a bad byte is reported with its line.
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", 2)
    try:
        rows = parse_rows(
            data.splitlines(), settings, vendor=vendor, entity=entity, source=str(file)
        )
    except InputError as exc:
        fail(str(exc), 2)

    async def go() -> int:
        engine = create_engine(settings.database.url)
        try:
            with translate_db_errors("adding rows to the push outbox"):
                await check_schema(engine)
                return await enqueue_rows(engine, rows, force=force)
        finally:
            await engine.dispose()

    added = run_async(go())
    out.print(f"enqueued {added} of {len(rows)} rows ({len(rows) - added} equal to earlier rows)")


@app.command()
def demo(
    records: int = typer.Option(30, min=10, max=10_000, help="Sandbox records per entity."),
    as_json: bool = typer.Option(False, "--json", help="End with a one-line JSON summary."),
    config: ConfigOpt = None,
) -> None:
    """Sandbox + SQLite end to end: full sync, mutations, incremental sync, push, summary."""
    from service.demo import render, run_demo, summary_json

    settings = settings_from(config)
    setup_logging("warning", settings.log_format)  # the demo's tables tell the story
    phases, report = run_async(run_demo(config, records=records, console=out))
    caps = {
        v: {"rate_per_s": s.rate_per_s, "max_parallel": s.max_parallel}
        for v, s in settings.vendors.items()
    }
    for table in render(phases, report, caps):
        out.print(table)
    if as_json:  # for scripts; the tables above are for people
        out.print(summary_json(phases, report), highlight=False, soft_wrap=True)
    else:
        out.print(
            "Inspect the staged data: vendorsync status; query it: sqlite3 "
            f"{settings_db_hint(settings)} 'SELECT * FROM aimsio__employee LIMIT 5'",
            highlight=False,
            soft_wrap=True,
        )
    failed = [r for ph in phases for r in ph.results if r.status != "succeeded"]
    if failed:
        fail(f"{len(failed)} stream run(s) failed", 1)


def settings_db_hint(settings: Settings) -> str:
    from service.db import sqlite_file

    return str(sqlite_file(settings.database.url) or "<database>")


@app.command()
def sandbox(
    port: int = typer.Option(8765, min=0, max=65535, help="Port on 127.0.0.1."),
    records: int = typer.Option(1000, min=10, max=1_000_000, help="Records per entity."),
    latency_ms: float = typer.Option(0.0, "--latency-ms", min=0, help="Added latency per request."),
    seed: int = typer.Option(42, help="Data generator seed."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (0.0.0.0 inside a container)."),
) -> None:
    """Serve the five vendor simulators on 127.0.0.1 (one port, a path prefix per vendor)."""
    from sandbox.app import SandboxOptions
    from sandbox.server import serve_forever

    options = SandboxOptions(records=records, seed=seed, latency_ms=latency_ms)
    try:
        asyncio.run(serve_forever(options, port, host=host))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc.strerror}", 1)


def main() -> None:
    try:
        # Not standalone: click would print a usage error as a boxed, multi-line panel.
        code = app(standalone_mode=False)
    except typer.Abort:  # Ctrl-C inside click's own prompts and parsing
        err.print(error_line("interrupted (SIGINT)"), highlight=False)
        sys.exit(128 + signal.SIGINT)
    except TyperException as exc:  # click's usage and parameter errors (typer vendors click)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            command = ctx.command_path.split(" ", 1)[1:]
            message += f" (see {' '.join(['vendorsync', *command, '--help'])})"
        err.print(error_line(message), highlight=False, soft_wrap=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except SyncError as exc:  # anything a command let through
        err.print(error_line(str(exc)), highlight=False, soft_wrap=True)
        sys.exit(2 if isinstance(exc, (ConfigError, InputError)) else 1)
    except typer.Exit as exc:  # raised outside click's own handling (e.g. by a callback)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # before or after a command's event loop
        err.print(error_line("interrupted (SIGINT)"), highlight=False)
        sys.exit(128 + signal.SIGINT)
    except Exception as exc:
        try:
            internal_error(exc)
        except typer.Exit as done:
            sys.exit(done.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
