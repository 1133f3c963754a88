"""Amilia simulator: the v3 organisation API, the deprecated v2 lists, JWT auth, 429 limits.

Routes under the ``/amilia`` mount (literal segments are case-insensitive, ``api/V3`` works):

- ``GET|POST /api/v3/authenticate``: Basic ``email:password`` → ``{"Token": "<HS256 JWT>"}``,
  valid one year by the simulator clock. Every other route needs ``Authorization: Bearer``.
- ``/api/v3/{language}/org/{org}/…`` (language ``en|fr``; org ``8008`` or ``forest-explorers``):
  ``accounts`` (GET; POST creates), ``accounts/{id}/contacts``, ``persons/{id}`` (PUT),
  ``persons/{id}/registrations``, ``persons/{id}/skills`` (POST), ``registrations``,
  ``accessscans``, ``programs``, ``programs/{id}``, ``programs/{id}/activities``,
  ``activities/{id}``. Lists answer ``{"Items", "Paging": {"TotalCount", "Next"}}``.
- ``GET /api/v2/{language}/org/{org}/accounts|persons``: ``limit`` 5–100, ``idStart``,
  ``{"Items", "Page": {"NextId", "Next"}}``.

Errors are ``{"Message", "TransactionId"}`` with 400/401/403/404/405/422/429/500.

Settings (``SandboxOptions.vendors["amilia"]``), one per [ASSUMPTION] of vendor-apis.md §4:

- ``per_page_max`` (200): the undocumented ``perPage`` cap; larger values are clamped.
- ``retry_after_s`` (None): a 429 carries no ``Retry-After``; a number adds that header.
- ``error_message_key`` ("Message"): the key of the error text next to ``TransactionId``.
- ``write_endpoints`` (True): serve the assumed write endpoints of §4.4.
- ``created_status`` (201): the status of the POST writes (the PUT answers 200).
- ``anchor_date`` (None): the ``YYYY-MM-DD`` day the generated data describes; by default
  the clock's (UTC) day when the simulator starts. Not an assumption, a knob for demos.
- ``page_cache_mb`` (256): serialised v3 pages kept per URL while no table changes, so the
  simulator is not the bottleneck of a client walking at 100 pages/s (0 disables).

- ``org_id`` (8008), ``org_slug`` ("forest-explorers"): the organisation served;
  ``users`` (None: ``USERS``): ``{email: {"password", "orgs": [id, …]}}``. Tenants set these.

Tenants (organisations): a user's local part plus a suffix (``demo-7@amilia.test`` with
``demo-secret``) is the API user of organisation tenant ``demo-7`` (id 8008007, slug
``forest-explorers-7``): its own data, JWT secret, origins and counters. The JWT's ``sub``
names the tenant on later calls; another tenant's organisation answers 403 (it exists, the
user has no rights on it). The 100 calls/s limit stays per client IP across every tenant
(``tenants_share_limits``): ``/_sandbox/stats`` adds ``by_client``, the counters (and
violations) of all organisations read from one address together.

v3 lists take ``limit`` as well as ``perPage`` (the seed: "You can always use a limit query
string parameter to control the page size"). ``GET /amilia/_sandbox/origins`` counts calls
by their ``X-Amilia-Origin`` header ("" when absent).

Only the JWT flow exists: how the API key/secret pair travels is undocumented [ASSUMPTION].
Limits (on by default): reject mode, per client address, 100 requests per sliding second →
429. Faults: the shared ones (``error_rate`` answers 500 with a ``TransactionId``) plus
``reject_writes`` (true or a fraction): writes answer 422, and ``token_expire_now`` (one-shot):
every token issued so far answers 401 "Token is invalid" (the seed's only 401) from the next
call on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import uuid
import zlib
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from aiohttp import web

from sandbox.amilia.data import PERSON_BASE, Layout, Table, iso_day, today_ordinal
from sandbox.amilia.mutate import apply_mutation
from sandbox.amilia.pages import PageCache
from sandbox.amilia.store import Store
from sandbox.amilia.wire import (
    ApiError,
    Route,
    account_errors,
    decode_jwt,
    encode_jwt,
    jwt_subject,
    match_path,
    page_bounds,
    parse_basic,
    parse_bearer,
    parse_bool,
    parse_day,
    parse_int,
    parse_v3_paging,
    person_errors,
    person_fields,
    route,
    skill_errors,
    with_params,
)
from sandbox.app import SandboxOptions, VendorSim, suffixed_email
from sandbox.limits import LimitConfig

ORG_ID = 8008
ORG_SLUG = "forest-explorers"
TOKEN_TTL_S = 365 * 86400  # "the JWT token expires after 1 year"
V3_PER_PAGE = 200
V2_LIMIT, V2_LIMIT_MIN, V2_LIMIT_MAX = 100, 5, 100
SETTINGS: dict[str, Any] = {
    "per_page_max": 200,
    "retry_after_s": None,
    "error_message_key": "Message",
    "write_endpoints": True,
    "created_status": 201,
    "anchor_date": None,
    "page_cache_mb": 256,  # serialised v3 pages of unchanged data kept (0: none)
    "org_id": ORG_ID,
    "org_slug": ORG_SLUG,
    "users": None,  # {email: {"password", "orgs": [id, …]}}; None: USERS
}
DENIED = "Authorization has been denied for this request."

DEMO_CREDENTIALS: dict[str, str] = {
    "user": "demo@amilia.test",
    "password": "demo-secret",
    # The id, as config/vendorsync.toml and the README use it; the slug reaches it too.
    "org": f"{ORG_ID} (or {ORG_SLUG})",
}
EXAMPLE_PATH = f"/api/v3/en/org/{ORG_ID}/accounts"


@dataclass(frozen=True)
class User:
    password: str
    orgs: frozenset[int]


USERS = {
    "demo@amilia.test": User("demo-secret", frozenset({ORG_ID})),
    "other@amilia.test": User("other-secret", frozenset()),  # valid login, no org: 403
}

Params = dict[str, str]
Handler = Callable[[web.Request, Params], Awaitable[web.Response]]
Render = Callable[[int], dict[str, Any] | None]


def tenant_org(tenant: str) -> tuple[int, str]:
    """The organisation of tenant ``demo-7``: id 8008007, slug ``forest-explorers-7``."""
    suffix = tenant.rpartition("-")[2]
    number = int(suffix) if suffix.isdigit() and int(suffix) < 1000 else None
    if number is None:
        number = zlib.crc32(tenant.encode()) % 1000
    return ORG_ID * 1000 + number, f"{ORG_SLUG}-{suffix}"


class AmiliaSim(VendorSim):
    name = "amilia"
    default_limits = LimitConfig(enabled=True, mode="reject", rate_per_s=100, per_client=True)
    contract_rate_per_s = 100.0
    # 100 calls/s per client IP, whichever organisation they read.
    tenants_share_limits = True
    extra_faults = frozenset({"reject_writes", "token_expire_now"})

    def __init__(self, options: SandboxOptions) -> None:
        super().__init__(options)
        unknown = set(self.settings) - set(SETTINGS)
        if unknown:
            raise ValueError(f"unknown amilia setting(s): {sorted(unknown)}")
        self.settings = {**SETTINGS, **self.settings}
        users = self.settings["users"]
        self.users: dict[str, User] = (
            dict(USERS)
            if users is None
            else {
                e.lower(): User(str(u["password"]), frozenset(int(o) for o in u["orgs"]))
                for e, u in users.items()
            }
        )
        self.org_id, self.org_slug = int(self.settings["org_id"]), str(self.settings["org_slug"])
        anchor = self.settings["anchor_date"]
        self._anchor = (
            date.fromisoformat(anchor).toordinal() if anchor else today_ordinal(self.clock.now())
        )
        self._secret = hashlib.sha256(f"amilia-sandbox:{options.seed}".encode()).digest()
        self._routes: list[Route] = []
        self.store = self._new_store()
        self.origins: dict[str, int] = {}  # X-Amilia-Origin value ("" when absent) → calls
        self._pages = PageCache(int(self.settings["page_cache_mb"]) * 1_000_000)
        self._issued: set[str] = set()  # jti of tokens issued since the last forced expiry
        self._revoked: set[str] = set()

    def _new_store(self) -> Store:
        return Store(Layout(self.options.seed, max(1, self.options.records), self._anchor))

    def reset_data(self) -> None:
        self.store = self._new_store()
        self._pages.clear()  # a new store starts its stamps afresh

    def today(self) -> int:
        return today_ordinal(self.clock.now())

    # --- vendor hooks ------------------------------------------------------------------------
    def error_response(self, status: int, message: str) -> web.Response:
        body = {self.settings["error_message_key"]: message, "TransactionId": str(uuid.uuid4())}
        resp = web.json_response(body, status=status)
        retry_after_s = self.settings["retry_after_s"]
        if status == 429 and retry_after_s is not None:
            resp.headers["Retry-After"] = str(max(0, math.ceil(retry_after_s)))
        return resp

    async def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        return apply_mutation(self.store, body, self.clock.now(), self.today())

    def setup_routes(self, app: web.Application) -> None:
        v3, v2 = "/api/v3/{language}/org/{org}", "/api/v2/{language}/org/{org}"
        writes = bool(self.settings["write_endpoints"])

        def w(method: str, handler: Handler) -> dict[str, Handler]:
            return {method: handler} if writes else {}

        table = [
            route("/api/v3/authenticate", {"GET": self._authenticate, "POST": self._authenticate}),
            route(v3 + "/accounts", {"GET": self._accounts, **w("POST", self._create_account)}),
            route(v3 + "/accounts/{id}/contacts", {"GET": self._contacts}),
            route(v3 + "/persons/{id}", w("PUT", self._update_person)),
            route(v3 + "/persons/{id}/registrations", {"GET": self._person_registrations}),
            route(v3 + "/persons/{id}/skills", w("POST", self._add_skill)),
            route(v3 + "/registrations", {"GET": self._registrations}),
            route(v3 + "/accessscans", {"GET": self._accessscans}),
            route(v3 + "/programs", {"GET": self._programs}),
            route(v3 + "/programs/{id}", {"GET": self._program}),
            route(v3 + "/programs/{id}/activities", {"GET": self._activities}),
            route(v3 + "/activities/{id}", {"GET": self._activity}),
            route(v2 + "/accounts", {"GET": self._v2_accounts}),
            route(v2 + "/persons", {"GET": self._v2_persons}),
        ]
        self._routes = [r for r in table if r.methods]
        # Who called, by X-Amilia-Origin (the seed asks every client to send it).
        app.router.add_get("/_sandbox/origins", self._get_origins)
        # One catch-all route: our own matcher gives case-insensitive paths and vendor-shaped
        # 404/405 bodies (aiohttp's router would answer those in plain text).
        app.router.add_route("*", "/{tail:.*}", self._dispatch)

    # --- dispatch, auth, org -------------------------------------------------------------------
    async def _dispatch(self, request: web.Request) -> web.Response:
        try:
            return await self._serve(request)
        except ApiError as exc:
            resp = self.error_response(exc.status, exc.message)
            resp.headers.update(exc.headers)
            return resp

    async def _get_origins(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.origins))

    # --- tenants: one organisation each ------------------------------------------------------
    async def tenant_of(self, request: web.Request) -> str | None:
        """The suffixed user of Basic auth, else the ``sub`` of the bearer JWT."""
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is not None:
            named = suffixed_email(creds[0], self.users)
        else:
            token = parse_bearer(request.headers.get("Authorization"))
            sub = None if token is None else jwt_subject(token)
            named = None if sub is None else suffixed_email(sub, self.users)
        return None if named is None else named[1]

    def tenant_settings(self, tenant: str) -> dict[str, Any]:
        org_id, slug = tenant_org(tenant)
        base = tenant.rpartition("-")[0]
        users: dict[str, Any] = {}
        for email, user in self.users.items():
            local, _, domain = email.rpartition("@")
            if local == base:
                own = {"password": user.password, "orgs": [org_id] if user.orgs else []}
                users[f"{tenant}@{domain}"] = own
        return {"org_id": org_id, "org_slug": slug, "users": users}

    def _org_exists(self, org: str) -> bool:
        sims = [self.root, *self.root.tenants().values()]
        return any(isinstance(s, AmiliaSim) and s._is_org(org) for s in sims)

    def _is_org(self, org: str) -> bool:
        return org.lower() == self.org_slug or (org.isdigit() and int(org) == self.org_id)

    async def _serve(self, request: web.Request) -> web.Response:
        origin = request.headers.get("X-Amilia-Origin", "")
        self.origins[origin] = self.origins.get(origin, 0) + 1
        segments = [s for s in request.match_info["tail"].split("/") if s]
        for candidate in self._routes:
            params = match_path(candidate.pattern, segments)
            if params is not None:
                break
        else:
            raise ApiError(404, f"No HTTP resource was found that matches the URI '{request.url}'.")
        handler: Handler | None = candidate.methods.get(request.method)
        if handler is None:
            allow = ", ".join(sorted(candidate.methods))
            raise ApiError(
                405,
                f"The requested resource does not support http method '{request.method}'.",
                {"Allow": allow},
            )
        if candidate.pattern[-1] != "authenticate":
            email = self._bearer_user(request)
            if "language" in params:
                self._check_org(params, email)
        return await handler(request, params)

    def _bearer_user(self, request: web.Request) -> str:
        if self.faults.extra.pop("token_expire_now", False):
            self._revoked |= self._issued
            self._issued.clear()
        token = parse_bearer(request.headers.get("Authorization"))
        claims = None if token is None else decode_jwt(token, self._secret)
        if claims is None or claims.get("jti") in self._revoked:
            raise ApiError(401, DENIED)
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp <= self.clock.now():
            raise ApiError(401, "The token has expired.")
        email = str(claims.get("sub", "")).lower()
        if email not in self.users:
            raise ApiError(401, DENIED)
        return email

    def _check_org(self, params: Params, email: str) -> None:
        language, org = params["language"], params["org"]
        if language not in ("en", "fr"):
            raise ApiError(400, f"The language '{language}' is not supported; use en or fr.")
        # Another tenant's organisation exists, but not for this user: 403, as for any
        # organisation the user has no rights on.
        mine = self._is_org(org)
        if not mine and not self._org_exists(org):
            raise ApiError(404, f"The organization '{org}' was not found.")
        if not mine or self.org_id not in self.users[email].orgs:
            raise ApiError(403, "The user is not authorized for this organization.")

    async def _authenticate(self, request: web.Request, params: Params) -> web.Response:
        creds = parse_basic(request.headers.get("Authorization"))
        if creds is None:
            raise ApiError(401, "Basic authentication (email:password) is required.")
        email, password = creds[0].lower(), creds[1]
        user = self.users.get(email)
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            raise ApiError(401, "The email or password is incorrect.")
        now_s, jti = int(self.clock.now()), uuid.uuid4().hex
        claims = {
            "sub": email,
            "iss": "https://app.amilia.com",
            "iat": now_s,
            "exp": now_s + TOKEN_TTL_S,
            "jti": jti,
        }
        self._issued.add(jti)
        return web.json_response({"Token": encode_jwt(claims, self._secret)})

    # --- paging helpers -------------------------------------------------------------------------
    def _v3_page(self, request: web.Request, rows: Sequence[int], render: Render) -> web.Response:
        page, per_page = parse_v3_paging(
            request.query, V3_PER_PAGE, int(self.settings["per_page_max"])
        )
        # Rendering and serialising 200 rows costs ~15-25 ms of CPU: a page of unchanged
        # data is served from its cached bytes, so the sandbox keeps up with 100 pages/s.
        key = (str(request.url), self.today())
        stamp = self.store.stamp()
        body = self._pages.get(key, stamp)
        if body is None:
            start, end, more = page_bounds(len(rows), page, per_page)
            items = [item for item in map(render, rows[start:end]) if item is not None]
            next_url = with_params(request.url, page=page + 1) if more else None
            envelope = {"Items": items, "Paging": {"TotalCount": len(rows), "Next": next_url}}
            body = json.dumps(envelope).encode()
            self._pages.put(key, stamp, body)
        return web.Response(body=body, content_type="application/json")

    def _v2_page(
        self, request: web.Request, rows: Sequence[int], table: Table, render: Render
    ) -> web.Response:
        q = request.query
        limit = parse_int(q, "limit", V2_LIMIT, V2_LIMIT_MIN, V2_LIMIT_MAX)
        pos = bisect_left(rows, parse_int(q, "idStart", 0, 0) - table.id_base)
        items = [item for item in map(render, rows[pos : pos + limit]) if item is not None]
        more = pos + limit < len(rows)
        next_id = table.id_of(rows[pos + limit]) if more else None
        next_url = with_params(request.url, idStart=next_id) if next_id is not None else None
        return web.json_response({"Items": items, "Page": {"NextId": next_id, "Next": next_url}})

    def _index(self, table: Table, ident: str, what: str) -> int:
        index = table.index_of(ident)
        if index is None:
            raise ApiError(404, f"The {what} '{ident}' was not found.")
        return index

    # --- reads ----------------------------------------------------------------------------------
    async def _accounts(self, request: web.Request, params: Params) -> web.Response:
        q = request.query
        rows = self.store.lists.accounts(
            parse_bool(q, "showArchived"), q.get("accountOwnerEmail") or None
        )
        return self._v3_page(request, rows, self.store.account)

    async def _contacts(self, request: web.Request, params: Params) -> web.Response:
        a = self._index(self.store.accounts, params["id"], "account")
        return web.json_response(self.store.contacts(a))

    async def _person_registrations(self, request: web.Request, params: Params) -> web.Response:
        p = self._index(self.store.persons, params["id"], "person")
        show_ended = parse_bool(request.query, "showEnded")
        rows = self.store.lists.person_registrations(p, self.today(), show_ended)
        return self._v3_page(request, rows, self.store.registration)

    async def _registrations(self, request: web.Request, params: Params) -> web.Response:
        q = request.query
        first, last = parse_day(q, "from"), parse_day(q, "to")
        rows = self.store.lists.registrations(self.today(), parse_bool(q, "showEnded"), first, last)
        return self._v3_page(request, rows, self.store.registration)

    async def _accessscans(self, request: web.Request, params: Params) -> web.Response:
        first, last = parse_day(request.query, "start"), parse_day(request.query, "end")
        if first is None and last is None:
            first = last = self.today()  # documented: both omitted → today
        rows = self.store.lists.scans(first or 1, last or date.max.toordinal())
        return self._v3_page(request, rows, self.store.scan)

    async def _programs(self, request: web.Request, params: Params) -> web.Response:
        q = request.query
        rows = self.store.lists.programs(parse_bool(q, "showHidden"), parse_bool(q, "showArchived"))
        return self._v3_page(request, rows, self.store.programs.get)

    async def _program(self, request: web.Request, params: Params) -> web.Response:
        p = self._index(self.store.programs, params["id"], "program")
        return web.json_response(self.store.programs.get(p))

    async def _activities(self, request: web.Request, params: Params) -> web.Response:
        p = self._index(self.store.programs, params["id"], "program")
        q = request.query
        for accepted in ("showOccurrences", "showTaxes"):  # validated; no extra fields modelled
            parse_bool(q, accepted)
        rows = self.store.lists.activities(
            p, parse_bool(q, "showHidden"), parse_bool(q, "showCancelled")
        )
        return self._v3_page(request, rows, self.store.activities.get)

    async def _activity(self, request: web.Request, params: Params) -> web.Response:
        a = self._index(self.store.activities, params["id"], "activity")
        parse_bool(request.query, "showTaxes")
        return web.json_response(self.store.activities.get(a))

    async def _v2_accounts(self, request: web.Request, params: Params) -> web.Response:
        rows = self.store.lists.accounts(parse_bool(request.query, "showArchived"), None)
        return self._v2_page(request, rows, self.store.accounts, self.store.account)

    async def _v2_persons(self, request: web.Request, params: Params) -> web.Response:
        rows = self.store.lists.persons()
        return self._v2_page(request, rows, self.store.persons, self.store.person)

    # --- writes (assumed endpoints, doc 4.4) ---------------------------------------------------
    async def _write_body(self, request: web.Request) -> Any:
        reject = self.faults.extra.get("reject_writes", False)
        if self.faults.roll(1.0 if reject is True else float(reject or 0)):
            self.stats.errors_injected += 1
            raise ApiError(422, "Injected validation error (reject_writes).")
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(400, "The request body is not valid JSON.") from None

    @staticmethod
    def _invalid(errors: list[str]) -> None:
        if errors:
            raise ApiError(422, "The request is invalid: " + "; ".join(errors))

    async def _create_account(self, request: web.Request, params: Params) -> web.Response:
        body = await self._write_body(request)
        self._invalid(account_errors(body, self.today()))
        a = self.store.add_account(
            [person_fields(o) for o in body["Owners"]],
            [person_fields(m) for m in body.get("Members", [])],
            bool(body.get("Corporate", False)),
        )
        status = int(self.settings["created_status"])
        return web.json_response(self.store.account(a), status=status)

    async def _update_person(self, request: web.Request, params: Params) -> web.Response:
        p = self._index(self.store.persons, params["id"], "person")
        body = await self._write_body(request)
        errors = person_errors(body, creating=False, owner=False, today=self.today())
        if isinstance(body, dict) and "Id" in body and body["Id"] != PERSON_BASE + p:
            errors.append("Id does not match the person in the URL")
        self._invalid(errors)
        return web.json_response(self.store.update_person(p, person_fields(body)))

    async def _add_skill(self, request: web.Request, params: Params) -> web.Response:
        p = self._index(self.store.persons, params["id"], "person")
        body = await self._write_body(request)
        self._invalid(skill_errors(body, self.today()))
        skill = self.store.add_skill(
            p,
            {
                "Name": body["Name"],
                "Level": body.get("Level"),
                "DateObtained": body.get("DateObtained") or iso_day(self.today()),
            },
        )
        return web.json_response(skill, status=int(self.settings["created_status"]))


SIM = AmiliaSim
