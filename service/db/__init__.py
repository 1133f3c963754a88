"""The staging database: tables, engine and migrations, and plain async functions that
take an ``AsyncConnection`` first. The caller owns the transaction; time is a parameter.
"""

from service.db.dialect import sqlite_file
from service.db.engine import (
    check_schema,
    create_engine,
    head_revision,
    mask_url,
    migrate,
    schema_revision,
    translate_db_errors,
)
from service.db.leases import acquire_lease, live_leases, release_lease, renew_lease, renew_owned
from service.db.records import (
    count_live,
    fetch_live,
    mark_seen,
    soft_delete_keys,
    soft_delete_missing,
    soft_delete_unseen,
    staged_cursors,
)
from service.db.runs import (
    RunRow,
    abandon_stale_runs,
    finish_run,
    last_full_run_at,
    last_success_started_at,
    recent_runs,
    start_run,
    stream_statuses,
)
from service.db.state import load_state, save_state
from service.db.upsert import upsert_records

__all__ = [
    "RunRow",
    "abandon_stale_runs",
    "acquire_lease",
    "check_schema",
    "count_live",
    "create_engine",
    "fetch_live",
    "finish_run",
    "head_revision",
    "last_full_run_at",
    "last_success_started_at",
    "live_leases",
    "load_state",
    "mark_seen",
    "mask_url",
    "migrate",
    "recent_runs",
    "release_lease",
    "renew_lease",
    "renew_owned",
    "save_state",
    "schema_revision",
    "soft_delete_keys",
    "soft_delete_missing",
    "soft_delete_unseen",
    "sqlite_file",
    "staged_cursors",
    "start_run",
    "stream_statuses",
    "translate_db_errors",
    "upsert_records",
]
