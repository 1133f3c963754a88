"""iMIS bearer tokens: the OWIN ``/token`` password grant, timed by the sandbox clock."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from sandbox.clock import Clock

# [ASSUMPTION] (vendor-apis.md §3.2): the standard OWIN bodies.
INVALID_GRANT = {
    "error": "invalid_grant",
    "error_description": "The user name or password is incorrect.",
}
UNSUPPORTED_GRANT = {"error": "unsupported_grant_type"}
DENIED = "Authorization has been denied for this request."


class TokenStore:
    """Issued tokens and their expiry instants (epoch seconds on the sandbox clock)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._tokens: dict[str, tuple[str, float]] = {}  # token → (user, expires at)

    def issue(self, user: str, ttl_s: float) -> str:
        token = secrets.token_urlsafe(48)
        self._tokens[token] = (user, self.clock.now() + ttl_s)
        return token

    def user_of(self, token: str | None) -> str | None:
        """The token's user, or None when it is unknown or expired."""
        entry = self._tokens.get(token or "")
        if entry is None:
            return None
        if entry[1] <= self.clock.now():
            del self._tokens[token or ""]
            return None
        return entry[0]

    def expire_all(self) -> None:
        self._tokens.clear()


def grant(form: Mapping[str, str], users: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
    """Check a token request: ``(user, {})`` or ``(None, error body)``.

    Form keys are matched in any case (the Postman collection sends ``Grant_type``); user
    names too, as iMIS logins are; passwords exactly.
    """
    fields = {k.casefold(): v for k, v in form.items()}
    if fields.get("grant_type") != "password":
        return None, UNSUPPORTED_GRANT
    wanted = fields.get("username", "").casefold()
    user = next((u for u in users if u.casefold() == wanted), None)
    if user is None or users[user] != fields.get("password"):
        return None, INVALID_GRANT
    return user, {}


def token_body(token: str, user: str, issued_s: float, ttl_s: int, owin: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": token, "token_type": "bearer", "expires_in": ttl_s}
    if owin:  # [ASSUMPTION] the ASP.NET OWIN server adds these three
        body["userName"] = user
        body[".issued"] = http_date(issued_s)
        body[".expires"] = http_date(issued_s + ttl_s)
    return body


def bearer(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer …`` header (scheme in any case)."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.casefold() == "bearer" else None


def http_date(epoch_s: float) -> str:
    """``Thu, 01 Jan 2026 00:00:00 GMT``, as OWIN writes ``.issued`` and ``.expires``."""
    return format_datetime(datetime.fromtimestamp(int(epoch_s), tz=UTC), usegmt=True)
