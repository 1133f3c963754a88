"""Aimsio simulator: Basic auth, list-stubs-then-fetch reads, IntegrationImportResult writes.

Mounted at ``/aimsio``; every API path sits under ``/rest/api/standard/v1/``.

- ``GET /{Entity}`` → bare JSON array ``[{"dtype", "guid"|"id", "updatedAt"}]`` (epoch ms),
  every live row, ascending ids, no paging. ``GET /{Entity}/{guid|id}`` → the full object
  (``dtype``, the documented fields, ``updatedAt``) or 404.
- ``POST /{Entity}`` with ``{"<x>List": [...]}`` upserts row by row: match on the guid field,
  else on the natural key; rows failing validation are counted and described in ``notices``.
- ``POST /InitiatePasswordReset`` ``{"userName"}`` → IntegrationImportResult.

| entity | listed by | POST body key | natural key | POST |
|---|---|---|---|---|
| User | guid | userList | userName | upsert |
| Employee | guid | employeeList | employeeCode | upsert |
| Equipment | guid | equipmentList | equipmentCode | upsert |
| JobOrder | guid | jobList | jobNumber | upsert |
| Customer (alias Company) | guid | customerList or companyList | customerCode | upsert |
| PriceBook | guid | priceBookList | priceBookName | upsert |
| NRB | guid | nrbList | nrbNumber | upsert |
| NonRecurringBillableItem | guid | - | nrbItemCode | read-only (405) |
| PayrollPeriod | id | - | payrollPeriodName | read-only (405) |
| Invoice | id | invoiceList | invoiceNumber | invoiceStatus of existing rows only |
| Timecard | id | timecardList | timecardNumber | timecardStatus of existing rows only |

A JobOrder read embeds ``jobNrbList`` (its NRBs), ``jobCrewList`` and ``jobEquipmentList``, and
fills client, price book and assignee names from the current referenced rows. Field names of
Equipment, Customer, PriceBook, NRB, items, periods, invoices and timecards are not in the
vendor's pages; they follow its ``<entity><Field>`` convention.

Settings (``SandboxOptions.vendors["aimsio"]`` keys; each [ASSUMPTION] is one value):
- ``users``: ``{name: {"password", "api"}}``; ``api: false`` → 403. Default: ``demo`` /
  ``demo-secret`` (API permission) and ``noapi`` / ``noapi-secret`` (none).
- ``realm`` = "aimsio": [ASSUMPTION] 401 carries ``WWW-Authenticate: Basic realm="aimsio"``.
- ``case_insensitive_paths`` = True: [ASSUMPTION] path prefix and entity names match in any case.
- ``id_entities`` = PayrollPeriod, Invoice, Timecard: [ASSUMPTION] which entities list ``id``
  (int) rather than ``guid``, and are read by that id.
- ``not_found_status`` = 404, ``malformed_json_status`` = 400: [ASSUMPTION] error statuses.
- ``notice_key_field`` = "entityKey": [ASSUMPTION] notices are
  ``{"entityKey": <natural key>, "message": ..., "severity": "ERROR"|"WARNING"}``.
- ``job_create_status`` = "Unassigned": "jobStatus may only be changed on jobs that already
  exist": a new job gets this status (WARNING notice if the row said otherwise); None keeps it.
- ``timecards_module`` = False: True makes the Employee payroll fields required.
- limits (``limits`` key / ``POST /_sandbox/faults {"limits": ...}``): queue mode, 10 in
  flight, 10/s, ``queue_timeout_s`` 5; ``timeout_status`` = 504 [ASSUMPTION], empty body.

Other [ASSUMPTION]s, fixed: error bodies are ``{"status", "error", "message"}``; a body that is
not an object or lacks the list key → 400; Invoice/Timecard rows that would create are not
imported; their non-status fields are ignored (WARNING, counted as edited with errors).

Fault switches (``extra_faults``): ``reject_keys`` (natural keys or guids whose rows the server
rejects with an ERROR notice) and ``reject_rate`` (fraction of valid rows rejected).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from http import HTTPStatus
from typing import Any, ClassVar

from aiohttp import hdrs, web

from sandbox.aimsio.generator import Generator
from sandbox.aimsio.rows import ImportTally, is_blank
from sandbox.aimsio.schema import (
    SPECS,
    EntitySpec,
    generated_updated_ms,
    index_from_guid,
    parse_path,
    resolve_entity,
)
from sandbox.aimsio.store import AimsioStore
from sandbox.app import SandboxOptions, VendorSim
from sandbox.data import Record, guid_for
from sandbox.limits import LimitConfig

DEMO_CREDENTIALS: dict[str, str] = {"user": "demo", "password": "demo-secret"}
EXAMPLE_PATH = "/rest/api/standard/v1/User"
PASSWORD_RESET = "InitiatePasswordReset"

DEFAULT_SETTINGS: dict[str, Any] = {
    "users": {
        "demo": {"password": "demo-secret", "api": True},
        "noapi": {"password": "noapi-secret", "api": False},
    },
    "realm": "aimsio",
    "case_insensitive_paths": True,
    "id_entities": ["PayrollPeriod", "Invoice", "Timecard"],
    "not_found_status": 404,
    "malformed_json_status": 400,
    "notice_key_field": "entityKey",
    "job_create_status": "Unassigned",
    "timecards_module": False,
}


class _Rejected(Exception):
    """A request-level error: answered with the vendor's error body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Basic base64(user:pass)`` → ``(user, pass)``; anything else → None."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class AimsioSim(VendorSim):
    name = "aimsio"
    default_limits = LimitConfig(
        enabled=True, mode="queue", max_parallel=10, rate_per_s=10, queue_timeout_s=5.0
    )
    contract_max_parallel = 10
    contract_rate_per_s = 10
    extra_faults: ClassVar[frozenset[str]] = frozenset({"reject_keys", "reject_rate"})

    def __init__(self, options: SandboxOptions) -> None:
        super().__init__(options)
        unknown = set(self.settings) - set(DEFAULT_SETTINGS)
        if unknown:
            raise ValueError(f"unknown aimsio setting(s): {sorted(unknown)}")
        self.cfg: dict[str, Any] = {**DEFAULT_SETTINGS, **self.settings}
        self.gen = Generator(options.seed, options.records)
        # Highest limiter running count seen inside a handler: the server-side concurrency.
        self.peak_running = 0
        self.reset_data()

    def reset_data(self) -> None:
        self.store = AimsioStore(
            self.gen,
            self.options.records,
            job_create_status=self.cfg["job_create_status"],
            payroll_required=bool(self.cfg["timecards_module"]),
        )
        self._results = 0  # IntegrationImportResults handed out (their guids count up)
        self.password_resets: list[str] = []

    # --- HTTP ----------------------------------------------------------------------------
    def setup_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self._handle)

    def error_response(self, status: int, message: str) -> web.Response:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        body = {"status": status, "error": phrase, "message": message}
        return web.json_response(body, status=status)

    async def tenant_of(self, request: web.Request) -> str | None:
        # ``demo-7`` (a configured user plus a suffix) is an account of its own.
        creds = parse_basic(request.headers.get(hdrs.AUTHORIZATION))
        if creds is None or creds[0] in self.cfg["users"]:
            return None
        base, sep, suffix = creds[0].rpartition("-")
        return creds[0] if sep and suffix and base in self.cfg["users"] else None

    def tenant_settings(self, tenant: str) -> dict[str, Any]:
        base = tenant.rpartition("-")[0]
        return {"users": {tenant: dict(self.cfg["users"][base])}}

    async def _handle(self, request: web.Request) -> web.Response:
        self.peak_running = max(self.peak_running, self.limiter.running)
        denied = self._check_auth(request.headers.get(hdrs.AUTHORIZATION))
        if denied is not None:
            return denied
        try:
            return await self._route(request)
        except _Rejected as exc:
            return self.error_response(exc.status, exc.message)

    async def _route(self, request: web.Request) -> web.Response:
        ci = bool(self.cfg["case_insensitive_paths"])
        route = parse_path(request.match_info["tail"], ci)
        if route is None:
            raise _Rejected(404, f"No endpoint {request.path}")
        segment, key = route
        method = request.method
        if key is None and (
            segment.lower() == PASSWORD_RESET.lower() if ci else segment == PASSWORD_RESET
        ):
            if method != "POST":
                raise _Rejected(405, f"{method} not supported on {PASSWORD_RESET}")
            return await self._password_reset(request)
        entity = resolve_entity(segment, ci)
        if entity is None:
            raise _Rejected(404, f"No endpoint {request.path}")
        spec = SPECS[entity]
        if method == "GET":
            return self._list(spec) if key is None else self._get_one(spec, key)
        if method == "POST" and key is None and spec.list_keys:
            return await self._import(request, spec)
        raise _Rejected(405, f"{method} not supported on {request.path}")

    def _check_auth(self, header: str | None) -> web.Response | None:
        creds = parse_basic(header)
        user = self.cfg["users"].get(creds[0]) if creds else None
        password = str(user.get("password", "")) if user else ""
        if (
            creds is None
            or user is None
            or not hmac.compare_digest(password.encode(), creds[1].encode())
        ):
            resp = self.error_response(401, "Full authentication is required")
            resp.headers[hdrs.WWW_AUTHENTICATE] = f'Basic realm="{self.cfg["realm"]}"'
            return resp
        if not user.get("api", False):
            return self.error_response(403, "This user does not have the API permission")
        return None

    async def _read_json(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Rejected(self.cfg["malformed_json_status"], f"Malformed JSON: {exc}") from exc

    # --- reads ----------------------------------------------------------------------------
    def _uses_id(self, spec: EntitySpec) -> bool:
        return spec.name in self.cfg["id_entities"]

    def _list(self, spec: EntitySpec) -> web.Response:
        dtype, stamps = spec.name, self.store.stamps[spec.name]
        salt, indices = self.gen.salt[dtype], self.store.data[dtype].indices()
        # Stubs come from index arithmetic; only written rows have a stored updatedAt.
        if self._uses_id(spec):
            body = [
                {
                    "dtype": dtype,
                    "id": i + 1,
                    "updatedAt": stamps[i] if i in stamps else generated_updated_ms(salt, i),
                }
                for i in indices
            ]
        else:
            prefix = self.gen.prefix[dtype]
            body = [
                {
                    "dtype": dtype,
                    "guid": f"{prefix}{i:012x}",
                    "updatedAt": stamps[i] if i in stamps else generated_updated_ms(salt, i),
                }
                for i in indices
            ]
        return web.json_response(body)

    def _get_one(self, spec: EntitySpec, key: str) -> web.Response:
        if self._uses_id(spec):
            index = int(key) - 1 if key.isascii() and key.isdigit() else None
        else:
            index = index_from_guid(self.gen.prefix[spec.name], key)
        record = self.store.data[spec.name].get(index) if index is not None else None
        if record is None:
            raise _Rejected(self.cfg["not_found_status"], f"{spec.name} {key} not found")
        out = {"dtype": spec.name, **record}
        if spec.name == "JobOrder":
            self.store.render_job(out)
        return web.json_response(out)

    # --- writes ---------------------------------------------------------------------------
    def _now_ms(self) -> int:
        return int(self.clock.now() * 1000)

    def _result(self, tally: ImportTally) -> web.Response:
        guid = guid_for(self.options.seed, "IntegrationImportResult", self._results)
        self._results += 1
        return web.json_response(tally.result(guid, self._now_ms()))

    async def _import(self, request: web.Request, spec: EntitySpec) -> web.Response:
        body = await self._read_json(request)
        if not isinstance(body, dict):
            raise _Rejected(400, "The request body must be a JSON object")
        list_key = next((k for k in spec.list_keys if k in body), None)
        if list_key is None:
            raise _Rejected(400, f"The request body must contain {spec.list_keys[0]!r}")
        rows = body[list_key]
        if not isinstance(rows, list):
            raise _Rejected(400, f"{list_key} must be an array")
        tally = ImportTally(key_field=self.cfg["notice_key_field"])
        now = self._now_ms()
        # Rows are processed one by one, so a batch can partly succeed.
        for row in rows:
            if not isinstance(row, dict):
                tally.reject(None, ["Each row must be a JSON object"])
            elif spec.status_field:
                self.store.set_status(spec, row, tally, now, self._injected_reject)
            else:
                self.store.upsert(spec, row, tally, now, self._injected_reject)
        return self._result(tally)

    async def _password_reset(self, request: web.Request) -> web.Response:
        body = await self._read_json(request)
        if not isinstance(body, dict):
            raise _Rejected(400, "The request body must be a JSON object")
        tally = ImportTally(key_field=self.cfg["notice_key_field"])
        user_name = body.get("userName")
        if is_blank(user_name):
            tally.reject(None, ["userName is required"])
        elif self.store.find("User", user_name) is None:
            tally.reject(user_name, [f"No user with userName {user_name!r}"])
        else:
            tally.edited += 1
            self.password_resets.append(str(user_name))
        return self._result(tally)

    def _injected_reject(self, spec: EntitySpec, row: Record) -> bool:
        extra = self.faults.extra
        keys = extra.get("reject_keys") or []
        keys = keys if isinstance(keys, list) else [keys]
        fields = (spec.key_field, spec.guid_field, spec.int_field)
        named = any(row.get(f) in keys for f in fields if f)
        hit = named or self.faults.roll(float(extra.get("reject_rate") or 0.0))
        if hit:
            self.stats.errors_injected += 1
        return hit

    # --- mutation API (POST /_sandbox/mutate) -----------------------------------------------
    async def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        """Change rows between syncs; returns the touched ids in the form the list shows.

        ``{"entity", "change": fraction, "delete": fraction, "add": n, "seed"}`` and/or
        ``{"entity", "update": [{"id": guid|id|natural key, field: value...}], "delete_ids"}``.
        Touched rows get ``updatedAt`` = the clock now (an explicit ``updatedAt`` wins).
        """
        entity = resolve_entity(str(body.get("entity", "")), True)
        if entity is None:
            raise ValueError(f"unknown entity {body.get('entity')!r}; known: {', '.join(SPECS)}")
        spec, now = SPECS[entity], self._now_ms()
        touched = self.store.mutate(spec, body, now)
        return {"entity": entity, "now_ms": now} | {
            what: [self._public_id(spec, i) for i in indices] for what, indices in touched.items()
        }

    def _public_id(self, spec: EntitySpec, index: int) -> int | str:
        return index + 1 if self._uses_id(spec) else self.gen.guid(spec.name, index)


SIM = AimsioSim
