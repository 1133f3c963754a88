"""The three streams ``peer_dlt`` compares: vendorsync's side (the real engine), the naive
sequential loop, and the vendor's truth read directly, each as key → version."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench._sandbox import Sandbox
from service.config import Settings
from service.db import fetch_live
from service.engine.runtime import Runtime
from service.engine.sync import run_stream

MAX_PAGES = 100_000  # every walk here is bounded


@dataclass(frozen=True)
class Stream:
    name: str  # as in the figures
    vendor: str
    entity: str  # the vendor's stream, and its mutation entity
    latency_ms: int
    cap_per_s: float | None  # the vendor's rate cap; None: none documented
    cap_parallel: int | None


STREAMS = (
    Stream("aimsio_user", "aimsio", "User", 200, 10.0, 10),
    Stream("amilia_accounts", "amilia", "accounts", 100, 100.0, None),
    Stream("imis_party", "imis", "Party", 100, None, 5),
)
AMILIA_ORG = "/api/v3/en/org/8008"


def settings(stream: Stream, url: str, db_url: str) -> Settings:
    """Our config for the stream, as an operator would write it from the vendor's docs."""
    vendor: dict[str, Any] = {"base_url": f"{url}/{stream.vendor}", "streams": {stream.entity: {}}}
    if stream.vendor == "aimsio":
        vendor |= {
            "max_parallel": 10,
            "rate_per_s": 10,
            "auth": {"kind": "basic", "username": "demo", "password": "demo-secret"},
        }
    elif stream.vendor == "amilia":
        vendor |= {
            "max_parallel": 20,
            "rate_per_s": 100,
            "auth": {
                "kind": "basic_jwt",
                "username": "demo@amilia.test",
                "password": "demo-secret",
            },
            "options": {"per_page": 200},
        }
    else:
        vendor |= {
            "max_parallel": 5,
            "rate_per_s": 1000,
            "auth": {"kind": "password_grant", "username": "demo", "password": "demo-secret"},
            "options": {"time_zone": "UTC", "page_size": 100},
            "blackouts": [],  # the bench's sandbox has no restore windows
        }
    return Settings.model_validate(
        {
            "database": {"url": db_url},
            "sync": {"batch_size": 2000},
            "vendors": {stream.vendor: vendor},
        }
    )


def version(stream: Stream, payload: dict[str, Any]) -> str:
    """What tells one version of a record from another (the mutation API changes it)."""
    if stream.vendor == "aimsio":
        return str(payload["updatedAt"])
    if stream.vendor == "amilia":
        return json.dumps(payload["AccountMemberships"], sort_keys=True)
    return str(payload["UpdateInformation"]["UpdatedOn"])


async def ours(stream: Stream, url: str, db_url: str, trigger: str) -> dict[str, Any]:
    """One run of the stream through the real engine; wall time includes staging."""
    async with Runtime(settings(stream, url, db_url)) as rt:
        started = time.monotonic()
        run = await run_stream(rt, stream.vendor, stream.entity, trigger)
        wall_s = time.monotonic() - started
    c = run.counts
    # A full run stages every record; an incremental one is judged by what it wrote.
    records = c.inserted + c.updated + c.unchanged if trigger == "manual" else c.written
    return {"records": records, "wall_s": wall_s}


async def ours_staged(stream: Stream, url: str, db_url: str) -> dict[str, str]:
    async with Runtime(settings(stream, url, db_url)) as rt, rt.db.connect() as conn:
        live = await fetch_live(conn, stream.vendor, stream.entity)
    return {k: version(stream, v) for k, v in live.items() if isinstance(v, dict)}


async def _login(http: aiohttp.ClientSession, stream: Stream, url: str) -> dict[str, str]:
    if stream.vendor == "aimsio":
        return {"Authorization": "Basic " + base64.b64encode(b"demo:demo-secret").decode()}
    if stream.vendor == "amilia":
        basic = base64.b64encode(b"demo@amilia.test:demo-secret").decode()
        auth = {"Authorization": f"Basic {basic}"}
        async with http.get(f"{url}/amilia/api/v3/authenticate", headers=auth) as r:
            return {"Authorization": f"Bearer {(await r.json())['Token']}"}
    creds = {"grant_type": "password", "username": "demo", "password": "demo-secret"}
    async with http.post(f"{url}/imis/token", data=creds) as r:
        return {"Authorization": f"Bearer {(await r.json())['access_token']}"}


async def walk(
    stream: Stream, url: str, *, page: int, on_login: Any = None
) -> list[dict[str, Any]]:
    """Every record, one request at a time: the plain loop anyone writes first. For Aimsio,
    ``page=0`` returns the listing's stubs alone (their ``updatedAt`` is the version)."""
    out: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(raise_for_status=True) as http:
        headers = await _login(http, stream, url)
        if on_login is not None:
            await on_login()
        if stream.vendor == "aimsio":
            base = f"{url}/aimsio/rest/api/standard/v1/User"
            async with http.get(base, headers=headers) as r:
                stubs = await r.json()
            if page == 0:  # the truth: the listing's versions are enough
                return list(stubs)
            for stub in stubs:
                async with http.get(f"{base}/{stub['guid']}", headers=headers) as r:
                    out.append(await r.json())
        elif stream.vendor == "amilia":
            next_url: str | None = (
                f"{url}/amilia{AMILIA_ORG}/accounts?showArchived=true&perPage={page}"
            )
            for _ in range(MAX_PAGES):
                if next_url is None:
                    break
                async with http.get(next_url, headers=headers) as r:
                    body = await r.json()
                out.extend(body["Items"])
                next_url = body["Paging"]["Next"]
        else:
            offset: int | None = 0
            for _ in range(MAX_PAGES):
                if offset is None:
                    break
                query = {"limit": str(page), "offset": str(offset)}
                async with http.get(f"{url}/imis/api/Party", params=query, headers=headers) as r:
                    body = await r.json()
                out.extend(body["Items"]["$values"])
                offset = body["NextOffset"] if body["HasNext"] else None
    return out


async def naive(stream: Stream, sb: Sandbox) -> dict[str, Any]:
    """The sequential loop, fetch only (nothing staged): records and wall seconds."""
    page = {"aimsio": 1, "amilia": 200, "imis": 100}[stream.vendor]
    started = [0.0]

    async def reset() -> None:
        await sb.control(stream.vendor, "reset", {"faults": False})
        started[0] = time.monotonic()

    records = await walk(stream, sb.url, page=page, on_login=reset)
    return {"records": len(records), "wall_s": time.monotonic() - started[0]}


async def truth(stream: Stream, sb: Sandbox) -> dict[str, str]:
    """Key → version of every record the vendor holds now, read with its limits lifted."""
    limited = stream.vendor != "imis"  # iMIS has no limits to lift
    if limited:
        await sb.control(stream.vendor, "faults", {"limits": {"enabled": False}})
    try:
        if stream.vendor == "aimsio":
            stubs = await walk(stream, sb.url, page=0)
            return {str(s["guid"]): str(s["updatedAt"]) for s in stubs}
        # The page sizes the tools ask for: the simulator caches what it renders.
        records = await walk(stream, sb.url, page=200 if stream.vendor == "amilia" else 100)
    finally:
        if limited:
            await sb.control(stream.vendor, "faults", {"limits": {"enabled": True}})
    key = "Id" if stream.vendor == "amilia" else "PartyId"
    return {str(r[key]): version(stream, r) for r in records}


def compare(staged: dict[str, Any], vendor: dict[str, str]) -> dict[str, Any]:
    """Whether the staged rows equal the vendor's, and how they differ if not."""
    kept = sorted(set(staged) - set(vendor))
    missing = sorted(set(vendor) - set(staged))
    stale = sorted(k for k in set(staged) & set(vendor) if staged[k] != vendor[k])
    return {
        "equal": not (kept or missing or stale),
        "deleted_kept": len(kept),
        "missing": len(missing),
        "stale": len(stale),
    }
