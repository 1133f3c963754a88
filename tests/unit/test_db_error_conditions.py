"""Storage conditions named in translated database errors: read-only, full disk, generic."""

from __future__ import annotations

import sqlite3

import pytest

from service.db import translate_db_errors
from service.errors import StagingError


class FakePgError(Exception):
    """Shaped like asyncpg's errors: a SQLSTATE in ``sqlstate``."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def translated(exc: BaseException, op: str | None = "saving a batch") -> str:
    with pytest.raises(StagingError) as caught, translate_db_errors(op):
        raise exc
    return str(caught.value)


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            sqlite3.OperationalError("attempt to write a readonly database"),
            "database is read-only while saving a batch: OperationalError: attempt to write "
            "a readonly database",
        ),
        (
            sqlite3.OperationalError("database or disk is full"),
            "database disk is full while saving a batch: OperationalError: database or disk "
            "is full",
        ),
        (
            sqlite3.OperationalError("no such table: lease"),
            "database error while saving a batch: OperationalError: no such table: lease",
        ),
    ],
)
def test_sqlite_conditions(exc: BaseException, line: str) -> None:
    assert translated(exc) == line


def test_without_an_operation_the_condition_still_leads() -> None:
    exc = sqlite3.OperationalError("database or disk is full")
    assert (
        translated(exc, None) == "database disk is full: OperationalError: database or disk is full"
    )


def test_an_outer_operation_keeps_the_condition() -> None:
    with (
        pytest.raises(StagingError) as caught,
        translate_db_errors("migrating"),
        translate_db_errors(),
    ):
        raise sqlite3.OperationalError("attempt to write a readonly database")
    assert str(caught.value).startswith("database is read-only while migrating: OperationalError")


@pytest.mark.parametrize(
    ("sqlstate", "what"),
    [("25006", "database is read-only"), ("53100", "database disk is full")],
)
def test_postgresql_sqlstates(sqlstate: str, what: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.db.engine as engine

    monkeypatch.setattr(engine, "_TRANSLATED", (*engine._TRANSLATED, FakePgError))
    line = translated(FakePgError("cannot execute INSERT", sqlstate), "taking lease x")
    assert line == f"{what} while taking lease x: FakePgError: cannot execute INSERT"
