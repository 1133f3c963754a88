"""Checkpoint maths, defined once for every incremental mechanism.

The engine decides a run's mode (``full``, ``since``) and hands it to the connector in the
``StreamContext``; these functions turn it into where a read starts:

* **cursor / filter** (iMIS ``ge:`` on a modified date, Amilia date windows): read from
  the saved cursor minus a lookback (clocks and commit order at the vendor are not
  exact); ``--since T`` moves that start back to T if T is earlier; ``--full`` or no
  checkpoint reads from the beginning.
* **listing diff** (Aimsio): every listed record whose cursor differs from the staged one
  is fetched anyway; ``--since T`` also re-fetches the unchanged ones modified at or
  after T.
* **snapshot** (Aqua exports): the whole snapshot is read every time and diffed by hash;
  ``--since`` changes nothing.

So ``--since T`` is never a filter: it widens an incremental run to re-read what changed
since T, and new or changed records are fetched as always. Checkpoints only move forward,
and only the last batch of a run carries the new one (the engine keeps the previous
checkpoint for batches that carry none).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

C = TypeVar("C", datetime, int, float)


def read_from(
    checkpoint: C | None, *, lookback: Any, since: C | None = None, full: bool = False
) -> C | None:
    """Where a read by modification cursor starts (None: from the beginning).

    ``lookback`` is a ``timedelta`` for datetimes, a number for numeric cursors.
    """
    if full or checkpoint is None:
        return None
    start = cast(C, checkpoint - lookback)
    if since is not None and since < start:
        return since
    return start


def rereads(modified: C, since: C | None) -> bool:
    """Whether ``--since`` asks to re-read a record modified at ``modified``."""
    return since is not None and modified >= since


def advance(saved: C | None, seen: C | None) -> C | None:
    """The new checkpoint: the newest cursor seen, never behind the saved one."""
    if seen is None:
        return saved
    if saved is None:
        return seen
    return max(saved, seen)


def epoch_ms(when: datetime) -> int:
    """A UTC-aware time as epoch milliseconds (Aimsio's ``updatedAt``)."""
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: pass a UTC-aware datetime")
    return int(when.timestamp() * 1000)


def lookback(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)
