"""Pure checks of single setting values: schedules, durations, URLs, numbers.

Each raises ``ValueError`` with a short message (the caller adds the key); none does I/O
except ``validate_database_url``, which looks whether a SQLite path is a directory.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from apscheduler.triggers.cron import CronTrigger

from service.secrets import mask_url

DAY_S = 86_400.0
MAX_INTERVAL_S = 366 * DAY_S  # schedules and periodic full reads: at most a year apart
MIN_INTERVAL_S = 1.0

_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*(s|m|h)$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DB_BACKENDS = ("sqlite", "postgresql")


def parse_every_s(text: str) -> float | None:
    """``"every 15m"`` → 900.0; anything else → None."""
    m = _EVERY.match(text.strip().lower())
    if not m:
        return None
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def _bounded(seconds: float, text: str, what: str) -> float:
    # Huge intervals overflow datetime arithmetic in the scheduler; tiny ones spin it.
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise ValueError(f"{what} must be between 1s and 366d: {text!r}")
    return seconds


def parse_duration_s(text: str) -> float:
    """``"7d"`` → 604800.0 (units s, m, h, d; 1 s to 366 d); raise ValueError otherwise."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise ValueError(f"not a duration like '90s', '15m', '12h' or '7d': {text!r}")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return _bounded(seconds, text, "duration")


def validate_schedule(text: str) -> str:
    """Accept a 5-field crontab (UTC) or ``every N{s,m,h}``; raise ValueError otherwise."""
    every = parse_every_s(text)
    if every is not None:
        if every <= 0:
            raise ValueError(f"interval must be positive: {text!r}")
        _bounded(every, text, "interval")
        return text
    if len(text.split()) != 5:
        raise ValueError(f"not a 5-field cron expression or 'every N[s|m|h]': {text!r}")
    # The scheduler's own parser, so what passes here is exactly what the daemon runs.
    try:
        CronTrigger.from_crontab(text, timezone=UTC)
    except ValueError as exc:
        raise ValueError(f"bad cron expression {text!r}: {exc}") from None
    return text


def validate_http_url(url: str) -> str:
    """An absolute http(s) URL with a host; no spaces or control characters anywhere."""
    shown = mask_url(url)
    if _CONTROL.search(url) or any(c.isspace() for c in url):
        raise ValueError(
            f"must not contain spaces or control characters (percent-encode them): {shown!r}"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"not a valid URL (bad host or port): {shown!r}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, got {shown!r}")
    # Request paths are appended to it: a query or fragment here would swallow them.
    if "?" in url or "#" in url:
        raise ValueError(f"must not contain a query or fragment ('?' or '#'): {shown!r}")
    return url.rstrip("/")


def check_no_control(text: str, what: str = "value") -> str:
    """``text`` unless it holds a control character (CR/LF would split an HTTP header or a
    log line). The message never repeats ``text``: it may be a secret."""
    if _CONTROL.search(text):
        raise ValueError(f"{what} must not contain control characters (CR, LF, NUL, ...)")
    return text


# An HTTP header name (RFC 9110 token).
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


_DB_SCHEME = re.compile(r"^([A-Za-z0-9_]+)(\+[A-Za-z0-9_]+)?://(.*)$", re.S)
# The shape SQLAlchemy's make_url accepts for a server URL (user:password@host:port/db?…).
_DB_SERVER = re.compile(
    r"^(?:(?P<user>[^:/]*)(?::(?P<pw>[^@]*))?@)?"
    r"(?P<host>\[[^/?]+\]|[^/:?]*)?(?::(?P<port>[^/?]*))?(?:[/?].*)?$",
    re.S,
)
_DB_EXAMPLE = "e.g. sqlite+aiosqlite:///var/vs.db or postgresql+asyncpg://user@host/db"


def validate_database_url(url: str) -> str:
    """A SQLite or PostgreSQL SQLAlchemy URL the engine factory will accept."""
    shown = mask_url(url)
    m = _DB_SCHEME.match(url.strip())
    if not m or _CONTROL.search(url):
        raise ValueError(f"not a database URL ({_DB_EXAMPLE}): {shown!r}")
    backend, rest = m.group(1).lower(), m.group(3)
    if backend not in DB_BACKENDS:
        hint = " (write postgresql://)" if backend == "postgres" else ""
        raise ValueError(f"unsupported database {backend!r}{hint}: use sqlite or postgresql")
    if backend == "sqlite":
        if rest and not rest.startswith("/"):
            raise ValueError(
                f"a SQLite URL needs three slashes (sqlite+aiosqlite:///relative/path.db): {shown!r}"
            )
        path = rest[1:].split("?", 1)[0]
        if path and path != ":memory:" and Path(path).expanduser().is_dir():
            raise ValueError(f"the SQLite database path is a directory: {path}")
        return url
    server = _DB_SERVER.match(rest)
    if server is None:
        raise ValueError(f"not a database URL ({_DB_EXAMPLE}): {shown!r}")
    if "@" in (server.group("host") or ""):
        raise ValueError("the password contains '@': percent-encode it as %40")
    port = server.group("port")
    if port and not (port.isdigit() and 0 < int(port) <= 65535):
        raise ValueError(f"bad port {port!r}")
    return url


def non_finite(data: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Paths to every NaN or infinite number in nested TOML data (options included)."""
    if isinstance(data, float) and not math.isfinite(data):
        yield path
    elif isinstance(data, Mapping):
        for key, value in data.items():
            yield from non_finite(value, (*path, str(key)))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from non_finite(value, (*path, str(i)))


# --- blackout windows ---------------------------------------------------------------------

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_window(text: str) -> tuple[int, int]:
    """``"05:58-06:10"`` (UTC, daily) → (start, end) in minutes of the day; may wrap midnight."""
    m = _WINDOW.match(text)
    if not m:
        raise ValueError(f"not a daily UTC window like '05:58-06:10': {text!r}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"not a time of day in {text!r}")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"empty window {text!r}")
    return start, end


def blackout_remaining_s(windows: Sequence[tuple[int, int]], now: datetime) -> float:
    """Seconds until the blackout window ``now`` falls in ends (0.0 when in none)."""
    utc = now.astimezone(UTC)
    minute = utc.hour * 60 + utc.minute + utc.second / 60 + utc.microsecond / 60e6
    for start, end in windows:
        if start < end and start <= minute < end:
            return (end - minute) * 60
        if start > end and (minute >= start or minute < end):  # wraps midnight
            return ((end - minute) % 1440) * 60
    return 0.0
