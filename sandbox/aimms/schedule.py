"""Pure parsing of AIMMS PRO task schedule parameters, and the time format the sandbox emits.

``scheduleFor`` is ``YYYY-MM-DD hh:mm[:ss[.ms]] [±HH:MM]`` (UTC when no offset is given);
``scheduleIn`` and ``scheduleInterval`` are ISO 8601 durations (``P1DT2H3M4S``, ``P2W``) or
human text (``1 day``, ``2 weeks``, ``1 hour 30 minutes``). All functions raise ``ValueError``
on bad input and never touch a clock.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta, timezone

DAY_S = 86_400.0
# Months and years have no fixed length; the sandbox takes 30 and 365 days (documented).
_UNIT_S = {
    "year": 365 * DAY_S,
    "month": 30 * DAY_S,
    "week": 7 * DAY_S,
    "day": DAY_S,
    "hour": 3_600.0,
    "minute": 60.0,
    "second": 1.0,
}
_ALIASES = {
    "y": "year", "yr": "year", "yrs": "year", "years": "year",
    "months": "month", "mo": "month",
    "w": "week", "wk": "week", "wks": "week", "weeks": "week",
    "d": "day", "days": "day",
    "h": "hour", "hr": "hour", "hrs": "hour", "hours": "hour",
    "m": "minute", "min": "minute", "mins": "minute", "minutes": "minute",
    "s": "second", "sec": "second", "secs": "second", "seconds": "second",
}  # fmt: skip

_NUM = r"(\d+(?:[.,]\d+)?)"
_ISO_DURATION = re.compile(
    rf"^P(?:{_NUM}Y)?(?:{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?(?:T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?$",
    re.IGNORECASE,
)
_ISO_UNITS = ("year", "month", "week", "day", "hour", "minute", "second")
_HUMAN_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_HUMAN_SEPARATORS = re.compile(r"^(?:\s|,|and)*$")

_SCHEDULE_FOR = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?"
    r"\s*(?:(Z)|([+-])?(\d{2}):?(\d{2}))?$",
    re.IGNORECASE,
)


def parse_duration_s(text: str) -> float:
    """Seconds in an ISO 8601 duration or a human one such as ``1 day 2 hours``."""
    value = text.strip()
    if not value:
        raise ValueError("empty duration")
    iso = _ISO_DURATION.match(value)
    if iso:
        if not any(iso.groups()) or value.upper().endswith("T"):
            raise ValueError(f"invalid ISO 8601 duration {text!r}")
        return sum(
            float(num.replace(",", ".")) * _UNIT_S[unit]
            for num, unit in zip(iso.groups(), _ISO_UNITS, strict=True)
            if num is not None
        )
    lowered = value.lower()
    parts = list(_HUMAN_PART.finditer(lowered))
    if not parts:
        raise ValueError(f"invalid duration {text!r}")
    # Everything between the "<n> <unit>" parts must be separators, or the text is not a duration.
    gaps = [lowered[: parts[0].start()], lowered[parts[-1].end() :]]
    gaps += [lowered[a.end() : b.start()] for a, b in itertools.pairwise(parts)]
    if not all(_HUMAN_SEPARATORS.match(gap) for gap in gaps):
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    for part in parts:
        unit = _ALIASES.get(part.group(2), part.group(2))
        if unit not in _UNIT_S:
            raise ValueError(f"unknown duration unit {part.group(2)!r}")
        total += float(part.group(1)) * _UNIT_S[unit]
    return total


def parse_schedule_for(text: str) -> float:
    """Epoch seconds of a ``scheduleFor`` value; no offset means UTC.

    An unencoded ``+`` in a query string arrives as a space, so an offset without a sign
    counts as positive.
    """
    m = _SCHEDULE_FOR.match(text.strip())
    if not m:
        raise ValueError(f"invalid scheduleFor {text!r}; expected YYYY-MM-DD hh:mm:ss.ms +HH:MM")
    year, month, day, hour, minute, second, frac, zulu, sign, off_h, off_m = m.groups()
    tz = UTC
    if off_h is not None and not zulu:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        tz = timezone(-offset if sign == "-" else offset)
    micros = int((frac or "0").ljust(6, "0"))
    moment = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micros, tz
    )
    return moment.timestamp()


def iso(epoch_s: float) -> str:
    """``2026-01-01T00:00:00.000Z``: UTC, millisecond precision."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
