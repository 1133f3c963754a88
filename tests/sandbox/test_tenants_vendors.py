"""Tenants of iMIS, Aqua, Amilia and AIMMS PRO: each account its own data, credentials,
jobs and counters; Amilia's 100 calls/s stays one budget per client IP across organisations."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest

from sandbox.clock import FakeClock
from tests.sandbox.conftest import StartSandbox

# build_app's root["sims"] key: see tests/sandbox/test_aimms.py.
pytestmark = pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")

Answer = tuple[int, Any]


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> Answer:
    async with http.request(method, url, headers=headers or {}, **kw) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text) if text else None
        except ValueError:
            return resp.status, text


async def stats(http: aiohttp.ClientSession, base: str, tenant: str = "*") -> Any:
    return (await call(http, "GET", f"{base}/_sandbox/stats", params={"tenant": tenant}))[1]


# --- iMIS: token login by username/password; the token names the site ---------------------
async def imis_login(
    http: aiohttp.ClientSession, base: str, user: str, pw: str = "demo-secret"
) -> Answer:
    form = {"grant_type": "password", "username": user, "password": pw}
    return await call(http, "POST", f"{base}/token", data=form)


async def imis_parties(http: aiohttp.ClientSession, base: str, token: str) -> Answer:
    auth = {"Authorization": f"Bearer {token}"}
    return await call(http, "GET", f"{base}/api/Party", auth, params={"limit": 500})


async def test_imis_sites_have_their_own_data_tokens_and_counters(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await sandbox_factory("imis", records=20, seed=3, clock=FakeClock())
    base = sb.url("imis")
    tokens = {}
    for user in ("demo", "demo-7", "DEMO-8"):
        status, body = await imis_login(http, base, user)
        assert status == 200, body
        tokens[user.lower()] = body["access_token"]
    rows = {
        u: (await imis_parties(http, base, t))[1]["Items"]["$values"] for u, t in tokens.items()
    }
    assert len(rows["demo"]) == len(rows["demo-7"]) == 20
    assert rows["demo"] != rows["demo-7"] != rows["demo-8"]
    # Deterministic: a new login to the same site reads the same rows.
    again = (await imis_login(http, base, "demo-7"))[1]["access_token"]
    assert (await imis_parties(http, base, again))[1]["Items"]["$values"] == rows["demo-7"]
    # Refused as iMIS refuses: a wrong password, an unknown base user.
    assert (await imis_login(http, base, "demo-7", "nope"))[0] == 400
    assert (await imis_login(http, base, "nobody-7"))[0] == 400
    # One site's faults and mutations are its own: demo-7's tokens expire, demo's do not.
    status, _ = await call(
        http, "POST", f"{base}/_sandbox/faults", params={"tenant": "demo-7"},
        json={"extra": {"token_expire_now": True}},
    )  # fmt: skip
    assert status == 200
    assert (await imis_parties(http, base, again))[0] == 401
    assert (await imis_parties(http, base, tokens["demo"]))[0] == 200
    assert (await imis_parties(http, base, tokens["demo-8"]))[0] == 200
    every = (await stats(http, base))["tenants"]
    assert set(every) == {"", "demo-7", "demo-8"}
    # demo-7: three logins (one refused), two reads and the refused one.
    assert every["demo-7"]["requests"] == 6
    assert every["demo-8"]["requests"] == 3


async def test_imis_sites_count_their_own_concurrency(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    """Five calls in flight per site is each site's polite cap: no violation on either,
    though ten are in flight at the sandbox."""
    sb = await sandbox_factory("imis", records=5, latency_ms=150, clock=FakeClock())
    base = sb.url("imis")
    tokens = [(await imis_login(http, base, u))[1]["access_token"] for u in ("demo-1", "demo-2")]
    await call(http, "POST", f"{base}/_sandbox/reset")
    answers = await asyncio.gather(*(imis_parties(http, base, t) for t in tokens for _ in range(5)))
    assert {a[0] for a in answers} == {200}
    every = (await stats(http, base))["tenants"]
    for tenant in ("demo-1", "demo-2"):
        assert every[tenant]["requests"] == 5
        assert every[tenant]["peak_in_flight"] == 5
        assert every[tenant]["violation_count"] == 0
    # A sixth in flight on one site is that site's violation only.
    await call(http, "POST", f"{base}/_sandbox/reset")
    await asyncio.gather(
        *(imis_parties(http, base, tokens[0]) for _ in range(6)),
        *(imis_parties(http, base, tokens[1]) for _ in range(3)),
    )
    every = (await stats(http, base))["tenants"]
    assert every["demo-1"]["violation_count"] >= 1
    assert every["demo-2"]["violation_count"] == 0


# --- Aqua: a company per tenant; jobs and files are the company's --------------------------
AQUA_TOKEN = "/authentication/v1/authentication/Token"
AQUA_EXPORT = "/reports/v1.0/exportdata"
AQUA_JOBS = "/jobsmanagement/odata/v1.0/backgroundjob"


async def aqua_token(http: aiohttp.ClientSession, base: str, user: str, client: str) -> Answer:
    form = {
        "grant_type": "password",
        "client_id": client,
        "client_secret": "aqua-demo-secret",
        "username": user,
        "password": "demo-secret",
    }
    return await call(http, "POST", base + AQUA_TOKEN, data=form)


async def test_aqua_companies_have_their_own_jobs_and_files(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    sb = await sandbox_factory("aqua", records=15, seed=8, clock=clock)
    base = sb.url("aqua")
    logins = {
        "demo": ("demo@aims360.test", "aqua-demo-client"),
        "demo-7": ("demo-7@aims360.test", "aqua-demo-client-7"),
    }
    auth = {}
    for tenant, (user, client) in logins.items():
        status, body = await aqua_token(http, base, user, client)
        assert status == 200, body
        auth[tenant] = {"Authorization": f"Bearer {body['access_token']}"}
    # A user logs in only through a client of the own company; unknown users are refused.
    assert (await aqua_token(http, base, "demo-7@aims360.test", "aqua-demo-client"))[0] == 400
    assert (await aqua_token(http, base, "nobody-7@aims360.test", "aqua-demo-client-7"))[0] == 400
    export = {
        "exportType": "View",
        "exportDataSettings": {"source": "Orders", "viewName": "All orders"},
        "outputFormat": "CSV",
        "publishLinkAccessScope": "Public",
    }
    jobs = {}
    for tenant in logins:
        status, job = await call(http, "POST", base + AQUA_EXPORT, auth[tenant], json=export)
        assert status == 200, job
        jobs[tenant] = job
    assert jobs["demo"]["jobId"] != jobs["demo-7"]["jobId"]
    clock.advance(11)
    files = {}
    for tenant, job in jobs.items():
        query = {"$filter": f"jobId eq '{job['jobId']}'"}
        status, mine = await call(http, "GET", base + AQUA_JOBS, auth[tenant], params=query)
        assert (status, len(mine["value"])) == (200, 1), mine
        other = "demo" if tenant == "demo-7" else "demo-7"
        status, theirs = await call(http, "GET", base + AQUA_JOBS, auth[other], params=query)
        assert (status, theirs["value"]) == (200, [])  # another company's job does not exist
        # A Public link needs no token: the link names its company's file.
        status, files[tenant] = await call(http, "GET", job["publishLink"])
        assert status == 200
    assert files["demo"] != files["demo-7"]
    assert len(files["demo-7"].splitlines()) == 16  # header + 15 rows


async def test_aqua_tenant_over_its_cap_gets_its_own_429s(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await sandbox_factory("aqua", records=5, clock=FakeClock())
    base = sb.url("aqua")
    auth = {}
    for n in (1, 2):
        body = (await aqua_token(http, base, f"demo-{n}@aims360.test", f"aqua-demo-client-{n}"))[1]
        auth[n] = {"Authorization": f"Bearer {body['access_token']}"}
    limits = {"limits": {"enabled": True, "mode": "reject", "rate_per_s": 3}}
    for n in (1, 2):
        await call(
            http, "POST", f"{base}/_sandbox/faults", params={"tenant": f"demo-{n}"}, json=limits
        )
    first = [(await call(http, "GET", base + AQUA_JOBS, auth[1]))[0] for _ in range(6)]
    second = [(await call(http, "GET", base + AQUA_JOBS, auth[2]))[0] for _ in range(3)]
    assert first.count(429) >= 3  # six calls well inside one second
    assert second == [200, 200, 200]
    every = (await stats(http, base))["tenants"]
    assert every["demo-1"]["rate_limited"] == first.count(429)
    assert every["demo-2"]["rate_limited"] == 0


# --- Amilia: an organisation per tenant, one 100/s budget per client IP ---------------------
def basic(user: str, pw: str = "demo-secret") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}


async def amilia_jwt(http: aiohttp.ClientSession, base: str, user: str) -> dict[str, str]:
    status, body = await call(http, "POST", f"{base}/api/v3/authenticate", basic(user))
    assert status == 200, body
    return {"Authorization": f"Bearer {body['Token']}"}


def claims(auth: dict[str, str]) -> Any:
    payload = auth["Authorization"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def test_amilia_organisations_have_their_own_data_and_tokens(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await sandbox_factory("amilia", records=12, seed=6)
    base = sb.url("amilia")
    demo = await amilia_jwt(http, base, "demo@amilia.test")
    seven = await amilia_jwt(http, base, "Demo-7@amilia.test")
    assert claims(seven)["sub"] == "demo-7@amilia.test"  # the JWT carries the tenant
    url = base + "/api/v3/en/org/{}/accounts?showArchived=true"
    status, own = await call(http, "GET", url.format(8008), demo)
    assert status == 200
    status, sevens = await call(http, "GET", url.format(8008007), seven)
    assert status == 200
    assert own["Paging"]["TotalCount"] == sevens["Paging"]["TotalCount"] == 12
    assert own["Items"] != sevens["Items"]
    assert (await call(http, "GET", url.format("forest-explorers-7"), seven))[1] == sevens
    # Another organisation exists, but not for this user; an unknown one does not exist.
    assert (await call(http, "GET", url.format(8008), seven))[0] == 403
    assert (await call(http, "GET", url.format(8008007), demo))[0] == 403
    assert (await call(http, "GET", url.format(4242), seven))[0] == 404
    # Refused as Amilia refuses: wrong password, unknown base user, a forged subject.
    for who, pw in (("demo-7@amilia.test", "nope"), ("nobody-7@amilia.test", "demo-secret")):
        assert (await call(http, "POST", f"{base}/api/v3/authenticate", basic(who, pw)))[0] == 401
    head, _, sig = demo["Authorization"].split(".")
    forged_claims = {**claims(demo), "sub": "demo-7@amilia.test"}
    forged_body = base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).decode().rstrip("=")
    forged = {"Authorization": f"{head}.{forged_body}.{sig}"}
    assert (await call(http, "GET", url.format(8008007), forged))[0] == 401
    every = (await stats(http, base))["tenants"]
    assert every["demo-7"]["requests"] == 7  # login, 3 reads, 403, 404, wrong password, forged
    assert every[""]["requests"] == 4  # demo's login, read and 403; nobody-7's refusal


async def test_amilia_organisations_from_one_ip_share_100_calls_per_s(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    """80 calls each from two organisations at once: within each one's count, over the
    IP's 100/s together, so the sandbox answers 429s and ``by_client`` shows violations."""
    sb = await sandbox_factory("amilia", records=3)
    base = sb.url("amilia")
    auth = {n: await amilia_jwt(http, base, f"demo-{n}@amilia.test") for n in (1, 2)}
    await call(http, "POST", f"{base}/_sandbox/reset")
    await asyncio.sleep(1.05)  # the logins leave the sliding window
    url = base + "/api/v3/en/org/{}/programs"

    async def burst(n: int) -> list[int]:
        got = await asyncio.gather(
            *(call(http, "GET", url.format(8008000 + n), auth[n]) for _ in range(80))
        )
        return [status for status, _ in got]

    one, two = await asyncio.gather(burst(1), burst(2))
    admitted = one.count(200) + two.count(200)
    limited = one.count(429) + two.count(429)
    assert admitted + limited == 160
    assert limited >= 1  # together over the one address's budget
    answer = await stats(http, base)
    every, by_ip = answer["tenants"], answer["by_client"]["127.0.0.1"]
    for n, statuses in ((1, one), (2, two)):
        assert every[f"demo-{n}"]["requests"] == 80
        assert every[f"demo-{n}"]["violation_count"] == 0  # alone, each is within 100/s
        assert every[f"demo-{n}"]["rate_limited"] == statuses.count(429)
    assert by_ip["requests"] == 160
    assert by_ip["rate_limited"] == limited
    assert by_ip["violation_count"] >= 1  # together, over 100 in one second


# --- AIMMS PRO: an account per tenant, named by its API keys --------------------------------
TASKS = "/pro-api/v2/tasks"
USERS = "/pro-api/v1/authentication/users"


async def test_aimms_accounts_have_their_own_users_keys_and_tasks(
    sandbox_factory: StartSandbox, http: aiohttp.ClientSession
) -> None:
    sb = await sandbox_factory("aimms", records=10, seed=2, clock=FakeClock())
    base = sb.url("aimms")

    def key(k: str) -> dict[str, str]:
        return {"apikey": k}

    all7, tasks7 = key("demo-apikey-all-scopes-7"), key("demo-apikey-tasks-only-7")
    all8, demo = key("demo-apikey-all-scopes-8"), key("demo-apikey-all-scopes")
    lists = {}
    for name, k in (("demo", demo), ("demo-7", all7), ("demo-8", all8)):
        status, lists[name] = await call(http, "GET", base + USERS, k)
        assert (status, len(lists[name])) == (200, 10), lists[name]
    assert lists["demo"] != lists["demo-7"] != lists["demo-8"]
    # Unknown keys are refused, an expired base key stays expired in every account.
    for bad in ("nobody-7", "demo-apikey-expired-7"):
        assert (await call(http, "GET", base + USERS, key(bad)))[0] == 401
    assert (await call(http, "GET", base + USERS, tasks7))[0] == 403  # its scopes kept
    status, task = await call(http, "POST", f"{base}{TASKS}/SupplyPlanner/echo", tasks7, data=b"{}")
    assert status == 200, task
    one = f"{base}{TASKS}/{task['id']}"
    assert (await call(http, "GET", one, all7))[0] == 200  # same account, another key
    assert (await call(http, "GET", one, all8))[0] == 404
    assert (await call(http, "GET", one, demo))[0] == 404
    # A key the account creates names the account too.
    status, made = await call(
        http, "POST", base + "/pro-api/v1/apikeys", all7,
        json={"name": "made", "scopes": ["Tasks"], "expiresAt": "2026-06-01T00:00:00Z"},
    )  # fmt: skip
    assert status in (200, 201), made
    assert (await call(http, "GET", one, key(made["key"])))[0] == 200
    status, ticked = await call(http, "POST", f"{base}/_sandbox/tick", params={"tenant": "demo-7"})
    assert (status, sum(ticked["states"].values())) == (200, 1), ticked
    assert (await call(http, "POST", f"{base}/_sandbox/tick"))[1]["states"] == {}
    every = (await stats(http, base))["tenants"]
    assert set(every) == {"", "demo-7", "demo-8"}
    assert every["demo-8"]["requests"] == 2
