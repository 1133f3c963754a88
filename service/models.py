"""Plain data passed between layers: no I/O here."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

JSON = dict[str, Any]


# One encoder, built once: the staging upsert serialises every payload with it.
CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(payload: Any) -> str:
    """Stable serialisation: equal payloads always give equal text (and hash).

    The text is ``CANONICAL``'s, forever (staged rows' hashes depend on it). orjson writes
    the very same text some eight times faster, except for floats below 1e-4 (it spells
    some of them differently), NaN and infinities, and what it refuses (big ints, keys that
    are not strings): those payloads, and any of a type JSON does not decode to, go to
    ``CANONICAL``.
    """
    if _orjson_agrees(payload):
        try:
            return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
        except (TypeError, orjson.JSONEncodeError):
            pass
    return CANONICAL.encode(payload)


_PLAIN = (str, int, bool, type(None))


def _orjson_agrees(value: Any) -> bool:
    """Whether orjson is known to write ``value`` exactly as ``CANONICAL`` does.

    Checked over every float class (half a million random doubles, bit patterns and
    decimals, in ``tests/unit/test_models.py``): finite floats from 1e-4 up, and zero.
    """
    stack = [value]
    while stack:  # iterative: vendor JSON may nest deeper than the recursion limit
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float:
            if not (item == 0.0 or _FLOAT_MIN <= abs(item) < math.inf):
                return False
        elif kind not in _PLAIN:
            return False  # a tuple, a str subclass, a datetime…: CANONICAL decides
    return True


_FLOAT_MIN = 1e-4


def payload_hash(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def _has_nul(value: Any) -> bool:
    """Whether a NUL character is anywhere in ``value`` (keys included).

    orjson writes a NUL as ``\\u0000`` and serialises a row some ten times faster than
    Python walks it, so the walk runs only for the rare payload whose text shows that
    sequence (also a literal backslash followed by ``u0000``) or that orjson refuses.
    """
    if isinstance(value, str):
        return "\x00" in value
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except (TypeError, orjson.JSONEncodeError):
        return _walk_has_nul(value)
    return b"\\u0000" in text and _walk_has_nul(value)


def _walk_has_nul(value: Any) -> bool:
    stack = [value]
    while stack:  # iterative: vendor JSON may nest deeper than the recursion limit
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def unstorable_reason(key: str, cursor: str | None, payload: Any) -> str | None:
    """Why a record cannot be staged as received, or None.

    PostgreSQL text and JSONB cannot hold a NUL character (``\\u0000``). Such records are
    refused one by one on every database alike, so both stores hold the same rows.
    """
    if _has_nul(key) or _has_nul(cursor or "") or _has_nul(payload):
        return "contains a NUL character (\\u0000), which the staging database cannot store"
    return None


@dataclass(frozen=True, slots=True)
class Record:
    """One vendor object: ``key`` is the vendor's stable id, ``cursor`` its incremental position."""

    stream: str
    key: str
    payload: JSON
    cursor: str | None = None


@dataclass(slots=True)
class Batch:
    """What a connector yields: records, plus the state to save once they are committed.

    ``state`` None keeps the previous checkpoint (batches before the last one of a pass
    usually carry none, so the checkpoint is never ahead of the data). ``seen_keys`` is set
    on the last batch of a full pass (all keys the vendor still has), so the engine can
    soft-delete the rest. ``deleted_keys`` are explicit deletions.
    """

    records: list[Record]
    state: JSON | None = None
    seen_keys: frozenset[str] | None = None
    # A complete pass too large to hold its keys in memory instead marks what it saw in
    # the database batch by batch: ``marks`` (keys seen besides the batch's own records;
    # ``()`` for none) on every batch, and ``complete`` on the last one, when the engine
    # soft-deletes every live row the run did not mark. An incomplete pass deletes nothing.
    marks: Collection[str] | None = None
    complete: bool = False
    deleted_keys: list[str] = field(default_factory=list)
    # Records the connector knew to be unchanged and did not fetch (counted, not written).
    unchanged: int = 0


@dataclass(slots=True)
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    invalid: int = 0  # records refused one by one (the rest of the stream went on)

    def add(self, other: UpsertCounts) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.deleted += other.deleted
        self.invalid += other.invalid

    @property
    def written(self) -> int:
        return self.inserted + self.updated + self.deleted


@dataclass(slots=True)
class RunProgress:
    """A run in progress, as its progress callback sees it after each batch."""

    vendor: str
    stream: str
    counts: UpsertCounts  # committed so far
    expected: int | None = None  # records this run will fetch, once the connector knows
    fetched: int = 0  # records received so far (committed or not)
    requests: int = 0  # vendor calls so far, retries and logins included


@dataclass(slots=True)
class RunResult:
    run_id: int
    vendor: str
    stream: str
    status: str
    counts: UpsertCounts
    requests: int = 0
    duration_s: float = 0.0
    error: str | None = None
    full: bool = False
    note: str | None = None  # what the connector said about the run (not an error)
    # The failure itself, for callers that re-raise it (``run_stream``); not data.
    exception: BaseException | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class StreamStatus:
    vendor: str
    stream: str
    state: JSON | None
    state_updated_at: datetime | None
    last_run_status: str | None
    last_run_started_at: datetime | None
    last_run_finished_at: datetime | None
    last_run_rows: int | None
    last_error: str | None
    staged_rows: int
