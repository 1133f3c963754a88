"""Aqua accounts and bearer tokens: the password grant of the token endpoint.

Client ids belong to a company (System Settings → API tab), as do users; a user may
only get a token through a client of their own company.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.clock import Clock

DEFAULT_CLIENTS: list[dict[str, str]] = [
    {"client_id": "aqua-demo-client", "client_secret": "aqua-demo-secret", "company": "DEMO01"},
    {"client_id": "aqua-other-client", "client_secret": "aqua-other-secret", "company": "OTHER1"},
]
DEFAULT_USERS: list[dict[str, str]] = [
    {"username": "demo@aims360.test", "password": "demo-secret", "company": "DEMO01"},
    {"username": "colleague@aims360.test", "password": "colleague-secret", "company": "DEMO01"},
    {"username": "other@othercompany.test", "password": "other-secret", "company": "OTHER1"},
]


@dataclass(frozen=True)
class User:
    username: str
    password: str
    company: str


@dataclass
class Token:
    user: User
    client_id: str
    expires_at_s: float


class Accounts:
    def __init__(
        self,
        users: list[dict[str, str]],
        clients: list[dict[str, str]],
        lifetime_s: int,
        clock: Clock,
    ) -> None:
        self.users = {u["username"].casefold(): User(**u) for u in users}
        self.clients = {c["client_id"]: c for c in clients}
        self.lifetime_s = lifetime_s
        self.clock = clock
        self.tokens: dict[str, Token] = {}

    def issue(self, form: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer a token request: (200, token body) or (400, OAuth 2 error body)."""

        def error(code: str, description: str) -> tuple[int, dict[str, Any]]:
            return 400, {"error": code, "error_description": description}

        if form.get("grant_type") != "password":
            return error("unsupported_grant_type", "grant_type must be 'password'.")
        client = self.clients.get(str(form.get("client_id", "")))
        if client is None or client["client_secret"] != form.get("client_secret"):
            return error("invalid_client", "The client id or secret is incorrect.")
        user = self.users.get(str(form.get("username", "")).casefold())
        if (
            user is None
            or user.password != form.get("password")
            or user.company != client["company"]
        ):
            return error("invalid_grant", "The user name or password is incorrect.")
        token = secrets.token_urlsafe(32)
        self.tokens[token] = Token(user, client["client_id"], self.clock.now() + self.lifetime_s)
        return 200, {"access_token": token, "token_type": "bearer", "expires_in": self.lifetime_s}

    def verify(self, authorization: str) -> Token | None:
        """The live token named by an ``Authorization: Bearer …`` header value, if any."""
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        token = self.tokens.get(value) if scheme.lower() == "bearer" else None
        if token is not None and token.expires_at_s <= self.clock.now():
            del self.tokens[value]
            return None
        return token

    def expire_all(self) -> None:
        self.tokens.clear()
