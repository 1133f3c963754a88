"""10 streams of the five vendors synced concurrently for N seconds through the real engine,
with the sandbox injecting faults: violations, runs, peak RSS and open fds over time.

The sandbox runs in its own process with each vendor's limits on, 50 ms latency plus up
to 50 ms jitter, and faults on every call: 5% answered 500, 1% connections dropped, 1%
bodies cut short. One runtime (one HTTP session, one limiter per vendor, as the daemon)
runs each stream in a loop, one run after another, while the vendors change a few
records every few seconds. No run starts after N seconds; those still running may finish
(bounded). This process's RSS and open file descriptors are sampled every half second:
a leak shows as fds or RSS still climbing at the end.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import size
from bench._sandbox import Sandbox, open_fds, rss_mb
from service.config import Settings
from service.db import migrate
from service.engine.runtime import Runtime
from service.engine.sync import execute_stream

FULL_S, QUICK_S, TINY_S = 300.0, 60.0, 4.0
# Records per entity: Aimsio's two streams share 10/s, so a first pass of 60 takes ~12 s.
FULL_RECORDS, QUICK_RECORDS, TINY_RECORDS = 300, 60, 8
# Two streams per vendor, one of each mechanism: listing diff (Aimsio), page-following
# (Amilia), filtered offset paging (iMIS), export jobs (Aqua), lists and a task (AIMMS PRO).
STREAMS = {
    "aimsio": ("User", "Employee"),
    "amilia": ("accounts", "persons"),
    "imis": ("Party", "Event"),
    "aqua": ("Orders", "Customers"),
    "aimms": ("users", "users_export"),
}
MUTATE: dict[str, dict[str, Any]] = {
    "aimsio": {"entity": "User", "add": 1},
    "amilia": {"entity": "accounts", "add": 1},
    "imis": {"entity": "Party", "add": 1},
    "aqua": {"entity": "Orders"},
    "aimms": {"entity": "users", "add": 1},
}
# (max_parallel, rate_per_s) as configured. Aqua and AIMMS PRO document no caps: the
# sandbox holds them to what we configure; the other three enforce their own.
LIMITS = {"aimsio": (10, 10), "amilia": (20, 100), "imis": (5, 1000), "aqua": (4, 10), "aimms": (4, 10)}  # fmt: skip
CONFIGURED = ("aqua", "aimms")
SANDBOX: dict[str, dict[str, Any]] = {
    "imis": {"restore_windows_utc": []},  # as `blackouts = []` below: no daily restores
    "aqua": {"queued_s": 0.2, "run_s": 0.8},
    "aimms": {
        "task_phases_s": {"assigned": 0.05, "running": 0.2, "solving": 0.2},
        "tick_interval_s": 0.02,
    },
}
FAULTS = {
    "latency_ms": 50,
    "latency_jitter_ms": 50,
    "error_rate": 0.05,
    "reset_rate": 0.01,
    "truncate_rate": 0.01,
}
SAMPLE_S = 0.5
MUTATE_EVERY_S = 3.0
DRAIN_S = 60.0  # how long runs still going at the end may take before they are cancelled
FD_LEAK_MARGIN = 5
RSS_GROWTH_MB = 8.0  # over the second half of the run: a leak of a row per request shows


AQUA_POLL = {"poll_min_s": 0.05, "poll_max_s": 0.2, "poll_deadline_s": 30}


def settings(url: str, db_url: str) -> Settings:
    retry = {"max_attempts": 10, "base_s": 0.05, "max_backoff_s": 1}
    return Settings.model_validate(
        {
            "database": {"url": db_url},
            "vendors": {
                "aimsio": {
                    "base_url": f"{url}/aimsio",
                    "max_parallel": LIMITS["aimsio"][0],
                    "rate_per_s": LIMITS["aimsio"][1],
                    "retry": retry,
                    "auth": {"kind": "basic", "username": "demo", "password": "demo-secret"},
                    "streams": {s: {} for s in STREAMS["aimsio"]},
                },
                "amilia": {
                    "base_url": f"{url}/amilia",
                    "max_parallel": LIMITS["amilia"][0],
                    "rate_per_s": LIMITS["amilia"][1],
                    "retry": retry,
                    "auth": {
                        "kind": "basic_jwt",
                        "username": "demo@amilia.test",
                        "password": "demo-secret",
                    },
                    "streams": {s: {} for s in STREAMS["amilia"]},
                },
                "imis": {
                    "base_url": f"{url}/imis",
                    "max_parallel": LIMITS["imis"][0],
                    "rate_per_s": LIMITS["imis"][1],
                    "retry": retry,
                    "auth": {
                        "kind": "password_grant",
                        "username": "demo",
                        "password": "demo-secret",
                    },
                    "blackouts": [],  # restore windows are another suite's subject
                    "options": {"time_zone": "UTC"},
                    "streams": {s: {} for s in STREAMS["imis"]},
                },
                "aqua": {
                    "base_url": f"{url}/aqua",
                    "max_parallel": LIMITS["aqua"][0],
                    "rate_per_s": LIMITS["aqua"][1],
                    "retry": retry,
                    "auth": {
                        "kind": "password_grant",
                        "client_id": "aqua-demo-client",
                        "client_secret": "aqua-demo-secret",
                        "username": "demo@aims360.test",
                        "password": "demo-secret",
                    },
                    "streams": {
                        "Orders": {
                            "options": {
                                **AQUA_POLL,
                                "source": "Orders",
                                "view": "All orders",
                                "format": "csv",
                                "key": "Order No",
                            }
                        },
                        "Customers": {
                            "options": {
                                **AQUA_POLL,
                                "source": "Customers",
                                "view": "All Customers",
                                "format": "json",
                                "scope": "PeopleInOrganization",
                                "key": "Customer Code",
                            }
                        },
                    },
                },
                "aimms": {
                    "base_url": f"{url}/aimms",
                    "max_parallel": LIMITS["aimms"][0],
                    "rate_per_s": LIMITS["aimms"][1],
                    "retry": retry,
                    "auth": {"kind": "apikey", "api_key": "demo-apikey-all-scopes"},
                    "options": {"paths": {"users": "/pro-api/v1/authentication/users"}},
                    "streams": {
                        "users": {},
                        "users_export": {
                            "options": {
                                "app": "SupplyPlanner",
                                "service": "export_users",
                                "body": {"offset": 0},
                                "key": "id",
                                "poll_min_s": 0.05,
                                "poll_max_s": 0.2,
                                "deadline_s": 30,
                                "licence_wait_s": 5,
                                "delete_completed": True,
                            }
                        },
                    },
                },
            },
        }
    )


async def loop_stream(
    rt: Runtime, vendor: str, stream: str, deadline: float, tally: dict[str, int]
) -> None:
    """Run the stream again and again until the deadline (the daemon's schedule, compressed)."""
    trigger = "manual"
    while time.monotonic() < deadline:
        result = await execute_stream(rt, vendor, stream, trigger)
        tally["runs"] += 1
        tally["failed" if result.status != "succeeded" else "succeeded"] += 1
        tally["written"] += result.counts.written
        trigger = "schedule"
        await asyncio.sleep(0.2)


async def mutate(sb: Sandbox, deadline: float) -> None:
    seed = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(MUTATE_EVERY_S)
        seed += 1
        for vendor, what in MUTATE.items():
            body = {"change": 0.05, "delete": 0.02, "seed": seed, **what}
            await sb.control(vendor, "mutate", body)


async def sample(samples: list[tuple[float, float, int]], started: float) -> None:
    pid = os.getpid()
    while True:
        samples.append((time.monotonic() - started, rss_mb(pid), open_fds(pid)))
        await asyncio.sleep(SAMPLE_S)


async def measure(sb: Sandbox, duration_s: float, workdir: Path) -> dict[str, Any]:
    db_url = f"sqlite+aiosqlite:///{workdir}/load.db"
    await migrate(db_url)
    for vendor in STREAMS:
        await sb.control(vendor, "faults", FAULTS)
    tally = {"runs": 0, "succeeded": 0, "failed": 0, "written": 0}
    samples: list[tuple[float, float, int]] = []
    started = time.monotonic()
    sampler = asyncio.create_task(sample(samples, started))
    deadline = started + duration_s
    async with Runtime(settings(sb.url, db_url)) as rt:
        loops = [
            asyncio.create_task(loop_stream(rt, v, s, deadline, tally))
            for v, streams in STREAMS.items()
            for s in streams
        ]
        mutator = asyncio.create_task(mutate(sb, deadline))
        _, pending = await asyncio.wait(loops, timeout=duration_s + DRAIN_S)
        for task in [*pending, mutator]:
            task.cancel()
        await asyncio.gather(*pending, mutator, return_exceptions=True)
    elapsed_s = time.monotonic() - started
    await asyncio.sleep(SAMPLE_S)  # one sample after the runtime closed its sessions
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    stats = {v: await sb.control(v, "stats") for v in STREAMS}
    return {
        "elapsed_s": elapsed_s,
        "cancelled": len(pending),
        "tally": tally,
        "stats": stats,
        "samples": samples,
    }


def main(quick: bool) -> dict[str, Any]:
    duration_s = size(FULL_S, QUICK_S, TINY_S, is_quick=quick)
    records = size(FULL_RECORDS, QUICK_RECORDS, TINY_RECORDS, is_quick=quick)
    vendors: dict[str, dict[str, Any]] = {v: dict(SANDBOX.get(v, {})) for v in STREAMS}
    for vendor in CONFIGURED:
        parallel, rate = LIMITS[vendor]
        limits = {"enabled": True, "mode": "reject", "max_parallel": parallel, "rate_per_s": rate}
        vendors[vendor]["limits"] = limits
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, Sandbox(records, vendors) as sb:
        cpu0 = sb.cpu_s()
        f = asyncio.run(measure(sb, duration_s, Path(tmp)))
        sandbox_cpu_s = sb.cpu_s() - cpu0
        priority = "as started" if sb.nice is None else f"nice {sb.nice} (vendor first)"
    stats, tally, samples = f["stats"], f["tally"], f["samples"]
    requests = sum(s["requests"] for s in stats.values())
    violations = sum(s["violation_count"] for s in stats.values())
    rss = [r for _, r, _ in samples]
    fds = [n for _, _, n in samples]
    # The first sample after the runtime opened its connections is the baseline.
    fd_base = fds[min(len(fds) - 1, 2)]
    print(
        f"load: {sum(len(s) for s in STREAMS.values())} streams, {duration_s:.0f} s, "
        f"{records} records per entity, faults {FAULTS}"
    )
    print(f"  {'vendor':<8} {'requests':>8} {'peak':>5} {'busiest 1 s':>11} {'429s':>5} {'timeouts':>8} {'faults':>6} {'violations':>10}")  # fmt: skip
    for vendor, s in stats.items():
        print(
            f"  {vendor:<8} {s['requests']:>8} {s['peak_in_flight']:>5} {s['max_per_s']:>11} "
            f"{s['rate_limited']:>5} {s['timeouts']:>8} {s['errors_injected']:>6} {s['violation_count']:>10}"
        )
    print(f"  runs {tally['runs']} (succeeded {tally['succeeded']}, failed {tally['failed']}), rows written {tally['written']}, cancelled at the end {f['cancelled']}")  # fmt: skip
    print(f"  RSS MiB start {rss[0]:.0f} peak {max(rss):.0f} end {rss[-1]:.0f}; open fds start {fd_base} peak {max(fds)} end {fds[-1]}")  # fmt: skip
    for vendor, s in stats.items():
        for what in s["violations"][:5]:  # what the vendor saw, to tell why
            print(f"  violation at {vendor}: {what}")
    print(
        f"  sandbox CPU per request {sandbox_cpu_s * 1000 / max(1, requests):.2f} ms; its priority: {priority}"
    )
    step = max(1, len(samples) // 20)
    print("  over time (s: RSS MiB / fds): " + ", ".join(f"{t:.0f}: {r:.0f}/{n}" for t, r, n in samples[::step]))  # fmt: skip
    leaked = fds[-1] - fd_base > FD_LEAK_MARGIN
    # Every parallel slot holds at most one connection; the rest is the database and logs.
    fd_bound = fd_base + sum(v[0] for v in LIMITS.values()) + FD_LEAK_MARGIN
    half = rss[len(rss) // 2 :]
    rss_growth_mb = round(half[-1] - half[0], 1)
    print(
        f"  bounds: peak fds {max(fds)} ≤ {fd_bound} (baseline + Σ max_parallel + {FD_LEAK_MARGIN}); "
        f"RSS growth over the last half {rss_growth_mb:+.1f} MiB (≤ {RSS_GROWTH_MB} MiB: flat)"
    )
    return {
        "duration_s": duration_s,
        "streams": sum(len(s) for s in STREAMS.values()),
        "requests": requests,
        "violations": violations,
        "rate_limited": sum(s["rate_limited"] for s in stats.values()),
        "errors_injected": sum(s["errors_injected"] for s in stats.values()),
        "runs": tally["runs"],
        "runs_failed": tally["failed"],
        "rows_written": tally["written"],
        "cancelled_at_end": f["cancelled"],
        "peak_rss_mb": round(max(rss), 1),
        "rss_start_mb": round(rss[0], 1),
        "rss_end_mb": round(rss[-1], 1),
        "fds_start": fd_base,
        "fds_peak": max(fds),
        "fds_end": fds[-1],
        "fds_over_time": [n for _, _, n in samples[::step]],
        "sandbox_cpu_ms_per_request": round(sandbox_cpu_s * 1000 / max(1, requests), 2),
        "fd_bound": fd_bound,
        "rss_growth_last_half_mb": rss_growth_mb,
        "met": violations == 0
        and not leaked
        and max(fds) <= fd_bound
        and rss_growth_mb <= RSS_GROWTH_MB
        and f["cancelled"] == 0,
    }
