"""Token answers → lifetimes, without I/O."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from service.errors import ParseError
from service.http.logins import jwt_expiry, parse_token

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def jwt(claims: dict[str, object]) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part(claims)}.sig"


def test_expires_in_wins() -> None:
    token = parse_token(
        {"access_token": "t", "expires_in": 1199},
        token_field="access_token",
        fetched_at=T0,
        ttl_s=5,
    )
    assert token.expires_at == T0 + timedelta(seconds=1199)


def test_jwt_exp_then_configured_ttl_then_none() -> None:
    exp = int((T0 + timedelta(days=365)).timestamp())
    assert jwt_expiry(jwt({"exp": exp})) == T0 + timedelta(days=365)
    got = parse_token({"Token": jwt({"exp": exp})}, token_field="Token", fetched_at=T0, ttl_s=None)
    assert got.expires_at == T0 + timedelta(days=365)
    opaque = parse_token({"Token": "opaque"}, token_field="Token", fetched_at=T0, ttl_s=60)
    assert opaque.expires_at == T0 + timedelta(seconds=60)
    assert (
        parse_token({"Token": "x"}, token_field="Token", fetched_at=T0, ttl_s=None).expires_at
        is None
    )


@pytest.mark.parametrize(
    "body",
    [None, [], {}, {"access_token": 5}, {"access_token": ""}, {"token": "t"}],
)
def test_shapes_we_do_not_understand(body: object) -> None:
    with pytest.raises(ParseError):
        parse_token(body, token_field="access_token", fetched_at=T0, ttl_s=None)


@pytest.mark.parametrize("value", ["nan", "-5", "0", "soon", True])
def test_bad_expires_in_falls_back(value: object) -> None:
    got = parse_token(
        {"access_token": "t", "expires_in": value},
        token_field="access_token",
        fetched_at=T0,
        ttl_s=9,
    )
    assert got.expires_at == T0 + timedelta(seconds=9)


@pytest.mark.parametrize("token", ["a.b", "a.!!!.c", jwt({"exp": "never"}), jwt({})])
def test_not_a_usable_jwt(token: str) -> None:
    assert jwt_expiry(token) is None
