"""Amilia wire details as pure functions: JWTs, auth headers, routes, query parameters,
paging arithmetic and write-body validation. No I/O; ``sandbox.amilia.sim`` calls these."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from yarl import URL

from sandbox.amilia.data import GENDERS

Record = dict[str, Any]


class ApiError(Exception):
    """Answered as the vendor's error body ``{"Message", "TransactionId"}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# --- JWT (HS256) ----------------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_jwt(claims: Mapping[str, Any], secret: bytes) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = hmac.new(secret, signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"


def decode_jwt(token: str, secret: bytes) -> dict[str, Any] | None:
    """The claims of a token we signed, or None (malformed, other alg, bad signature)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(_unb64url(parts[0]))
        claims = json.loads(_unb64url(parts[1]))
        signature = _unb64url(parts[2])
    except (ValueError, binascii.Error):
        return None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        return None
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature) or not isinstance(claims, dict):
        return None
    return claims


def jwt_subject(token: str) -> str | None:
    """The ``sub`` claim, unverified: enough to pick the tenant whose secret then checks it."""
    parts = token.split(".")
    try:
        claims = json.loads(_unb64url(parts[1])) if len(parts) == 3 else None
    except (ValueError, binascii.Error):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) else None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def parse_bearer(header: str | None) -> str | None:
    scheme, _, value = (header or "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


# --- routing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    pattern: tuple[str, ...]  # literal segments lower-case, variables as "{name}"
    methods: Mapping[str, Any]  # HTTP method → handler


def route(path: str, methods: Mapping[str, Any]) -> Route:
    return Route(
        tuple(s if s.startswith("{") else s.lower() for s in path.strip("/").split("/")), methods
    )


def match_path(pattern: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    """Variables of ``segments`` against ``pattern``; literals match case-insensitively
    (the vendor is an ASP.NET app: ``api/V3`` and ``api/v3`` are the same route)."""
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for want, got in zip(pattern, segments, strict=True):
        if want.startswith("{"):
            params[want[1:-1]] = got
        elif want != got.lower():
            return None
    return params


# --- query parameters -------------------------------------------------------------------------
def parse_bool(query: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ApiError(400, f"The value '{raw}' is not valid for {name}; expected true or false.")


def parse_int(
    query: Mapping[str, str], name: str, default: int, lo: int, hi: int | None = None
) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"The value '{raw}' is not valid for {name}.") from None
    if value < lo or (hi is not None and value > hi):
        limits = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ApiError(400, f"{name} must be {limits}; got {value}.")
    return value


def parse_day(query: Mapping[str, str], name: str) -> int | None:
    """A ``YYYY-MM-DD`` parameter as a date ordinal; anything else is a 400."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        raise ApiError(400, f"The value '{raw}' is not valid for {name}; expected YYYY-MM-DD.")
    try:
        return date.fromisoformat(raw).toordinal()
    except ValueError:
        raise ApiError(400, f"The value '{raw}' is not a valid date for {name}.") from None


def parse_v3_paging(
    query: Mapping[str, str], default_per_page: int, max_per_page: int
) -> tuple[int, int]:
    """(page, perPage); perPage above the cap is clamped, as a lenient server would.

    The seed: "You can always use a limit query string parameter to control the page
    size", so ``limit`` is accepted too (``perPage`` wins when both are sent)."""
    page = parse_int(query, "page", 1, 1)
    size_param = "perPage" if query.get("perPage") not in (None, "") else "limit"
    per_page = parse_int(query, size_param, default_per_page, 1)
    return page, min(per_page, max_per_page)


def page_bounds(total: int, page: int, per_page: int) -> tuple[int, int, bool]:
    """(start, end, has_next) of 1-based ``page``; past the end → an empty slice, no next."""
    start = (page - 1) * per_page
    if start >= total:
        return total, total, False
    end = min(total, start + per_page)
    return start, end, end < total


def with_params(url: URL, **params: str | int) -> str:
    """``url`` with ``params`` set and every other query parameter kept."""
    query = url.query.copy()
    for key, value in params.items():
        query[key] = str(value)
    return str(url.with_query(query))


# --- write bodies ----------------------------------------------------------------------------
TEXT_FIELDS = ("Telephone", "TelephoneMobile", "TelephoneWork", "TelephoneWorkExtension")
ADDRESS_TEXT = ("Address1", "Address2", "City", "StateProvince", "Country", "ZipPostalCode")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _check_day(value: Any, name: str, today: int, errors: list[str]) -> None:
    if value is None:
        return
    try:
        ordinal = date.fromisoformat(value).toordinal() if isinstance(value, str) else None
    except ValueError:
        ordinal = None
    if ordinal is None or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        errors.append(f"{name} must be a date YYYY-MM-DD")
    elif ordinal > today:
        errors.append(f"{name} cannot be in the future")


def _check_address(value: Any, errors: list[str]) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        errors.append("Address must be an object")
        return
    for key, item in value.items():
        if key in ADDRESS_TEXT:
            if item is not None and not isinstance(item, str):
                errors.append(f"Address.{key} must be a string")
        elif key in ("Latitude", "Longitude"):
            bound = 90 if key == "Latitude" else 180
            ok = item is None or (
                isinstance(item, int | float) and not isinstance(item, bool) and abs(item) <= bound
            )
            if not ok:
                errors.append(f"Address.{key} must be a number between -{bound} and {bound}")
        else:
            errors.append(f"Address.{key} is not a known field")


def person_errors(
    body: Any, *, creating: bool, owner: bool, today: int, where: str = ""
) -> list[str]:
    """Validation messages for person fields (read names); empty when the body is valid."""
    if not isinstance(body, dict):
        return [f"{where}a person must be a JSON object"]
    errors: list[str] = []
    for name in ("FirstName", "LastName"):
        if name in body:
            value = body[name]
            if not isinstance(value, str) or not value.strip() or len(value) > 100:
                errors.append(f"{name} must be a non-empty string of at most 100 characters")
        elif creating:
            errors.append(f"{name} is required")
    for key, value in body.items():
        if key in ("FirstName", "LastName", "FullName"):
            continue  # checked above; FullName is derived and ignored
        if key == "Id":
            if creating:
                errors.append("Id is assigned by Amilia and cannot be sent")
        elif key == "Gender":
            if value not in GENDERS:
                errors.append(f"Gender must be one of {', '.join(GENDERS)}")
        elif key == "DateOfBirth":
            _check_day(value, "DateOfBirth", today, errors)
        elif key == "Email":
            if value is not None and (not isinstance(value, str) or not EMAIL_RE.fullmatch(value)):
                errors.append(f"Email '{value}' is not a valid email address")
        elif key == "Address":
            _check_address(value, errors)
        elif key in TEXT_FIELDS:
            if value is not None and not isinstance(value, str):
                errors.append(f"{key} must be a string")
        elif key == "IsChild":
            if not isinstance(value, bool):
                errors.append("IsChild must be true or false")
        else:
            errors.append(f"'{key}' is not a known field")
    if creating and owner and not body.get("Email"):
        errors.append("Email is required for an account owner")
    return [where + e for e in errors]


def person_fields(body: Record) -> Record:
    """The stored subset of a validated person body (derived and id fields dropped)."""
    return {k: v for k, v in body.items() if k not in ("Id", "FullName")}


def account_errors(body: Any, today: int) -> list[str]:
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    errors = [
        f"'{k}' is not a known field" for k in body if k not in ("Owners", "Members", "Corporate")
    ]
    owners, members = body.get("Owners"), body.get("Members", [])
    if not isinstance(owners, list) or not owners:
        errors.append("Owners must be a non-empty list of persons")
        owners = []
    if not isinstance(members, list):
        errors.append("Members must be a list of persons")
        members = []
    if not isinstance(body.get("Corporate", False), bool):
        errors.append("Corporate must be true or false")
    for role, people in (("Owners", owners), ("Members", members)):
        for i, person in enumerate(people):
            errors += person_errors(
                person, creating=True, owner=role == "Owners", today=today, where=f"{role}[{i}]."
            )
    return errors


def skill_errors(body: Any, today: int) -> list[str]:
    if not isinstance(body, dict):
        return ["the body must be a JSON object"]
    errors = [
        f"'{k}' is not a known field" for k in body if k not in ("Name", "Level", "DateObtained")
    ]
    name = body.get("Name")
    if not isinstance(name, str) or not name.strip():
        errors.append("Name is required")
    if body.get("Level") is not None and not isinstance(body["Level"], str):
        errors.append("Level must be a string")
    _check_day(body.get("DateObtained"), "DateObtained", today, errors)
    return errors
