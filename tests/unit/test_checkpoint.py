"""Checkpoint maths: one definition of full, since and lookback for every mechanism."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.connectors.checkpoint import advance, epoch_ms, read_from, rereads

T = datetime(2026, 6, 1, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


def test_read_from_cursor_minus_lookback() -> None:
    assert read_from(T, lookback=HOUR) == T - HOUR
    assert read_from(1000, lookback=100) == 900


def test_full_or_no_checkpoint_reads_everything() -> None:
    assert read_from(None, lookback=HOUR) is None
    assert read_from(T, lookback=HOUR, full=True) is None
    # --since on a fresh database is not a filter: with no checkpoint, read everything.
    assert read_from(None, lookback=HOUR, since=T) is None


def test_since_only_widens() -> None:
    assert read_from(T, lookback=HOUR, since=T - 5 * HOUR) == T - 5 * HOUR
    assert read_from(T, lookback=HOUR, since=T + HOUR) == T - HOUR  # later: no effect


def test_rereads_and_advance() -> None:
    assert rereads(10, 10)
    assert not rereads(9, 10)
    assert not rereads(9, None)
    assert advance(None, 5) == 5
    assert advance(7, 5) == 7  # never backwards
    assert advance(7, None) == 7


def test_epoch_ms() -> None:
    assert epoch_ms(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)) == 1000
    with pytest.raises(ValueError, match="naive"):
        epoch_ms(datetime(2026, 1, 1))
