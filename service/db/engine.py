"""Engine factory, migrations, schema check, and the one place database errors are translated.

Tables are created only by Alembic migrations (``migrate``); service code never calls
``metadata.create_all``.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.config import mask_url
from service.errors import ConfigError, SchemaBehind, StagingError, SyncError

P = ParamSpec("P")
T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
WAL_SWITCH_ATTEMPTS = 100  # x 50 ms
SQLITE_BUSY_TIMEOUT_MS = 5000
MIN_SQLITE = (3, 35)
LOW_DISK_BYTES = 1 << 20  # below this, an I/O error of SQLite is taken for a full disk
MIGRATION_LOCK_ID = 0x76656E64  # PostgreSQL advisory lock key held while migrating ("vend")

# --- errors -------------------------------------------------------------------------------


_SA_LINK = re.compile(r"\s*\(Background on this (?:error|warning) at: \S+\)")


def _describe(exc: BaseException) -> str:
    """A short, password-free message: the driver's own words, never the SQL parameters."""
    orig = getattr(exc, "orig", None) or exc
    lines = _SA_LINK.sub("", str(orig)).strip().splitlines()
    text = lines[0].strip() if lines else ""
    return mask_url(f"{type(orig).__name__}: {text}" if text else type(orig).__name__)


# SQLite files engines were made for: "unable to open database file" names no path, so the
# translation looks here for the one whose folder cannot be written.
_SQLITE_FILES: set[Path] = set()
_READ_ONLY = ("readonly database", "read-only transaction", "read-only file system")
_FULL = ("database or disk is full", "no space left on device", "disk full")


def _unwritable_sqlite() -> Path | None:
    for path in sorted(_SQLITE_FILES):
        folder = path.parent
        if folder.is_dir() and not os.access(folder, os.W_OK):
            return path
        if path.exists() and not os.access(path, os.W_OK):
            return path
    return None


def _full_sqlite() -> str | None:
    for path in sorted(_SQLITE_FILES):
        try:
            st = os.statvfs(path.parent)
        except OSError:
            continue
        free = st.f_bavail * st.f_frsize
        if free < LOW_DISK_BYTES:
            return f"{free // 1024} KiB free on the file system of {path.parent}"
    return None


def _condition(exc: BaseException, text: str) -> tuple[str, str]:
    """What a storage failure means for the user ("database is read-only", "database disk
    is full", or the generic "database error"), and the driver text, completed when the
    driver's own words do not say it."""
    lowered = text.lower()
    orig = getattr(exc, "orig", None) or exc
    sqlstate = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    if sqlstate == "25006" or any(w in lowered for w in _READ_ONLY):
        return "database is read-only", text
    if sqlstate.startswith("53") or any(w in lowered for w in _FULL):
        return "database disk is full", text
    if "disk i/o error" in lowered:
        # SQLite reports a full disk as an I/O error when it cannot grow its -shm file.
        full = _full_sqlite()
        if full is not None:
            return "database disk is full", f"{text} ({full})"
    if "unable to open database file" in lowered:
        path = _unwritable_sqlite()
        if path is not None:
            # SQLite writes a -wal and a -shm file beside the database, even to read it.
            why = f"{text} ({path.parent} is not writable: read-only file system or permissions)"
            return "database is read-only", why
    return "database error", text


_TRANSLATED: tuple[type[BaseException], ...] = (
    sa_exc.SQLAlchemyError,
    sqlite3.Error,
    OSError,  # includes ConnectionRefusedError and TimeoutError from asyncpg's connect
    CommandError,
)
try:  # asyncpg is always installed in practice; keep SQLite-only environments importable.
    import asyncpg

    _TRANSLATED += (asyncpg.PostgresError, asyncpg.InterfaceError)
except ImportError:  # pragma: no cover
    pass


class _TranslateDbErrors:
    """Context manager and decorator (for async functions): foreign DB errors → StagingError."""

    def __init__(self, op: str | None = None) -> None:
        self.op = op

    def __enter__(self) -> _TranslateDbErrors:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            return
        if type(exc) is StagingError and self.op and " while " not in str(exc).split(":")[0]:
            # Translated by an inner function: name the operation it was part of.
            cause = exc.__cause__
            if isinstance(cause, _TRANSLATED):
                what, text = _condition(cause, _describe(cause))
            else:
                what, text = "database error", str(exc)
            raise StagingError(f"{what} while {self.op}: {text}") from cause
        if isinstance(exc, SyncError):
            return
        if isinstance(exc, _TRANSLATED):
            what, text = _condition(exc, _describe(exc))
            if self.op:
                raise StagingError(f"{what} while {self.op}: {text}") from exc
            raise StagingError(text if what == "database error" else f"{what}: {text}") from exc

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            with self:
                return await fn(*args, **kwargs)

        return wrapper


def translate_db_errors(op: str | None = None) -> _TranslateDbErrors:
    """``with translate_db_errors("saving a batch"):`` or ``@translate_db_errors()``.

    SQLAlchemy, driver and connection errors leave as ``StagingError`` (``raise … from exc``),
    with a message that carries no SQL parameters and no passwords; with ``op`` it reads
    ``database error while <op>: …``. Wrap a whole ``async with engine.begin()`` block in it
    so connect and commit failures are translated too, not only the statements.
    """
    return _TranslateDbErrors(op)


# --- engine -------------------------------------------------------------------------------


def _normalise_url(url: str) -> tuple[URL, dict[str, Any]]:
    """Pick the async driver and turn libpq-style ``options=-c k=v`` into asyncpg settings."""
    try:
        u = make_url(url)
    except (sa_exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(f"not a database URL: {mask_url(url)!r}", key="database.url") from None
    connect_args: dict[str, Any] = {}
    backend = u.get_backend_name()
    if backend == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql":
        u = u.set(drivername="postgresql+asyncpg")
        options = u.query.get("options")
        if options is not None:
            server_settings = _parse_pg_options(
                options if isinstance(options, str) else " ".join(options)
            )
            connect_args["server_settings"] = server_settings
            u = u.difference_update_query(["options"])
    else:
        raise ConfigError(
            f"unsupported database {mask_url(url)!r}: use sqlite or postgresql",
            key="database.url",
        )
    return u, connect_args


def _parse_pg_options(options: str) -> dict[str, str]:
    settings: dict[str, str] = {}
    words = shlex.split(options)
    for i, word in enumerate(words):
        pair = word[2:] if word.startswith("-c") and len(word) > 2 else None
        if word == "-c" and i + 1 < len(words):
            pair = words[i + 1]
        if pair and "=" in pair:
            key, value = pair.split("=", 1)
            settings[key.strip()] = value.strip()
    return settings


def _sqlite_on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "locked" at
    # once (no busy wait) when another connection is switching it too: retry, bounded.
    for attempt in range(WAL_SWITCH_ATTEMPTS):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if attempt == WAL_SWITCH_ATTEMPTS - 1:
                raise
            time.sleep(0.05)
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cur.close()


def _sqlite_parent(path: Path) -> None:
    """Create the database file's folder; a path that cannot hold a database is bad config."""
    if path.is_dir():
        raise ConfigError(f"the SQLite database path is a directory: {path}", key="database.url")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the folder of the SQLite database {path}: {exc.strerror}",
            key="database.url",
        ) from None


def create_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An async engine for a SQLite file (WAL, busy timeout, foreign keys) or PostgreSQL.

    For PostgreSQL, a libpq-style ``?options=-csearch_path%3Dstaging`` sets server settings.
    """
    u, connect_args = _normalise_url(url)
    if u.get_backend_name() == "sqlite":
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StagingError(
                f"SQLite {sqlite3.sqlite_version} is too old: vendorsync needs 3.35+ "
                "(UPSERT with RETURNING)"
            )
        if u.database and u.database != ":memory:" and not u.database.startswith("file:"):
            path = Path(u.database).expanduser()
            _sqlite_parent(path)
            _SQLITE_FILES.add(path.resolve())
        try:
            engine = create_async_engine(
                u, echo=echo, hide_parameters=not echo, connect_args=connect_args
            )
        except sa_exc.ArgumentError as exc:  # e.g. sqlite://relative.db (two slashes)
            raise ConfigError(_describe(exc), key="database.url") from None
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return engine
    return create_async_engine(
        u, echo=echo, hide_parameters=not echo, connect_args=connect_args, pool_pre_ping=True
    )


# --- migrations ---------------------------------------------------------------------------


def alembic_config(url: str | None = None) -> Config:
    """The project's Alembic config, usable from any working directory."""
    ini = PROJECT_ROOT / "alembic.ini"
    # An installed (non-editable) package ships migrations/ but not alembic.ini.
    cfg = Config(str(ini)) if ini.exists() else Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        cfg.attributes["url"] = url
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def _current_revision(sync_conn: sa.Connection) -> str | None:
    return MigrationContext.configure(sync_conn).get_current_revision()


@translate_db_errors()
async def schema_revision(engine: AsyncEngine) -> str | None:
    """The database's Alembic revision, or None when it was never migrated."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current_revision)


@translate_db_errors()
async def migrate(engine_or_url: AsyncEngine | str) -> str:
    """Upgrade the schema to head (a no-op when already there); returns the new revision."""
    engine = create_engine(engine_or_url) if isinstance(engine_or_url, str) else engine_or_url
    try:
        async with engine.begin() as conn:
            # Concurrent migrators (replicas starting together) wait for each other, then
            # find the schema at head. The sqlite3 driver autocommits DDL; an explicit
            # BEGIN IMMEDIATE makes the upgrade atomic and takes the write lock first.
            if conn.dialect.name == "sqlite":
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_ID)))

            def upgrade(sync_conn: sa.Connection) -> str | None:
                cfg = alembic_config()
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, "head")
                return _current_revision(sync_conn)

            revision = await conn.run_sync(upgrade)
    finally:
        if isinstance(engine_or_url, str):
            await engine.dispose()
    assert revision is not None
    return revision


async def check_schema(engine: AsyncEngine) -> None:
    """Raise ``SchemaBehind`` unless the database is at the latest migration."""
    current = await schema_revision(engine)
    head = head_revision()
    if current == head:
        return
    known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current is not None and current not in known:
        raise StagingError(
            f"database schema is at {current}, which this version does not know "
            f"(latest here is {head}): upgrade vendorsync"
        )
    raise SchemaBehind(
        f"database schema is at {current or 'none (empty database)'}, needs {head}: "
        "run `vendorsync migrate`"
    )
