"""Login auth kinds against the sandbox over real HTTP: iMIS and Aqua password grants,
Amilia's Basic → JWT, AIMMS's apikey header; renewal, one login per 401, bad passwords."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.app import SandboxOptions
from sandbox.server import RunningSandbox, start_sandbox
from service.errors import AuthError
from service.http import HttpClient, RetryPolicy, VendorLimiter
from service.http.auth import BearerLogin
from service.http.logins import LoginSpec, build_auth

FAST = RetryPolicy(max_attempts=3, base_s=0.01, max_backoff_s=0.05, max_elapsed_s=5)

IMIS = LoginSpec("password_grant", "demo", "demo-secret", token_path="/token")
AQUA = LoginSpec(
    "password_grant",
    "demo@aims360.test",
    "demo-secret",
    client_id="aqua-demo-client",
    client_secret="aqua-demo-secret",
    token_path="/authentication/v1/authentication/Token",
)
AMILIA = LoginSpec(
    "basic_jwt",
    "demo@amilia.test",
    "demo-secret",
    token_path="/api/v3/authenticate",
    token_method="GET",
    token_field="Token",
)
AIMMS = LoginSpec("apikey", api_key="demo-apikey-all-scopes", header="apikey")

# A protected read of each vendor.
PROBE = {
    "imis": "/api/Party?limit=1",
    "aqua": "/jobsmanagement/odata/v1.0/backgroundjob",
    "amilia": "/api/v3/en/org/8008/accounts?perPage=1",
    "aimms": "/pro-api/v1/applications",
}


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    sb = await start_sandbox(
        SandboxOptions(records=20, seed=1), vendors=("imis", "aqua", "amilia", "aimms")
    )
    yield sb
    await sb.close()


async def stats(http: HttpClient, sb: RunningSandbox, vendor: str) -> dict[str, Any]:
    resp = await http.session.get(f"{sb.url(vendor)}/_sandbox/stats")
    body: dict[str, Any] = await resp.json()
    return body


@pytest.mark.parametrize(
    ("vendor", "spec"), [("imis", IMIS), ("aqua", AQUA), ("amilia", AMILIA), ("aimms", AIMMS)]
)
async def test_each_kind_logs_in_once_and_reads(
    sandbox: RunningSandbox, vendor: str, spec: LoginSpec
) -> None:
    async with HttpClient() as http:
        client = http.register(
            vendor, sandbox.url(vendor), limiter=VendorLimiter(vendor, 4, 100), retry=FAST
        )
        client.auth = build_auth(spec, client)
        for _ in range(3):
            resp = await client.request("GET", PROBE[vendor], expect_json=True)
            assert resp.status == 200
        if isinstance(client.auth, BearerLogin):
            assert client.auth.logins == 1  # the token is reused
        # The login itself went through the vendor's limiter like every call.
        assert client.limiter.slots_granted == (4 if spec.kind != "apikey" else 3)
        text = repr(client.auth)
        assert spec.password is None or spec.password not in text
        assert "demo-apikey" not in text


@pytest.mark.parametrize(("vendor", "spec"), [("imis", IMIS), ("aqua", AQUA), ("amilia", AMILIA)])
async def test_a_wrong_password_is_one_clear_error_and_one_try(
    sandbox: RunningSandbox, vendor: str, spec: LoginSpec
) -> None:
    from dataclasses import replace

    async with HttpClient() as http:
        client = http.register(
            vendor, sandbox.url(vendor), limiter=VendorLimiter(vendor, 4, 100), retry=FAST
        )
        client.auth = build_auth(replace(spec, password="wrong-pw"), client)
        with pytest.raises(AuthError) as info:
            await client.request("GET", PROBE[vendor])
        assert "login refused" in str(info.value)
        assert "wrong-pw" not in str(info.value)
        assert (await stats(http, sandbox, vendor))["requests"] == 1  # never retried


async def test_tokens_are_renewed_before_they_expire(sandbox: RunningSandbox) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    async with HttpClient() as http:
        client = http.register(
            "imis", sandbox.url("imis"), limiter=VendorLimiter("imis", 4, 100), retry=FAST
        )
        auth = build_auth(IMIS, client, clock=lambda: now[0])
        assert isinstance(auth, BearerLogin)
        client.auth = auth
        await client.request("GET", PROBE["imis"])
        token = await auth.token()
        assert token.expires_at is not None  # from expires_in
        now[0] = token.expires_at - timedelta(seconds=30)  # inside the refresh margin
        await client.request("GET", PROBE["imis"])
        assert auth.logins == 2


async def test_a_401_logs_in_again_once(sandbox: RunningSandbox) -> None:
    async with HttpClient() as http:
        client = http.register(
            "amilia", sandbox.url("amilia"), limiter=VendorLimiter("amilia", 4, 100), retry=FAST
        )
        auth = build_auth(AMILIA, client)
        assert isinstance(auth, BearerLogin)
        client.auth = auth
        await client.request("GET", PROBE["amilia"])
        token = await auth.token()
        assert token.expires_at is not None  # from the JWT's exp claim
        assert token.expires_at > datetime.now(UTC) + timedelta(days=300)
        auth._token = type(token)("not-a-valid-token", token.expires_at)  # revoked, say
        resp = await client.request("GET", PROBE["amilia"])
        assert resp.status == 200
        assert auth.logins == 2
