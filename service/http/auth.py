"""Auth hooks: what headers a request carries, and what to do about a 401.

The client asks for headers *before* taking a limiter slot, so a login that itself
goes through the same vendor's limiter (``request(..., auth=False)``) cannot deadlock
against the request waiting for it. Secrets never appear in ``repr``/``str``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

MASK = "***"


def utcnow() -> datetime:
    return datetime.now(UTC)


@runtime_checkable
class Auth(Protocol):
    async def headers(self) -> dict[str, str]:
        """Headers to add to the next request."""
        ...

    async def on_unauthorized(self, sent: Mapping[str, str]) -> bool:
        """A request carrying ``sent`` got a 401; True when a retry may now succeed."""
        ...


class BasicAuth:
    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._value = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password={MASK!r})"

    async def headers(self) -> dict[str, str]:
        return {"Authorization": self._value}

    async def on_unauthorized(self, sent: Mapping[str, str]) -> bool:
        return False  # static credentials: asking again cannot help


class ApiKeyAuth:
    def __init__(self, header: str, key: str) -> None:
        self.header = header
        self._key = key

    def __repr__(self) -> str:
        return f"ApiKeyAuth(header={self.header!r}, key={MASK!r})"

    async def headers(self) -> dict[str, str]:
        return {self.header: self._key}

    async def on_unauthorized(self, sent: Mapping[str, str]) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class Token:
    value: str = field(repr=False)
    expires_at: datetime | None = None  # UTC-aware; None = until a 401 says otherwise

    def __repr__(self) -> str:
        return f"Token(value={MASK!r}, expires_at={self.expires_at!r})"


class BearerLogin:
    """A token from ``login()``: fetched on first use, refreshed ``refresh_margin_s``
    before expiry (or halfway through a shorter lifetime), and refreshed on a 401.

    Concurrent callers share one in-flight login. After a 401, only the first caller
    holding the stale token logs in again; the others reuse the new token. Whether a
    second 401 is final is the client's rule (one refresh per request).
    """

    def __init__(
        self,
        login: Callable[[], Awaitable[Token]],
        *,
        clock: Callable[[], datetime] = utcnow,
        refresh_margin_s: float = 60.0,
        header: str = "Authorization",
        scheme: str = "Bearer",
    ) -> None:
        self._login = login
        self._clock = clock
        self._margin = timedelta(seconds=refresh_margin_s)
        self.header = header
        self.scheme = scheme
        self._lock = asyncio.Lock()
        self._token: Token | None = None
        self._refresh_at: datetime | None = None
        self.logins = 0

    def __repr__(self) -> str:
        state = "none" if self._token is None else f"until {self._token.expires_at}"
        return f"BearerLogin(header={self.header!r}, token={state}, logins={self.logins})"

    def _fresh(self) -> bool:
        if self._token is None:
            return False
        return self._refresh_at is None or self._clock() < self._refresh_at

    def _value(self, token: Token) -> str:
        return f"{self.scheme} {token.value}" if self.scheme else token.value

    async def _relogin(self) -> Token:
        fetched_at = self._clock()
        token = await self._login()
        self.logins += 1
        self._token = token
        if token.expires_at is None:
            self._refresh_at = None
        else:
            lifetime = token.expires_at - fetched_at
            self._refresh_at = token.expires_at - min(self._margin, lifetime / 2)
        return token

    async def token(self) -> Token:
        """The current token, logging in first when missing or about to expire."""
        if self._fresh():
            assert self._token is not None
            return self._token
        async with self._lock:
            if self._fresh():  # someone else logged in while we queued
                assert self._token is not None
                return self._token
            return await self._relogin()

    async def headers(self) -> dict[str, str]:
        return {self.header: self._value(await self.token())}

    async def on_unauthorized(self, sent: Mapping[str, str]) -> bool:
        async with self._lock:
            current = self._token
            if current is None or sent.get(self.header) == self._value(current):
                await self._relogin()
            return True
