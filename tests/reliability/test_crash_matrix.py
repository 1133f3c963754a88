"""Crash matrix: a sync SIGKILLed at seeded random moments, then run again, converges.

Per mechanism and database: ``TRIALS`` trials. Each starts ``vendorsync resync`` in a
subprocess against the sandbox (in this process, so the truth is read straight from it),
kills it with SIGKILL after a random delay (some land before the first request, most mid-
run, a few after the end), runs it again until it succeeds (the dead process's leases
expire after ``lease_ttl_s``), then checks: staging equals the vendor exactly (every key
and payload hash), the checkpoint is not ahead of the staged rows, the sandbox saw no
limit violation. Between trials the sandbox changes, deletes and adds rows; every other
trial is a ``--full`` re-read, so kills also land in long runs.

The AIMMS PRO task exchange is killed 0.1-1.6 s after its task exists (mostly before the
result is read); the rerun must follow that task, and no task may be left at the vendor.
The push engine has its own trials: each enqueues new users, updates of earlier ones and a
row the vendor refuses, kills ``vendorsync push`` (every other trial within 30 ms of the
vendor taking a batch, before the outcomes are recorded), runs it until the outbox is
drained, then checks every outbox row against what the sandbox received (its upsert is
wrapped to log each row and its fate): no row lost, none sent twice with different
outcomes, every final status the vendor's verdict, the vendor holding each key's newest row.

The outcome table: ``pytest -m long -s tests/reliability/test_crash_matrix.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.db import create_engine, fetch_live, staged_cursors
from service.models import payload_hash
from tests.integration.aimms.conftest import FAST as AIMMS_FAST
from tests.integration.aimms.conftest import control as aimms_control
from tests.integration.aimms.conftest import vendor_get as aimms_get
from tests.integration.aimsio.conftest import control as aimsio_control
from tests.integration.aimsio.conftest import vendor_get as aimsio_get
from tests.integration.amilia.conftest import control as amilia_control
from tests.integration.amilia.conftest import vendor_items
from tests.integration.aqua.conftest import CREDENTIALS as AQUA_CREDENTIALS
from tests.integration.aqua.conftest import FAST as AQUA_FAST
from tests.integration.aqua.conftest import as_csv_row, stream_options, vendor_rows
from tests.integration.aqua.conftest import control as aqua_control
from tests.integration.imis.conftest import control as imis_control
from tests.integration.imis.conftest import vendor_all

pytestmark = [pytest.mark.long, pytest.mark.timeout(900)]

TRIALS = 10  # per mechanism and database: 20 per mechanism
ROOT = Path(__file__).resolve().parents[2]
VENDORSYNC = [sys.executable, "-c", "from service.cli import main; main()"]
OUTCOMES: list[tuple[str, str, int, int, int, int, str]] = []


def toml_value(value: Any) -> str:
    """JSON-shaped data as TOML (inline tables), enough for a test config."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + ", ".join(items) + " }"
    raise TypeError(type(value))


@dataclass
class Mechanism:
    name: str
    vendor: str
    stream: str
    records: int
    kill_within_s: float
    settings: Callable[[str], dict[str, Any]]  # sandbox vendor URL → vendor settings
    truth: Callable[[RunningSandbox], Awaitable[dict[str, str]]]  # key → payload hash
    mutate: Callable[[RunningSandbox, int], Awaitable[None]]
    sandbox: dict[str, Any] = field(default_factory=dict)
    cursors: bool = False  # the truth gives cursors, not payload hashes
    note: Callable[[RunningSandbox], str] | None = None  # for the outcome table
    kill_from_s: float = 0.2
    # The kill delay counts from when this turns true (else from the start).
    armed: Callable[[RunningSandbox], Callable[[], bool]] | None = None
    alternate_full: bool = True  # every other trial a --full run


# --- the mechanisms ---------------------------------------------------------------------------
RETRY = {"max_attempts": 8, "base_s": 0.05, "max_backoff_s": 0.5}


async def amilia_truth(sb: RunningSandbox) -> dict[str, str]:
    items = await vendor_items(sb, "accounts?showArchived=true")
    return {str(i["Id"]): payload_hash(i) for i in items}


async def amilia_mutate(sb: RunningSandbox, seed: int) -> None:
    change = {"entity": "accounts", "change": 0.03, "delete": 0.02, "add": 5, "seed": seed}
    await amilia_control(sb, "mutate", change)


async def imis_truth(sb: RunningSandbox) -> dict[str, str]:
    from service.connectors.imis_query import unwrap

    return {str(r["PartyId"]): payload_hash(unwrap(r)) for r in await vendor_all(sb, "Party")}


async def imis_mutate(sb: RunningSandbox, seed: int) -> None:
    await imis_control(
        sb, "mutate", {"entity": "Party", "change": 0.03, "delete": 0.02, "add": 5, "seed": seed}
    )


async def aimsio_truth(sb: RunningSandbox) -> dict[str, str]:
    # The cursor (updatedAt) of every listed row: a row staged at the listed version was
    # fetched at that version (GET-one is deterministic per version).
    return {str(s["guid"]): str(s["updatedAt"]) for s in await aimsio_get(sb, "User")}


async def aimsio_mutate(sb: RunningSandbox, seed: int) -> None:
    change = {"entity": "User", "change": 0.1, "delete": 0.05, "add": 2, "seed": seed}
    await aimsio_control(sb, "mutate", change)


async def aqua_truth(sb: RunningSandbox) -> dict[str, str]:
    return {r["Order No"]: payload_hash(as_csv_row(r)) for r in vendor_rows(sb)}


async def aqua_mutate(sb: RunningSandbox, seed: int) -> None:
    change = {"entity": "Orders", "change": 0.03, "delete": 0.02, "seed": seed}
    await aqua_control(sb, "mutate", change)


async def aimms_truth(sb: RunningSandbox) -> dict[str, str]:
    users = await aimms_get(sb, "/pro-api/v1/authentication/users")
    return {str(u["id"]): payload_hash(u) for u in users}


async def aimms_mutate(sb: RunningSandbox, seed: int) -> None:
    change = {"entity": "users", "change": 0.1, "delete": 0.05, "add": 3, "seed": seed}
    await aimms_control(sb, "mutate", change)


def aimms_task_created(sb: RunningSandbox) -> Callable[[], bool]:
    """True once the run under test created its task: kills land after that."""
    queue = sb.sims["aimms"].queue  # type: ignore[attr-defined]
    before = queue.created
    return lambda: bool(queue.created > before)


def aimms_tasks(sb: RunningSandbox) -> str:
    # Completed tasks are deleted by the run that read them: a task still listed was lost
    # by a killed run (no later run followed it to its end).
    queue = sb.sims["aimms"].queue  # type: ignore[attr-defined]
    left = len(list(queue.runs()))
    assert left == 0, f"{left} tasks of killed runs were never followed to their end"
    return f"{queue.created} tasks created for {TRIALS} runs, 0 left at the vendor"


MECHANISMS = [
    Mechanism(
        "listing diff (Aimsio)",
        "aimsio",
        "User",
        records=30,
        kill_within_s=4.0,
        settings=lambda url: {
            "base_url": url,
            "max_parallel": 10,
            "rate_per_s": 10,
            # The sandbox gives up on a queued request after 1 s: so may we, on a dead
            # holder's requests, before taking its place.
            "vendor_timeout_s": 1.0,
            "auth": {"kind": "basic", "username": "demo", "password": "demo-secret"},
            "retry": RETRY,
            "streams": {"User": {}},
        },
        truth=aimsio_truth,
        mutate=aimsio_mutate,
        cursors=True,
        sandbox={"vendors": {"aimsio": {"limits": {"queue_timeout_s": 1.0}}}},
    ),
    Mechanism(
        "export job (Aqua)",
        "aqua",
        "Orders",
        records=3000,
        kill_within_s=2.5,
        settings=lambda url: {
            "base_url": url,
            "auth": AQUA_CREDENTIALS,
            "retry": RETRY,
            "streams": {"Orders": {"options": stream_options()}},
        },
        truth=aqua_truth,
        mutate=aqua_mutate,
        sandbox={"vendors": {"aqua": AQUA_FAST}},
    ),
    Mechanism(
        "page-following (Amilia)",
        "amilia",
        "accounts",
        records=2000,
        kill_within_s=2.5,
        settings=lambda url: {
            "base_url": url,
            "max_parallel": 20,
            "rate_per_s": 100,
            "auth": {
                "kind": "basic_jwt",
                "username": "demo@amilia.test",
                "password": "demo-secret",
            },
            "retry": RETRY,
            "options": {"per_page": 25},
            "streams": {"accounts": {}},
        },
        truth=amilia_truth,
        mutate=amilia_mutate,
        sandbox={"latency_ms": 10},
    ),
    Mechanism(
        "filtered offset paging (iMIS)",
        "imis",
        "Party",
        records=1500,
        kill_within_s=2.5,
        settings=lambda url: {
            "base_url": url,
            "max_parallel": 5,
            "rate_per_s": 50,
            "auth": {"kind": "password_grant", "username": "demo", "password": "demo-secret"},
            "retry": RETRY,
            "blackouts": [],
            "options": {"page_size": 50, "lookback_s": 3600},
            "streams": {"Party": {}},
        },
        truth=imis_truth,
        mutate=imis_mutate,
        sandbox={"latency_ms": 10},
    ),
    Mechanism(
        "tasks (AIMMS PRO)",
        "aimms",
        "export",
        records=60,
        # Killed 0.1-1.6 s after its task was created: a task takes ~1.4 s, so most kills
        # land between the task's creation and the read of its result. (A kill in the few
        # ms between PRO's answer and the commit of the task id would leave the task to
        # no one: that window is not closable, vendor and database commit apart.)
        kill_from_s=0.1,
        kill_within_s=1.6,
        armed=aimms_task_created,
        alternate_full=False,  # an exchange is always complete; --full would not resume
        settings=lambda url: {
            "base_url": url,
            "max_parallel": 4,
            "rate_per_s": 50,
            # PRO keeps no request queue: a dead holder's calls are over within a timeout.
            "timeout_s": 5,
            "vendor_timeout_s": 0.5,
            "auth": {"kind": "apikey", "api_key": "demo-apikey-all-scopes"},
            "retry": RETRY,
            "streams": {
                "export": {
                    "options": {
                        "app": "SupplyPlanner",
                        "service": "export_users",
                        "key": "id",
                        "delete_completed": True,
                        **AIMMS_FAST,
                    }
                }
            },
        },
        truth=aimms_truth,
        mutate=aimms_mutate,
        sandbox={
            "vendors": {
                "aimms": {
                    "task_phases_s": {"assigned": 0.2, "running": 0.6, "solving": 0.6},
                    "tick_interval_s": 0.05,
                }
            }
        },
        note=aimms_tasks,
    ),
]


# --- the harness --------------------------------------------------------------------------------
async def vendorsync(*args: str, cwd: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VENDORSYNC_LOG_LEVEL": "warning"}
    env.pop("VENDORSYNC_CONFIG", None)
    return await asyncio.create_subprocess_exec(
        *VENDORSYNC, *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def finish(*args: str, cwd: Path) -> None:
    """Run to success; a lease of the killed process is waited out (bounded)."""
    last = b""
    for _ in range(40):
        proc = await vendorsync(*args, cwd=cwd)
        _, last = await asyncio.wait_for(proc.communicate(), 300)
        if proc.returncode == 0:
            return
        if b"lease" not in last:
            break
        await asyncio.sleep(0.25)
    raise AssertionError(f"the run after the crash failed: {last.decode()[-600:]}")


async def staged(
    db_url: str, vendor: str, stream: str, *, cursors: bool
) -> tuple[dict[str, str], Any]:
    eng = create_engine(db_url)
    try:
        async with eng.connect() as conn:
            live = await fetch_live(conn, vendor, stream)
            by_cursor = await staged_cursors(conn, vendor, stream)
            state = (
                await conn.execute(
                    sa.text("SELECT state FROM stream_state WHERE vendor = :v AND stream = :s"),
                    {"v": vendor, "s": stream},
                )
            ).scalar()
            max_cursor = (
                await conn.execute(
                    sa.text(
                        "SELECT max(cursor) FROM staged_record WHERE vendor = :v AND stream = :s"
                    ),
                    {"v": vendor, "s": stream},
                )
            ).scalar()
    finally:
        await eng.dispose()
    if isinstance(state, str):
        state = json.loads(state)
    if cursors:
        return {k: str(c) for k, c in by_cursor.items()}, (state, max_cursor)
    return {k: payload_hash(v) for k, v in live.items()}, (state, max_cursor)


@pytest.mark.parametrize("mech", MECHANISMS, ids=lambda m: m.vendor)
async def test_killed_syncs_converge(mech: Mechanism, db_url: str, tmp_path: Path) -> None:
    sb = await start_sandbox(
        SandboxOptions(records=mech.records, seed=5, **mech.sandbox), vendors=(mech.vendor,)
    )
    try:
        config = {
            "log_level": "warning",
            "database": {"url": db_url},
            "sync": {"batch_size": 100, "lease_ttl_s": 1.5, "heartbeat_s": 0.4},
            "vendors": {mech.vendor: mech.settings(sb.url(mech.vendor))},
        }
        cfg = tmp_path / "vendorsync.toml"
        cfg.write_text("\n".join(f"{k} = {toml_value(v)}" for k, v in config.items()) + "\n")
        await finish("migrate", "--config", str(cfg), cwd=tmp_path)
        rng = random.Random(f"crash:{mech.vendor}:{db_url.split(':')[0]}")
        killed = finished = 0
        for trial in range(TRIALS):
            args = ["resync", mech.vendor, mech.stream, "--config", str(cfg)]
            if trial % 2 and mech.alternate_full:
                args.append("--full")
            ready = mech.armed(sb) if mech.armed else None
            proc = await vendorsync(*args, cwd=tmp_path)
            for _ in range(3000):  # 60 s at most
                if ready is None or ready() or proc.returncode is not None:
                    break
                await asyncio.sleep(0.02)
            try:
                await asyncio.wait_for(
                    proc.wait(), rng.uniform(mech.kill_from_s, mech.kill_within_s)
                )
                finished += 1
            except TimeoutError:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                killed += 1
            await finish(*args, cwd=tmp_path)
            # Our own reads of the truth below are calls the vendor counts too: keep them
            # out of the last run's rate window.
            await asyncio.sleep(1.05)
            got, (state, max_cursor) = await staged(
                db_url, mech.vendor, mech.stream, cursors=mech.cursors
            )
            want = await mech.truth(sb)
            assert got.keys() == want.keys(), f"trial {trial}: keys differ"
            assert got == want, f"trial {trial}: payloads differ"
            cursor = (state or {}).get("cursor")
            if isinstance(cursor, str) and max_cursor is not None:
                assert cursor <= max_cursor, f"trial {trial}: checkpoint ahead of the data"
            await mech.mutate(sb, trial)
        violations = sb.sims[mech.vendor].stats.violation_count
        db = db_url.split("+")[0].split(":")[0]
        outcome = "converged" + (f"; {mech.note(sb)}" if mech.note else "")
        OUTCOMES.append((mech.name, db, TRIALS, killed, finished, violations, outcome))
        print_table()
        assert violations == 0, sb.sims[mech.vendor].stats.violations
    finally:
        await sb.close()


def print_table() -> None:
    print("\nmechanism                       database    trials killed ended-first violations")
    for name, db, trials, killed, ended, violations, outcome in OUTCOMES:
        print(f"{name:<32}{db:<12}{trials:>6}{killed:>7}{ended:>12}{violations:>11}  {outcome}")


# --- the push engine --------------------------------------------------------------------------
PUSH_ROWS = 12  # per trial: 8 new users, 3 updates of earlier ones, 1 the vendor rejects
PUSH_BATCH = 3  # several vendor calls per run, so kills land between them
PUSH_CLAIM_TTL_S = 1.5


def push_rows(trial: int) -> list[dict[str, Any]]:
    def user(name: str, first: str) -> dict[str, Any]:
        return {
            "userName": name,
            "userFirstName": first,
            "userLastName": "Crash",
            "userRoleNames": ["Field Worker"],
            "userIsActive": True,
        }

    rows = [user(f"new{trial}.{i}@crash.test", f"T{trial}") for i in range(8)]
    rows += [user(f"new{t}.{i}@crash.test", f"T{trial}u") for t, i in ((trial - 1, 0),
             (trial - 1, 1), (max(trial - 2, 0), 2))]  # fmt: skip
    rows.append(user(f"refused{trial}@crash.test", "R"))  # in the sandbox's reject_keys
    return rows


@dataclass
class Receipt:
    key: str
    payload: str  # hash of the row as sent
    outcome: str  # created | edited | rejected


def record_receipts(sb: RunningSandbox) -> list[Receipt]:
    """Wrap the Aimsio sandbox's upsert: every row it is sent, with what it did to it
    (test instrumentation: the simulator itself keeps no such log)."""
    store = sb.sims["aimsio"].store  # type: ignore[attr-defined]
    receipts: list[Receipt] = []
    upsert = store.upsert

    def logged(spec: Any, row: Any, tally: Any, now: int, reject: Any) -> None:
        before = (tally.created, tally.edited, tally.not_imported)
        upsert(spec, row, tally, now, reject)
        after = (tally.created, tally.edited, tally.not_imported)
        outcome = ("created", "edited", "rejected")[
            [a != b for a, b in zip(before, after, strict=True)].index(True)
        ]
        receipts.append(Receipt(str(row.get("userName")), payload_hash(row), outcome))

    store.upsert = logged
    return receipts


async def outbox_rows(db_url: str) -> list[dict[str, Any]]:
    eng = create_engine(db_url)
    try:
        async with eng.connect() as conn:
            result = await conn.execute(
                sa.text(
                    "SELECT id, record_key, payload_hash, status, attempts FROM push_outbox"
                    " ORDER BY id"
                )
            )
            return [dict(r._mapping) for r in result]
    finally:
        await eng.dispose()


async def push_until_done(db_url: str, cfg: Path, cwd: Path) -> int:
    """``vendorsync push`` until no row waits; exit 1 (a rejected row, a lease still held)
    is expected on the way, a traceback never. Returns the number of runs."""
    for n in range(1, 41):
        proc = await vendorsync("push", "--config", str(cfg), cwd=cwd)
        _, err = await asyncio.wait_for(proc.communicate(), 120)
        text = err.decode(errors="replace")
        assert "Traceback" not in text, text[-2000:]
        assert proc.returncode in (0, 1), text[-1000:]
        left = [r for r in await outbox_rows(db_url) if r["status"] in ("pending", "sending")]
        if not left:
            return n
        await asyncio.sleep(0.3)  # a dead run's claims and lease expire
    raise AssertionError(f"outbox not drained after 40 runs: {left[:5]}")


async def test_killed_pushes_lose_nothing_and_never_contradict(db_url: str, tmp_path: Path) -> None:
    sb = await start_sandbox(SandboxOptions(records=5, seed=5, latency_ms=40), vendors=("aimsio",))
    try:
        await aimsio_control(sb, "faults", {"extra": {"reject_keys": [
            f"refused{t}@crash.test" for t in range(TRIALS)
        ]}})  # fmt: skip
        receipts = record_receipts(sb)
        aimsio = MECHANISMS[0].settings(sb.url("aimsio"))
        config = {
            "log_level": "warning",
            "database": {"url": db_url},
            "sync": {"lease_ttl_s": 1.5, "heartbeat_s": 0.4},
            "push": {
                "batch_size": PUSH_BATCH,
                "claim_ttl_s": PUSH_CLAIM_TTL_S,
                "max_attempts": 50,  # kills spend no attempts; transient errors a few
                "backoff_base_s": 0.1,
            },
            "vendors": {"aimsio": aimsio},
        }
        cfg = tmp_path / "vendorsync.toml"
        cfg.write_text("\n".join(f"{k} = {toml_value(v)}" for k, v in config.items()) + "\n")
        await finish("migrate", "--config", str(cfg), cwd=tmp_path)
        rng = random.Random(f"crash:push:{db_url.split(':')[0]}")
        killed = finished = 0
        for trial in range(TRIALS):
            rows = tmp_path / "rows.jsonl"
            rows.write_text("".join(json.dumps(r) + "\n" for r in push_rows(trial)))
            await finish("push", "enqueue", "--file", str(rows), "--vendor", "aimsio",
                         "--entity", "User", "--config", str(cfg), cwd=tmp_path)  # fmt: skip
            seen = len(receipts)
            proc = await vendorsync("push", "--config", str(cfg), cwd=tmp_path)
            delay = rng.uniform(0.2, 3.0)
            if trial % 2 == 0:
                # Every other kill lands just after the vendor took a batch: before its
                # outcomes are recorded, the window where a row could be sent twice.
                for _ in range(3000):  # 60 s at most
                    if len(receipts) > seen or proc.returncode is not None:
                        break
                    await asyncio.sleep(0.01)
                delay = rng.uniform(0.0, 0.03)
            try:
                await asyncio.wait_for(proc.wait(), delay)
                finished += 1
            except TimeoutError:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
                killed += 1
            await push_until_done(db_url, cfg, tmp_path)
            check_push(trial, await outbox_rows(db_url), receipts, sb)
        resent = len(receipts) - len({(r.key, r.payload) for r in receipts})
        violations = sb.sims["aimsio"].stats.violation_count
        db = db_url.split("+")[0].split(":")[0]
        outcome = f"exactly once in effect; {resent} rows re-sent with the same outcome"
        OUTCOMES.append(("push engine (Aimsio User)", db, TRIALS, killed, finished, violations,
                         outcome))  # fmt: skip
        print_table()
        assert violations == 0, sb.sims["aimsio"].stats.violations
    finally:
        await sb.close()


def check_push(
    trial: int, outbox: list[dict[str, Any]], receipts: list[Receipt], sb: RunningSandbox
) -> None:
    """Each outbox row's final status against what the vendor received and holds."""
    store = sb.sims["aimsio"].store  # type: ignore[attr-defined]
    verdicts: dict[tuple[str, str], set[str]] = {}
    for r in receipts:
        accepted = "accepted" if r.outcome in ("created", "edited") else r.outcome
        verdicts.setdefault((r.key, r.payload), set()).add(accepted)
    contradicted = {k: v for k, v in verdicts.items() if len(v) > 1}
    assert not contradicted, (
        f"trial {trial}: rows sent twice with different outcomes: {contradicted}"
    )
    newest: dict[str, dict[str, Any]] = {}
    for row in outbox:
        assert row["status"] in ("sent", "rejected", "superseded", "skipped"), (trial, row)
        got = verdicts.get((row["record_key"], row["payload_hash"]), set())
        if row["status"] == "sent":
            assert got == {"accepted"}, f"trial {trial}: {row} sent, the vendor saw {got}"
        elif row["status"] == "rejected":
            assert got == {"rejected"}, f"trial {trial}: {row} rejected, the vendor saw {got}"
        newest[row["record_key"]] = row
    for key, row in newest.items():
        index = store.find("User", key)
        if row["status"] == "rejected":
            assert index is None, f"trial {trial}: rejected {key} exists at the vendor"
            continue
        # Not lost: the newest row of every key is what the vendor holds.
        assert index is not None, f"trial {trial}: {key} {row['status']} but not at the vendor"
        sent = [r.payload for r in receipts if r.key == key and r.outcome != "rejected"]
        assert sent[-1:] == [row["payload_hash"]], (
            f"trial {trial}: the vendor's last accepted {key} is not the newest outbox row"
        )
