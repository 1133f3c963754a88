"""Settings, fault switches and the error type of the Aqua simulator.

The settings are documented in ``sandbox/aqua/sim.py``; ``resolve_settings`` applies them over
``DEFAULTS`` and refuses unknown keys or values.
"""

from __future__ import annotations

from typing import Any

from sandbox.aqua.auth import DEFAULT_CLIENTS, DEFAULT_USERS

DEFAULTS: dict[str, Any] = {
    "token_lifetime_s": 86399,
    "unauthorized_message": "Authorization has been denied for this request.",
    "case_insensitive_keys": True,
    "access_denied_status": 403,
    "json_row_shape": "objects",
    "rerun_refused_status": 409,
    "link_before_complete": "404",
    "retry_after_s": 1,
    "queued_s": 2.0,
    "run_s": 8.0,
    "purge_after_s": 30 * 86400.0,
    "can_rerun": True,
    "excel_max_rows": 20_000,
    "csv_chunk_rows": 2000,
    "users": DEFAULT_USERS,
    "clients": DEFAULT_CLIENTS,
}


def resolve_settings(given: dict[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown aqua setting(s): {sorted(unknown)}")
    s = {**DEFAULTS, **given}
    for key, allowed in (
        ("link_before_complete", ("404", "stale")),
        ("json_row_shape", ("objects", "arrays")),
    ):
        if s[key] not in allowed:
            raise ValueError(f"aqua setting {key} must be one of {allowed}, not {s[key]!r}")
    return s


class AquaError(Exception):
    """Raised by handlers; turned into the vendor's error body in one place."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def fault_rate(value: object) -> float:
    """A fault switch: true/false, or the fraction of jobs/downloads it hits."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 1.0 if value else 0.0
