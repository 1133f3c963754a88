"""Settings, API keys and the error type of the AIMMS PRO simulator (see ``sim.py``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sandbox.aimms.model import DEMO_USER_ID
from sandbox.aimms.schedule import iso

SCOPES = frozenset({"Authentication", "PublishAIMMS", "PublishApp", "Tasks", "API Key"})
YEAR_S = 365 * 86_400.0
TASK_FIELDS = [
    "id", "appName", "appVersion", "serviceName", "state", "createdAt", "queueTime",
    "runTime", "returnCode", "errorMessage", "scheduleFor", "scheduleInterval", "groupIndex",
]  # fmt: skip
DEFAULT_SETTINGS: dict[str, Any] = {
    "task_parallelism": 2,
    "task_phases_s": {"assigned": 1.0, "running": 2.0, "solving": 2.0},
    "allow_interrupt_execution": False,
    "response_unfinished_status": 409,
    "delete_refused_status": 405,
    "invalid_key_message": "invalid or expired api key",
    "error_body_key": "message",
    "task_fields": TASK_FIELDS,
    "listing_paths": {
        "environments": "/pro-api/v1/authentication/environments",
        "groups": "/pro-api/v1/authentication/groups",
        "users": "/pro-api/v1/authentication/users",
        "apikeys": "/pro-api/v1/apikeys",
    },
    "api_keys": [
        {"key": "demo-apikey-all-scopes", "name": "demo (all scopes)", "scopes": sorted(SCOPES),
         "expires_in_s": YEAR_S, "user": DEMO_USER_ID},
        {"key": "demo-apikey-tasks-only", "name": "demo (tasks only)", "scopes": ["Tasks"],
         "expires_in_s": YEAR_S, "user": DEMO_USER_ID},
        {"key": "demo-apikey-expired", "name": "demo (expired)", "scopes": sorted(SCOPES),
         "expires_in_s": -86_400.0, "user": DEMO_USER_ID},
    ],
    "max_request_bytes": 128 * 1024 * 1024,
    "hook_timeout_s": 5.0,
    "tick_interval_s": 0.5,
    "max_runs_per_group": 1000,
}  # fmt: skip
PHASE_NAMES = ("assigned", "running", "solving")


class ApiError(Exception):
    """An answer in the vendor's error shape; raised anywhere below a route handler."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ApiKey:
    secret: str
    id: str
    name: str
    scopes: frozenset[str]
    created_at: float
    expires_at: float
    user: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "createdAt": iso(self.created_at),
            "expiresAt": iso(self.expires_at),
            "user": self.user,
        }


def resolve_settings(given: dict[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ValueError(f"unknown aimms setting(s): {sorted(unknown)}")
    settings = {**DEFAULT_SETTINGS, **given}
    phases = {**DEFAULT_SETTINGS["task_phases_s"], **given.get("task_phases_s", {})}
    if set(phases) != set(PHASE_NAMES) or any(float(v) < 0 for v in phases.values()):
        raise ValueError(f"task_phases_s takes non-negative seconds for {PHASE_NAMES}")
    settings["task_phases_s"] = phases
    paths = {**DEFAULT_SETTINGS["listing_paths"], **given.get("listing_paths", {})}
    settings["listing_paths"] = paths
    return settings


def build_keys(specs: list[dict[str, Any]], start: float) -> dict[str, ApiKey]:
    keys: dict[str, ApiKey] = {}
    for spec in specs:
        scopes = frozenset(spec["scopes"])
        if not scopes <= SCOPES:
            raise ValueError(f"unknown scope(s) {sorted(scopes - SCOPES)}")
        expires_in_s = float(spec["expires_in_s"])
        if expires_in_s > YEAR_S:
            raise ValueError("an API key expires within 1 year at most")
        key_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"aimms-apikey:{spec['name']}"))
        keys[spec["key"]] = ApiKey(
            spec["key"], key_id, spec["name"], scopes, start, start + expires_in_s, spec["user"]
        )
    return keys
