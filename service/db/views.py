"""Typed SQL views over ``staged_record``, one per configured stream, for SQL users.

``aimsio__employee`` exposes the record's key, cursor, ``synced_at``, a ``deleted`` flag and
the stream's top-level payload fields as typed columns. Fields come from what
its connector declares (``StreamSpec.fields``) and from the payloads staged so far (the
newest ``SAMPLE_ROWS``), so a configured stream (an Aqua view, an IQA query) gets the
columns its vendor actually sends; ``vendorsync views`` rebuilds them.

Names come from config and from vendor payloads, so nothing here trusts them: view and
column names are reduced to ``[a-z0-9_]`` and quoted, string literals have their quotes
doubled, and a field whose name cannot be written safely as a JSON path is left out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from service.db.engine import translate_db_errors
from service.db.tables import staged_record

SAMPLE_ROWS = 500  # newest payloads read per stream to find its fields
MAX_FIELDS = 200  # PostgreSQL allows 1,664 columns; nobody reads more than this
MAX_IDENT = 63  # PostgreSQL truncates identifiers at 63 bytes
KINDS = ("integer", "number", "boolean", "text")
BASE_COLUMNS = ("record_key", "cursor", "synced_at", "first_seen_at", "deleted", "deleted_at")
# A JSON path label is written between double quotes, with no escape: refuse what could end it.
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_UNSAFE_FIELD = re.compile(r'["\\\x00-\x1f\x7f]')


@dataclass(frozen=True, slots=True)
class ViewColumn:
    name: str  # the view's column
    field: str  # the payload's top-level field
    kind: str  # integer | number | boolean | text


@dataclass(slots=True)
class ViewInfo:
    name: str
    vendor: str
    stream: str
    columns: list[ViewColumn] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # fields left out (unsafe names)


def safe_identifier(text: str, *, prefix: str = "c") -> str:
    """Snake case ``[a-z0-9_]`` (other characters become ``_``), not starting with a digit,
    at most 63 characters (a long name keeps a short hash of the original, so stays unique)."""
    snake = _CAMEL.sub("_", text)  # employeeFirstName → employee_first_name
    name = re.sub(r"[^a-z0-9_]+", "_", snake.lower()).strip("_") or prefix
    if name[0].isdigit():
        name = f"{prefix}_{name}"
    if len(name) > MAX_IDENT:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        name = f"{name[: MAX_IDENT - 9]}_{digest}"
    return name


def view_name(vendor: str, stream: str) -> str:
    """``<connection>__<stream>``, lower-case and safe: ``aimsio__employee``."""
    return safe_identifier(f"{safe_identifier(vendor, prefix='v')}__{stream}", prefix="v")


def infer_kind(values: Iterable[object]) -> str:
    """The narrowest type every non-null value fits: integer, number, boolean, else text."""
    kinds = set()
    for v in values:
        if v is None:
            continue
        if isinstance(v, bool):
            kinds.add("boolean")
        elif isinstance(v, int):
            kinds.add("integer")
        elif isinstance(v, float):
            kinds.add("number")
        else:
            return "text"
    if kinds == {"integer"}:
        return "integer"
    if kinds and kinds <= {"integer", "number"}:
        return "number"
    if kinds == {"boolean"}:
        return "boolean"
    return "text"


def plan_columns(
    payloads: Sequence[object], declared: Sequence[tuple[str, str]] = ()
) -> tuple[list[ViewColumn], list[str]]:
    """Columns for the ``declared`` fields (with their declared kinds), then the other
    top-level fields of ``payloads`` (first seen first); and the fields left out because
    their names cannot be written safely."""
    kinds = {name: kind for name, kind in declared if kind in KINDS}
    seen: dict[str, list[object]] = {name: [] for name in kinds}
    for p in payloads:
        if isinstance(p, dict):
            for k, v in p.items():
                seen.setdefault(str(k), []).append(v)
    used = set(BASE_COLUMNS)
    columns: list[ViewColumn] = []
    skipped: list[str] = []
    for name, values in seen.items():
        if _UNSAFE_FIELD.search(name) or len(columns) >= MAX_FIELDS:
            skipped.append(name)
            continue
        column = base = safe_identifier(name)
        n = 2
        while column in used:
            column = safe_identifier(f"{base}_{n}")
            n += 1
        used.add(column)
        columns.append(ViewColumn(column, name, kinds.get(name) or infer_kind(values)))
    return columns, skipped


def sql_literal(text: str) -> str:
    """A SQL string literal: quotes doubled (NUL refused; neither database stores it)."""
    if "\x00" in text:
        raise ValueError("NUL in a SQL literal")
    return "'" + text.replace("'", "''") + "'"


def _expression(dialect: Dialect, c: ViewColumn) -> str:
    if dialect.name == "postgresql":
        # Cast only values of the right JSON type, so one odd row reads NULL, not an error.
        key = sql_literal(c.field)
        typ = f"jsonb_typeof(payload -> {key})"
        text = f"(payload ->> {key})"
        if c.kind == "integer":
            return (
                f"CASE WHEN {typ} = 'number' AND {text} ~ '^-?[0-9]{{1,18}}$' "
                f"THEN {text}::bigint END"
            )
        if c.kind == "number":
            return f"CASE WHEN {typ} = 'number' THEN {text}::double precision END"
        if c.kind == "boolean":
            return f"CASE WHEN {typ} = 'boolean' THEN {text}::boolean END"
        return text
    path = sql_literal(f'$."{c.field}"')
    typ = f"json_type(payload, {path})"
    value = f"json_extract(payload, {path})"
    if c.kind == "integer":
        return f"CASE WHEN {typ} = 'integer' THEN CAST({value} AS INTEGER) END"
    if c.kind == "number":
        return f"CASE WHEN {typ} IN ('integer', 'real') THEN CAST({value} AS REAL) END"
    if c.kind == "boolean":
        return f"CASE WHEN {typ} IN ('true', 'false') THEN {value} END"
    return f"CAST({value} AS TEXT)"


def view_sql(dialect: Dialect, view: ViewInfo) -> str:
    """The ``CREATE VIEW`` statement (every name quoted, every literal escaped)."""
    q = dialect.identifier_preparer.quote_identifier
    deleted = "deleted_at IS NOT NULL"
    cols = [
        "record_key",
        "cursor",
        "synced_at",
        "first_seen_at",
        f"{deleted} AS deleted" if dialect.name == "postgresql" else f"({deleted}) AS deleted",
        "deleted_at",
        *(f"{_expression(dialect, c)} AS {q(c.name)}" for c in view.columns),
    ]
    return (
        f"CREATE VIEW {q(view.name)} AS SELECT {', '.join(cols)} FROM staged_record "
        f"WHERE vendor = {sql_literal(view.vendor)} AND stream = {sql_literal(view.stream)}"
    )


async def _sample(conn: AsyncConnection, vendor: str, stream: str) -> list[object]:
    t = staged_record
    rows = await conn.execute(
        sa.select(t.c.payload)
        .where(t.c.vendor == vendor, t.c.stream == stream)
        .order_by(t.c.id.desc())
        .limit(SAMPLE_ROWS)
    )
    return list(reversed([r.payload for r in rows]))


@translate_db_errors("creating the staging views")
async def refresh_views(
    conn: AsyncConnection,
    streams: Iterable[tuple[str, str]],
    declared: Mapping[tuple[str, str], Sequence[tuple[str, str]]] | None = None,
) -> list[ViewInfo]:
    """(Re)create the view of every ``(vendor, stream)``; the caller owns the transaction.
    ``declared``: the fields a connector declares per stream (see ``plan_columns``).

    Two streams whose names reduce to the same view name keep the first; the second is
    reported with no columns and no view (``name`` empty).
    """
    dialect = conn.dialect
    q = dialect.identifier_preparer.quote_identifier
    made: list[ViewInfo] = []
    taken: set[str] = set()
    for vendor, stream in streams:
        name = view_name(vendor, stream)
        if name in taken:
            made.append(ViewInfo("", vendor, stream))
            continue
        taken.add(name)
        fields = (declared or {}).get((vendor, stream), ())
        columns, skipped = plan_columns(await _sample(conn, vendor, stream), fields)
        info = ViewInfo(name, vendor, stream, columns, skipped)
        # Drop, then create: the columns may differ from last time (CREATE OR REPLACE on
        # PostgreSQL cannot drop or retype a column).
        await conn.exec_driver_sql(f"DROP VIEW IF EXISTS {q(name)}")
        await conn.exec_driver_sql(view_sql(dialect, info))
        made.append(info)
    return made
