"""The peer: dlt's ``rest_api`` source, configured as a competent dlt user would, no
vendorsync code. Logins a rest_api config cannot express (Amilia's Basic → JWT, iMIS's
password grant) are done once with ``requests`` and passed as a bearer token, as its docs
suggest for custom logins; both tokens outlive a run.

Choices a careful user makes, all in dlt's favour: ``merge`` on the vendor's key,
``max_table_nesting=0`` (nested data kept as JSON, as our staging keeps the payload, and
no child tables to normalize), parallelized child resources, and where the vendor has a
rate cap the natural add-on, ``requests-ratelimiter``'s ``LimiterSession``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

AMILIA_ORG = "api/v3/en/org/8008/"
PER_PAGE = 200  # Amilia's default page
IMIS_PAGE = 100  # iMIS's default page


def quiet_dlt(workdir: Path) -> None:
    """No telemetry (all traffic stays on 127.0.0.1), no files outside ``workdir``."""
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    os.environ["RUNTIME__LOG_LEVEL"] = "WARNING"
    os.environ["DLT_DATA_DIR"] = str(workdir / "dlt-data")
    os.environ["DLT_PROJECT_DIR"] = str(workdir)
    warnings.filterwarnings("ignore", module=r"dlt\..*")
    warnings.filterwarnings("ignore", module=r"sqlalchemy\..*")


@dataclass
class Target:
    """Where dlt writes: a SQLite file or a fresh PostgreSQL schema (dlt's dataset)."""

    workdir: Path
    pg_dsn: str | None = None

    def destination(self, name: str) -> Any:
        import dlt

        if self.pg_dsn is not None:
            return dlt.destinations.postgres(credentials=self.pg_dsn)
        return dlt.destinations.sqlalchemy(f"sqlite:///{self.workdir}/dlt_{name}.db")


def amilia_token(url: str) -> str:
    import requests

    resp = requests.get(
        f"{url}/amilia/api/v3/authenticate", auth=("demo@amilia.test", "demo-secret"), timeout=10
    )
    resp.raise_for_status()
    return str(resp.json()["Token"])


def imis_token(url: str) -> str:
    import requests

    creds = {"grant_type": "password", "username": "demo", "password": "demo-secret"}
    resp = requests.post(f"{url}/imis/token", data=creds, timeout=10)
    resp.raise_for_status()
    return str(resp.json()["access_token"])


def config(stream: str, url: str, token: str | None, rate_per_s: float | None) -> dict[str, Any]:
    """The ``rest_api`` config of one stream."""
    defaults = {"write_disposition": "merge", "max_table_nesting": 0}
    if stream == "aimsio_user":
        client: dict[str, Any] = {
            "base_url": f"{url}/aimsio/rest/api/standard/v1/",
            "auth": {"type": "http_basic", "username": "demo", "password": "demo-secret"},
        }
        if rate_per_s is not None:
            from requests_ratelimiter import LimiterSession

            client["session"] = LimiterSession(per_second=rate_per_s)
        resources: list[dict[str, Any]] = [
            {
                # The list has no filter: dlt's incremental drops unchanged stubs itself.
                "name": "user_stubs",
                "selected": False,
                "primary_key": "guid",
                "endpoint": {
                    "path": "User",
                    "data_selector": "$",
                    "paginator": "single_page",
                    "incremental": {"cursor_path": "updatedAt", "initial_value": 0},
                },
            },
            {
                "name": "users",
                "primary_key": "userGuid",
                "parallelized": True,
                "endpoint": {
                    "path": "User/{resources.user_stubs.guid}",
                    "paginator": "single_page",
                },
            },
        ]
    elif stream == "amilia_accounts":
        client = {
            "base_url": f"{url}/amilia/{AMILIA_ORG}",
            "auth": {"type": "bearer", "token": token},
        }
        resources = [
            {
                # No modified-since filter exists: every run walks the list.
                "name": "accounts",
                "primary_key": "Id",
                "parallelized": True,
                "endpoint": {
                    "path": "accounts",
                    "params": {"showArchived": "true", "perPage": PER_PAGE},
                    "data_selector": "Items",
                    "paginator": {"type": "json_link", "next_url_path": "Paging.Next"},
                },
            }
        ]
    elif stream == "imis_party":
        client = {"base_url": f"{url}/imis/", "auth": {"type": "bearer", "token": token}}
        resources = [
            {
                "name": "party",
                "primary_key": "PartyId",
                "parallelized": True,
                "endpoint": {
                    "path": "api/Party",
                    "params": {"updatedOn": "gt:{incremental.start_value}"},
                    "incremental": {
                        "cursor_path": "UpdateInformation.UpdatedOn",
                        "initial_value": "1900-01-01T00:00:00",
                    },
                    "data_selector": 'Items."$values"',
                    "paginator": {
                        "type": "offset",
                        "limit": IMIS_PAGE,
                        "offset_param": "offset",
                        "limit_param": "limit",
                        "total_path": "TotalCount",
                    },
                },
            }
        ]
    else:
        raise ValueError(stream)
    return {"client": client, "resource_defaults": defaults, "resources": resources}


# Per stream: the table dlt writes, its key column and the column that tells a version.
TABLES = {
    "aimsio_user": ("users", "user_guid", "updated_at"),
    "amilia_accounts": ("accounts", "id", "account_memberships"),
    "imis_party": ("party", "party_id", "update_information"),
}


class Peer:
    """One dlt pipeline (its state carries the incremental cursor between runs)."""

    def __init__(self, target: Target, stream: str, name: str, dataset: str) -> None:
        import dlt

        self.stream = stream
        self.pipeline = dlt.pipeline(
            pipeline_name=name,
            destination=target.destination(name),
            dataset_name=dataset,
            pipelines_dir=str(target.workdir / "pipelines"),
        )

    def run(self, url: str, token: str | None, rate_per_s: float | None) -> dict[str, Any]:
        """One ``pipeline.run`` (extract, normalize, load): rows loaded and wall seconds."""
        from dlt.sources.rest_api import rest_api_source

        source = rest_api_source(config(self.stream, url, token, rate_per_s))  # type: ignore[arg-type]
        started = time.monotonic()
        self.pipeline.run(source)
        wall_s = time.monotonic() - started
        trace = self.pipeline.last_trace
        info = trace.last_normalize_info if trace is not None else None
        counts = info.row_counts if info is not None else {}
        table = TABLES[self.stream][0]
        return {"records": int(counts.get(table, 0)), "wall_s": wall_s}

    def staged(self) -> dict[str, Any]:
        """Key → version of every row dlt holds (it never deletes one)."""
        table, key, version = TABLES[self.stream]
        with self.pipeline.sql_client() as client:
            name = client.make_qualified_table_name(table)
            rows = client.execute_sql(f"SELECT {key}, {version} FROM {name}")
        return {str(k): normalize(self.stream, v) for k, v in rows or []}


def normalize(stream: str, value: Any) -> Any:
    """A JSON column comes back as text (SQLite) or parsed (PostgreSQL): compare as JSON."""
    if isinstance(value, str) and value[:1] in "[{":
        value = json.loads(value)
    if stream == "imis_party" and isinstance(value, dict):
        value = value.get("UpdatedOn")
    return json.dumps(value, sort_keys=True) if isinstance(value, list | dict) else str(value)
