"""Login flows as first-class auth kinds: the runtime builds them from config.

* ``password_grant``: an OAuth2-style password grant posted as a form, with an optional
  client id/secret (AIMS360 Aqua, iMIS) → ``access_token`` + ``expires_in``.
* ``basic_jwt``: Basic credentials exchanged for a JWT (Amilia ``/api/v3/authenticate``
  → ``{"Token": …}``); the JWT's own ``exp`` claim gives its lifetime.
* ``bearer``: a static token; ``apikey``: a key in a named header; ``basic``: Basic on
  every call.

Every login call goes through the vendor's client with ``auth=False``, so it takes the
vendor's limiter slot and retry policy like any other call. Tokens are renewed shortly
before they expire and once on a 401 (``BearerLogin``). A refused login raises
``AuthError`` naming the vendor and status, never the secret.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from service.errors import AuthError, ParseError, RequestRejected
from service.http.auth import ApiKeyAuth, Auth, BasicAuth, BearerLogin, Token, utcnow

if TYPE_CHECKING:
    from service.http.vendor_client import VendorClient

LoginKind = Literal["basic", "apikey", "bearer", "password_grant", "basic_jwt", "none"]


@dataclass(frozen=True, slots=True)
class LoginSpec:
    """Everything a login kind needs; secrets are plain strings here and never printed."""

    kind: LoginKind
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    header: str = "Authorization"
    token_path: str | None = None
    token_method: Literal["GET", "POST"] = "POST"
    token_field: str = "access_token"
    scope: str | None = None
    token_ttl_s: float | None = None  # when the response does not say
    refresh_margin_s: float = 60.0


def jwt_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT (read, not verified: only its lifetime matters here)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
        exp = float(claims["exp"])
    except (ValueError, KeyError, TypeError):
        return None
    return datetime.fromtimestamp(exp, UTC) if math.isfinite(exp) else None


def parse_token(
    body: Any,
    *,
    token_field: str,
    fetched_at: datetime,
    ttl_s: float | None,
    vendor: str | None = None,
) -> Token:
    """A token response → ``Token``: lifetime from ``expires_in``, else the JWT's ``exp``,
    else ``ttl_s`` (None: valid until a 401 says otherwise)."""
    if not isinstance(body, dict) or not isinstance(body.get(token_field), str):
        raise ParseError(f"login answer has no {token_field!r} string", vendor=vendor)
    value: str = body[token_field]
    if not value:
        raise ParseError(f"login answer has an empty {token_field!r}", vendor=vendor)
    expires: datetime | None = None
    raw = body.get("expires_in")
    if isinstance(raw, int | float | str) and not isinstance(raw, bool):
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds > 0:
            expires = fetched_at + timedelta(seconds=seconds)
    if expires is None:
        expires = jwt_expiry(value)
    if expires is None and ttl_s is not None:
        expires = fetched_at + timedelta(seconds=ttl_s)
    return Token(value, expires)


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def build_auth(
    spec: LoginSpec,
    client: VendorClient,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> Auth | None:
    """The ``Auth`` hook for ``spec``, logging in through ``client`` (and its limiter)."""
    vendor = client.vendor
    if spec.kind == "none":
        return None
    if spec.kind == "basic":
        assert spec.username is not None
        assert spec.password is not None
        return BasicAuth(spec.username, spec.password)
    if spec.kind == "apikey":
        assert spec.api_key is not None
        return ApiKeyAuth(spec.header, spec.api_key)
    if spec.kind == "bearer":
        assert spec.token is not None
        static = Token(spec.token, None)

        async def same() -> Token:
            return static

        return _StaticBearer(same, clock=clock, header=spec.header)
    if spec.token_path is None:
        raise AuthError(f"{spec.kind} login needs a token_path", vendor=vendor)
    path = spec.token_path

    async def login() -> Token:
        try:
            return await _login()
        except RequestRejected as exc:  # 400 invalid_grant and kin: the credentials
            raise AuthError(
                f"login refused (HTTP {exc.status}): check the credentials", vendor=vendor
            ) from exc
        except AuthError as exc:
            raise AuthError(
                f"login refused (HTTP {exc.status}): check the credentials", vendor=vendor
            ) from exc

    async def _login() -> Token:
        fetched_at = clock()
        if spec.kind == "password_grant":
            form = {
                "grant_type": "password",
                "username": spec.username or "",
                "password": spec.password or "",
            }
            if spec.client_id is not None:
                form["client_id"] = spec.client_id
            if spec.client_secret is not None:
                form["client_secret"] = spec.client_secret
            if spec.scope is not None:
                form["scope"] = spec.scope
            resp = await client.request(
                "POST", path, data=form, auth=False, expected=(200,), expect_json=True
            )
        else:  # basic_jwt
            resp = await client.request(
                spec.token_method,
                path,
                headers={"Authorization": _basic(spec.username or "", spec.password or "")},
                auth=False,
                expected=(200,),
                expect_json=True,
            )
        return parse_token(
            resp.json(),
            token_field=spec.token_field,
            fetched_at=fetched_at,
            ttl_s=spec.token_ttl_s,
            vendor=vendor,
        )

    return BearerLogin(login, clock=clock, refresh_margin_s=spec.refresh_margin_s)


class _StaticBearer(BearerLogin):
    """A configured token: nothing to renew, so a 401 is final."""

    async def on_unauthorized(self, sent: Any) -> bool:
        return False
