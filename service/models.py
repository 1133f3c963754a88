"""Plain data passed between layers: no I/O here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JSON = dict[str, Any]


def canonical_json(payload: Any) -> str:
    """Stable serialisation: equal payloads always give equal text (and hash)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_hash(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


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

    ``seen_keys`` is set on the last batch of a full pass (all keys the vendor still has),
    so the engine can soft-delete the rest. ``deleted_keys`` are explicit deletions.
    """

    records: list[Record]
    state: JSON
    seen_keys: frozenset[str] | None = None
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
class RunResult:
    run_id: int
    vendor: str
    stream: str
    status: str
    counts: UpsertCounts
    requests: int = 0
    duration_s: float = 0.0
    error: str | None = None


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
