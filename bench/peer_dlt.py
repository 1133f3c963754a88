"""vendorsync ÷ dlt's ``rest_api`` source on the same sandbox streams, plus a naive loop.

Three streams, each against its own sandbox process (vendor latency and limits on):
Aimsio User (list, then GET-one per id; 200 ms; 10/s and 10 in flight), Amilia v3
accounts (``Paging.Next``; 100 ms; 100/s per address, 429 beyond), iMIS Party (offset
with ``TotalCount``; 100 ms; no documented cap, 5 in flight is polite). The vendor is
read once directly first (the truth, and it warms the simulator's rows). Then each tool
pulls the whole stream into the same kind of database (fresh PostgreSQL schemas when the
server answers, else SQLite files), with the sandbox's counters reset before each: our
engine (``run_stream``), dlt (see ``_dlt_side``), and a sequential aiohttp loop that
only fetches. Then the vendor changes 4%, deletes 1% and adds 1% of the records, and both
tools run again incrementally; each staged result is compared with the vendor's, key by
key and version by version. Sandbox CPU per request is read from ``/proc``.
Records/s are end to end (fetch, parse, stage); the ratio is ours ÷ dlt's, in one run.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from bench import size
from bench._dlt_side import Peer, Target, amilia_token, imis_token, quiet_dlt
from bench._peer_streams import STREAMS, Stream, compare, naive, ours, ours_staged, truth
from bench._sandbox import Sandbox
from service.db import migrate

DEFAULT_PG_URL = "postgresql+asyncpg://postgres:postgres@127.0.0.1:5432/test"
# Records per stream: Aimsio User, Amilia accounts, iMIS Party.
FULL, QUICK, TINY = (1000, 20_000, 20_000), (20, 6000, 3000), (4, 400, 200)
MUTATION = {"change": 0.04, "delete": 0.01, "add": 0.01}  # at least 2 changed, 1 deleted, 1 added
MIN_REQUESTS_FOR_RATE = 10  # a rate over fewer arrivals says nothing
DB_ENV = "VENDORSYNC_BENCH_DB"  # "sqlite" forces SQLite even when PostgreSQL answers
TARGETS = {"amilia_accounts": 5.0, "imis_party": 3.0}
CANNOT = {
    "aimsio_user": [
        "a rate cap: rest_api has none (with defaults: {dlt_violations} calls over the cap); a third-party session (requests-ratelimiter) was needed",
        "deletes (ids gone from the list): merge keeps them; only a full re-read with write_disposition=replace drops them",
    ],
    "amilia_accounts": [
        "pages in parallel (TotalCount gives the page count): paginators walk one page at a time",
        "deletes (accounts gone from the walk): merge keeps them; only replace (a full re-read) drops them",
    ],
    "imis_party": [
        "offsets in parallel (TotalCount gives them): paginators walk one page at a time",
        "deletes from PartyDeleteLog applied to Party: rest_api has no way to delete rows from another resource",
    ],
}


def pg_base_url() -> str:
    return os.environ.get("VENDORSYNC_TEST_PG_URL") or DEFAULT_PG_URL


def pg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Databases:
    """Fresh PostgreSQL schemas (dropped at the end) when the server answers, else SQLite."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pg: str | None = None
        self.schemas: list[str] = []

    async def probe(self) -> str:
        if os.environ.get(DB_ENV, "").lower() == "sqlite":
            return "sqlite"
        try:
            conn = await asyncpg.connect(pg_dsn(pg_base_url()), timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return "sqlite"
        await conn.close()
        self.pg = pg_base_url()
        return "postgresql"

    def name(self, prefix: str) -> str:
        schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.schemas.append(schema)
        return schema

    async def ours(self, stream: Stream) -> str:
        """A migrated, empty staging database for our side."""
        if self.pg is None:
            url = f"sqlite+aiosqlite:///{self.workdir}/vendorsync_{stream.name}.db"
        else:
            schema = self.name("bench_vs")
            conn = await asyncpg.connect(pg_dsn(self.pg), timeout=3)
            try:
                await conn.execute(f'CREATE SCHEMA "{schema}"')
            finally:
                await conn.close()
            url = (
                make_url(self.pg)
                .update_query_dict({"options": f"-csearch_path={schema}"})
                .render_as_string(hide_password=False)
            )
        await migrate(url)
        return url

    def target(self) -> Target:
        return Target(self.workdir, None if self.pg is None else pg_dsn(self.pg))

    async def drop(self) -> None:
        if self.pg is None or not self.schemas:
            return
        conn = await asyncpg.connect(pg_dsn(self.pg), timeout=3)
        try:
            for schema in self.schemas:
                # dlt's merge stages its rows in a sibling schema of the dataset's.
                for name in (schema, f"{schema}_staging"):
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        finally:
            await conn.close()


def measured(sb: Sandbox, stream: Stream, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one tool with the sandbox's counters reset; its figures as the vendor saw them."""
    asyncio.run(sb.control(stream.vendor, "reset", {"faults": False}))  # limiter too
    cpu0 = sb.cpu_s()
    got = run()
    cpu_s = sb.cpu_s() - cpu0
    stats = asyncio.run(sb.control(stream.vendor, "stats"))
    requests = stats["requests"]
    span_s = stats["arrival_span_s"] or got["wall_s"]
    rate = (requests - 1) / span_s if requests >= MIN_REQUESTS_FOR_RATE and span_s > 0 else None
    return {
        "records": got["records"],
        "wall_s": round(got["wall_s"], 2),
        "records_per_s": round(got["records"] / got["wall_s"], 1) if got["wall_s"] > 0 else 0.0,
        "requests": requests,
        "requests_per_s": None if rate is None else round(rate, 2),
        "ratio_to_cap": round(rate / stream.cap_per_s, 3) if rate and stream.cap_per_s else None,
        "peak_in_flight": stats["peak_in_flight"],
        "max_per_s": stats["max_per_s"],
        "rate_limited": stats["rate_limited"],
        "timeouts": stats["timeouts"],
        "violations": stats["violation_count"],
        "sandbox_cpu_ms_per_request": round(cpu_s * 1000 / max(1, requests), 2),
    }


def mutation(stream: Stream, records: int) -> dict[str, Any]:
    """Changes, deletes and additions between the two runs (fractions the sandbox applies)."""
    change = max(MUTATION["change"], 2.01 / records)
    delete = max(MUTATION["delete"], 1.01 / records)
    add = max(1, round(MUTATION["add"] * records))
    return {"entity": stream.entity, "change": change, "delete": delete, "add": add, "seed": 5}


def compare_stream(stream: Stream, records: int, dbs: Databases) -> dict[str, Any]:
    """Every tool on one stream, against one sandbox process."""
    vendors: dict[str, dict[str, Any]] = {
        stream.vendor: {"faults": {"latency_ms": stream.latency_ms}}
    }
    if stream.vendor == "imis":  # daily restores would make figures depend on the hour
        vendors["imis"]["restore_windows_utc"] = []
    out: dict[str, Any] = {"size": records}
    with Sandbox(records, vendors) as sb:
        url = sb.url
        asyncio.run(truth(stream, sb))  # warms the simulator's rows for every tool alike
        db_url = asyncio.run(dbs.ours(stream))
        target = dbs.target()
        out["vendorsync"] = measured(
            sb, stream, lambda: asyncio.run(ours(stream, url, db_url, "manual"))
        )
        token = {"aimsio": lambda: None, "amilia": lambda: amilia_token(url), "imis": lambda: imis_token(url)}[stream.vendor]()  # fmt: skip
        peers: dict[str, tuple[Peer, float | None]] = {}
        if stream.vendor == "aimsio":
            # Defaults first (what a user gets), then with the rate-limited session.
            peers["dlt"] = (Peer(target, stream.name, "dlt_default", dbs.name("bench_dlt")), None)
            peers["dlt_limited"] = (
                Peer(target, stream.name, "dlt_limited", dbs.name("bench_dlt")),
                stream.cap_per_s,
            )
        else:
            peers["dlt"] = (Peer(target, stream.name, f"dlt_{stream.name}", dbs.name("bench_dlt")), None)  # fmt: skip
        for label, (peer, rate) in peers.items():
            out[label] = measured(sb, stream, lambda p=peer, r=rate: p.run(url, token, r))  # type: ignore[misc]
        out["naive"] = measured(sb, stream, lambda: asyncio.run(naive(stream, sb)))
        touched = asyncio.run(sb.control(stream.vendor, "mutate", mutation(stream, records)))
        out["mutation"] = {k: len(touched.get(k, [])) for k in ("changed", "deleted", "added")}
        vendor_now = asyncio.run(truth(stream, sb))
        inc = measured(sb, stream, lambda: asyncio.run(ours(stream, url, db_url, "schedule")))
        inc["equals_vendor"] = compare(asyncio.run(ours_staged(stream, url, db_url)), vendor_now)
        out["vendorsync_incremental"] = inc
        label = "dlt_limited" if "dlt_limited" in peers else "dlt"
        peer, rate = peers[label]
        inc = measured(sb, stream, lambda: peer.run(url, token, rate))
        inc["equals_vendor"] = compare(peer.staged(), vendor_now)
        out[f"{label}_incremental"] = inc
    compliant = out[label]  # the dlt run that kept the vendor's limits, where one had to
    out["ratio_records_per_s"] = round(
        out["vendorsync"]["records_per_s"] / max(compliant["records_per_s"], 1e-9), 2
    )
    out["ratio_against"] = label
    out["dlt_cannot_express"] = [
        what.format(dlt_violations=out["dlt"]["violations"]) for what in CANNOT[stream.name]
    ]
    return out


COLUMNS = ("records", "wall s", "rec/s", "req/s ÷ cap", "peak", "busiest 1 s", "429s", "viol.", "sb CPU ms/req", "equals vendor")  # fmt: skip
TOOLS = {
    "vendorsync": "vendorsync",
    "dlt": "dlt rest_api (parallelized, defaults)",
    "dlt_limited": "dlt + LimiterSession(per_second=10)",
    "naive": "naive sequential aiohttp (fetch only)",
    "vendorsync_incremental": "vendorsync, incremental",
    "dlt_incremental": "dlt, incremental (merge)",
    "dlt_limited_incremental": "dlt + LimiterSession, incremental",
}


def row(label: str, f: dict[str, Any], stream: Stream) -> list[str]:
    if f["requests_per_s"] is None:
        rate = f"({f['requests']} requests)"
    elif stream.cap_per_s:
        rate = f"{f['requests_per_s']:.1f} ÷ {stream.cap_per_s:.0f} = {f['ratio_to_cap']:.2f}"
    else:
        rate = f"{f['requests_per_s']:.1f} (no cap)"
    eq = f.get("equals_vendor")
    if eq is None:
        equals = "—"
    elif eq["equal"]:
        equals = "yes"
    else:
        what = [f"{eq[k]} {k.replace('_', ' ')}" for k in ("deleted_kept", "missing", "stale") if eq[k]]  # fmt: skip
        equals = "no: " + ", ".join(what)
    return [
        TOOLS[label], str(f["records"]), f"{f['wall_s']:.2f}", f"{f['records_per_s']:.0f}", rate,
        str(f["peak_in_flight"]), str(f["max_per_s"]), str(f["rate_limited"]), str(f["violations"]),
        f"{f['sandbox_cpu_ms_per_request']:.2f}", equals,
    ]  # fmt: skip


def table(stream: Stream, out: dict[str, Any]) -> list[str]:
    """One stream's rows, as a Markdown table (readable as text too)."""
    lines = [
        f"| {stream.name} ({out['size']} records, {stream.latency_ms} ms) | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]  # fmt: skip
    for label in TOOLS:
        if label in out:
            lines.append("| " + " | ".join(row(label, out[label], stream)) + " |")
    for what in out["dlt_cannot_express"]:
        lines.append(f"| dlt cannot express | {what} |" + " |" * (len(COLUMNS) - 1))
    m = out["mutation"]
    lines.append(
        f"\nvendorsync ÷ dlt records/s: **{out['ratio_records_per_s']}×** (against `{out['ratio_against']}`); "
        f"incremental after {m['changed']} changed, {m['deleted']} deleted, {m['added']} added."
    )  # fmt: skip
    return lines


def main(quick: bool) -> dict[str, Any]:
    sizes = size(FULL, QUICK, TINY, is_quick=quick)
    with tempfile.TemporaryDirectory(prefix="bench-dlt-") as tmp:
        workdir = Path(tmp)
        quiet_dlt(workdir)
        dbs = Databases(workdir)
        database = asyncio.run(dbs.probe())
        results: dict[str, Any] = {}
        try:
            for stream, records in zip(STREAMS, sizes, strict=True):
                results[stream.name] = compare_stream(stream, records, dbs)
        finally:
            asyncio.run(dbs.drop())
    print(f"peer_dlt: vendorsync vs dlt rest_api vs a naive loop, same sandbox, into {database}")
    print(
        "records: staged by a full run; written (ours) or loaded (dlt) by an incremental one. "
        "rec/s end to end (fetch, parse, stage); sb CPU: the sandbox process's CPU per request."
    )
    for stream in STREAMS:
        print()
        print("\n".join(table(stream, results[stream.name])))
    ours_inc = [results[s.name]["vendorsync_incremental"] for s in STREAMS]
    ours_full = [results[s.name]["vendorsync"] for s in STREAMS]
    violations = sum(f["violations"] + f["rate_limited"] for f in ours_inc + ours_full)
    correct = all(f["equals_vendor"]["equal"] for f in ours_inc)
    ratios = {s.name: results[s.name]["ratio_records_per_s"] for s in STREAMS}
    checks = {f"ratio_{k}": ratios[k] >= v for k, v in TARGETS.items()}
    checks |= {"vendorsync_violations": violations == 0, "vendorsync_incremental_correct": correct}
    met = all(checks.values())
    if not met:
        print(f"\ntargets missed: {', '.join(k for k, ok in checks.items() if not ok)}")
    return {
        "database": database,
        **{f"ratio_{k}": v for k, v in ratios.items()},
        "vendorsync_violations": violations,
        "vendorsync_incremental_correct": correct,
        "dlt_incremental_correct": all(
            results[s.name][k]["equals_vendor"]["equal"]
            for s in STREAMS
            for k in results[s.name]
            if k.startswith("dlt") and k.endswith("_incremental")
        ),
        "targets": TARGETS,
        "checks": checks,
        "met": met,
        "streams": results,
    }
