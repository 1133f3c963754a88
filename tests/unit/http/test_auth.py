"""Auth hooks: masking, token reuse and refresh, one login for concurrent callers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from service.http.auth import ApiKeyAuth, Auth, BasicAuth, BearerLogin, Token

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class FakeLogin:
    def __init__(self, lifetime_s: float | None = 3600, delay_s: float = 0.0) -> None:
        self.calls = 0
        self.lifetime_s = lifetime_s
        self.delay_s = delay_s
        self.clock: FakeClock | None = None

    async def __call__(self) -> Token:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        assert self.clock is not None
        expires = (
            None if self.lifetime_s is None else self.clock.now + timedelta(seconds=self.lifetime_s)
        )
        return Token(f"tok-{self.calls}", expires)


def bearer(
    lifetime_s: float | None = 3600, delay_s: float = 0.0
) -> tuple[BearerLogin, FakeLogin, FakeClock]:
    clock = FakeClock()
    login = FakeLogin(lifetime_s, delay_s)
    login.clock = clock
    return BearerLogin(login, clock=clock, refresh_margin_s=60), login, clock


async def test_static_auth_headers_and_masked_repr() -> None:
    basic = BasicAuth("bob", "hunter2")
    key = ApiKeyAuth("X-Api-Key", "s3cr3t")
    assert await basic.headers() == {"Authorization": "Basic Ym9iOmh1bnRlcjI="}
    assert await key.headers() == {"X-Api-Key": "s3cr3t"}
    for obj in (basic, key, Token("s3cr3t-token", None)):
        assert isinstance(obj, (Auth, Token))
        text = repr(obj) + str(obj)
        assert "hunter2" not in text
        assert "s3cr3t" not in text
        assert "Ym9i" not in text
    assert not await basic.on_unauthorized({})
    assert not await key.on_unauthorized({})


async def test_token_fetched_on_first_use_and_reused() -> None:
    auth, login, _ = bearer()
    assert login.calls == 0  # lazy
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    assert await auth.headers() == {"Authorization": "Bearer tok-1"}
    assert login.calls == 1
    assert "tok-1" not in repr(auth)


async def test_token_refreshed_before_expiry() -> None:
    auth, login, clock = bearer(lifetime_s=3600)
    await auth.headers()
    clock.now = T0 + timedelta(seconds=3600 - 61)
    assert (await auth.headers())["Authorization"] == "Bearer tok-1"
    clock.now = T0 + timedelta(seconds=3600 - 59)  # inside the 60 s margin
    assert (await auth.headers())["Authorization"] == "Bearer tok-2"
    assert login.calls == 2


async def test_short_lived_token_refreshes_halfway_not_every_call() -> None:
    auth, login, clock = bearer(lifetime_s=30)  # shorter than the 60 s margin
    await auth.headers()
    clock.now = T0 + timedelta(seconds=10)
    await auth.headers()
    assert login.calls == 1
    clock.now = T0 + timedelta(seconds=16)
    await auth.headers()
    assert login.calls == 2


async def test_token_without_expiry_lives_until_401() -> None:
    auth, login, clock = bearer(lifetime_s=None)
    sent = await auth.headers()
    clock.now = T0 + timedelta(days=30)
    assert await auth.headers() == sent
    assert await auth.on_unauthorized(sent)
    assert await auth.headers() == {"Authorization": "Bearer tok-2"}
    assert login.calls == 2


async def test_concurrent_first_use_logs_in_once() -> None:
    auth, login, _ = bearer(delay_s=0.01)
    results = await asyncio.gather(*(auth.headers() for _ in range(20)))
    assert login.calls == 1
    assert {r["Authorization"] for r in results} == {"Bearer tok-1"}


async def test_concurrent_401s_with_the_same_token_refresh_once() -> None:
    auth, login, _ = bearer(delay_s=0.01)
    sent = await auth.headers()
    assert all(await asyncio.gather(*(auth.on_unauthorized(sent) for _ in range(10))))
    assert login.calls == 2  # the first one refreshed; the rest saw the new token
    assert await auth.headers() == {"Authorization": "Bearer tok-2"}


async def test_login_failure_propagates_and_is_retried_next_time() -> None:
    clock = FakeClock()
    calls = 0

    async def flaky() -> Token:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("login down")
        return Token("ok", None)

    auth = BearerLogin(flaky, clock=clock)
    with pytest.raises(RuntimeError, match="login down"):
        await auth.headers()
    assert await auth.headers() == {"Authorization": "Bearer ok"}


async def test_custom_header_and_scheme() -> None:
    async def login() -> Token:
        return Token("abc", None)

    auth = BearerLogin(login, header="X-Session", scheme="")
    assert await auth.headers() == {"X-Session": "abc"}
