"""The iMIS (ASI) REST API simulator, mounted at ``/imis``.

Routes (as on a customer site, ``https://{site}/token`` and ``/api/{Entity}``):

- ``POST /token``: form-encoded ``grant_type=password&username=…&password=…`` (key names
  in any case, as the Postman collection's ``Username``/``Password``/``Grant_type``) →
  ``{"access_token", "token_type": "bearer", "expires_in", "userName", ".issued", ".expires"}``.
  A wrong user or password → 400 ``{"error": "invalid_grant", …}``; another grant type → 400
  ``{"error": "unsupported_grant_type"}``.
- ``GET|POST /api/{Entity}`` and ``GET|PUT|DELETE /api/{Entity}/{id}`` for Party, Person,
  Activity, Event, EventRegistration, GroupMember, PartyDeleteLog and ChangeLog (entity names
  in any case). Lists are ``PagedResult`` envelopes (``limit``/``offset``, ordered by id, or by
  ``orderby=Prop [desc]``); every other query parameter is a filter (``sandbox.imis.filter``).
  The handlers live in ``sandbox.imis.resource``.
  A bearer token that is missing, unknown or expired → 401
  ``{"Message": "Authorization has been denied for this request."}``. Bodies must carry
  ``$type`` (missing or foreign → 400); a failed validation → 422 (``validation_status``)
  ``{"Message", "ValidationResults": {"$type", "Errors": {"$type", "$values": [{"Message"}]}}}``.
  DELETE exists on Party, Person, Activity and Event; deleting a party appends a
  ``PartyDeleteLog`` row and a ``ChangeLog`` row (every party write logs one).
- Daily database-restore windows (06:00 and 18:00 UTC, 5 min, judged on the sandbox clock):
  ``/token`` and ``/api/*`` answer 503, or hang ``restore_hang_s`` then 503.

Tenants: a configured user plus a suffix (``demo-7`` with ``demo-secret``) logs in to a site
of its own (tenant ``demo-7``): its own data, tokens, clock and counters. The bearer tokens
it issues name it on later calls, so a token only ever reads its own site's data
(``/_sandbox/clock?tenant=demo-7`` moves that site's clock).

Settings (``SandboxOptions.vendors["imis"]``; unknown keys are an error):

- ``users`` = ``{"demo": "demo-secret"}``: accepted logins.
- ``token_expires_in_s`` = 1199: token lifetime (seen in the wild; the password grant's is
  undocumented).
- ``token_extra_fields`` = True: [ASSUMPTION] OWIN adds ``userName``, ``.issued``, ``.expires``.
- ``default_limit`` = 100: page size without ``limit``.
- ``max_limit`` = 500: [ASSUMPTION] a larger ``limit`` is lowered to this and reported in
  ``Limit``.
- ``validation_status`` = 422: [ASSUMPTION] status of a validation failure (the seed's 422;
  some sites answer 400).
- ``restore_windows_utc`` = ``["06:00", "18:00"]``: restore start times; ``[]`` disables.
- ``restore_window_s`` = 300: length of each window.
- ``restore_mode`` = ``"503"``: answer 503 at once, or ``"hang"``: wait ``restore_hang_s``
  (real seconds, default 30) and then answer 503.
- ``utc_offset_min`` = 0: the server's local time zone (timestamps carry no offset).
- ``flaky_drop_fraction`` = 0.5 and ``flaky_window_s`` = 900: see ``flaky_updated_on``.
- ``polite_max_parallel`` = 5: [ASSUMPTION] the concurrency a polite client keeps; more is
  counted as a violation in the stats (nothing is enforced: iMIS documents no limit).

The error bodies above (invalid_grant, the 401 and the validation shape) are the vendor
document's [ASSUMPTION]s too; they are fixed shapes rather than settings.

Fault switches (``POST /_sandbox/faults`` ``{"extra": {…}}``):
- ``flaky_updated_on``: ``true``/``"drop"`` hides a deterministic ``flaky_drop_fraction`` of
  the rows an ``updatedOn`` filter matches while their ``UpdatedOn`` is within
  ``flaky_window_s`` of now (they show up later); ``"date_only"`` ignores the time of day in
  the filter's dates. Either way a client must re-read an overlap window and check cursors.
- ``token_expire_now``: every issued token expires (once; the switch resets itself).
- ``restore_now``: behave as inside a restore window until switched off.

Mutation API (``POST /_sandbox/mutate``): ``{"entity", "change", "delete", "add", "seed"}``
and/or ``{"entity", "update": [{"id", <property>: value, …}], "delete_ids": […]}``;
properties are named as in filters (``lastName``, ``email``, ``updatedOn`` …). Changes stamp
``UpdatedOn`` with the sandbox clock unless ``updatedOn`` is given. Person mutations act on
Party. Returns the ids changed, deleted and added.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandbox.app import SandboxOptions, VendorSim, suffixed
from sandbox.clock import Clock
from sandbox.imis.auth import DENIED, TokenStore, bearer, grant, token_body
from sandbox.imis.commerce import COUNTRIES, CountrySpec, InvoiceSpec, ItemSpec
from sandbox.imis.entities import ActivitySpec, GroupMemberSpec
from sandbox.imis.event import EventRegistrationSpec, EventSpec
from sandbox.imis.filter import (
    Filter,
    FilterError,
    in_restore_window,
    local_ms,
    parse_paging,
)
from sandbox.imis.iqa import find_query, run_query
from sandbox.imis.mutate import Journal, apply_mutation
from sandbox.imis.party import (
    PERSON_TYPE,
    ChangeLogSpec,
    PartyDeleteLogSpec,
    PartySpec,
    is_person,
)
from sandbox.imis.records import SYSTEM_USER, Context, EntitySpec, Stamp
from sandbox.imis.resource import EntityApi, ImisError, View
from sandbox.imis.store import Table
from sandbox.limits import LimitConfig

DEMO_CREDENTIALS: dict[str, str] = {"username": "demo", "password": "demo-secret"}
EXAMPLE_PATH = "/api/Party"

DEFAULTS: dict[str, Any] = {
    "users": {"demo": "demo-secret"},
    "token_expires_in_s": 1199,
    "token_extra_fields": True,
    "default_limit": 100,
    "max_limit": 500,
    "validation_status": 422,
    "restore_windows_utc": ["06:00", "18:00"],
    "restore_window_s": 300.0,
    "restore_mode": "503",
    "restore_hang_s": 30.0,
    "utc_offset_min": 0,
    "flaky_drop_fraction": 0.5,
    "flaky_window_s": 900.0,
    "polite_max_parallel": 5,
}


class ImisSim(VendorSim):
    name = "imis"
    default_limits = LimitConfig()  # no documented rate limit or concurrency cap
    contract_max_parallel = DEFAULTS["polite_max_parallel"]
    extra_faults = frozenset({"flaky_updated_on", "token_expire_now", "restore_now"})

    def __init__(self, options: SandboxOptions) -> None:
        super().__init__(options)
        unknown = set(self.settings) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown imis setting(s): {sorted(unknown)}")
        self.settings = {**DEFAULTS, **self.settings}
        self.stats.max_parallel = int(self.settings["polite_max_parallel"])
        self.shifted = ShiftedClock(options.clock)  # settable from outside: /_sandbox/clock
        self.clock = self.shifted
        self.tokens = TokenStore(self.clock)
        self.reset_data()

    # --- data -------------------------------------------------------------------------------
    def reset_data(self) -> None:
        size, seed = self.options.records, self.options.seed
        ctx = Context(seed, size, int(self.settings["utc_offset_min"]), exists=self._exists)
        party, event = PartySpec(ctx), EventSpec(ctx)
        deletes, changes = PartyDeleteLogSpec(ctx), ChangeLogSpec(ctx, party)
        specs: tuple[EntitySpec, ...] = (
            party,
            ActivitySpec(ctx, party),
            event,
            EventRegistrationSpec(ctx, party, event),
            GroupMemberSpec(ctx, party),
            ItemSpec(ctx),
            InvoiceSpec(ctx, party),
            deletes,
            changes,
        )
        # The delete log starts empty; every other table holds ``records`` generated rows.
        self.tables = {s.name: Table(s, 0 if s is deletes else size, seed) for s in specs}
        country = CountrySpec(ctx)
        self.tables["Country"] = Table(country, len(COUNTRIES), seed)
        specs = (*specs, country)
        self.journal = Journal(
            self.tables["ChangeLog"], changes, self.tables["PartyDeleteLog"], deletes
        )
        views = [View(s.name, self.tables[s.name], s.item_type, s.list_type) for s in specs]
        views.append(
            View(
                "Person",
                self.tables["Party"],
                PERSON_TYPE,
                PERSON_TYPE.split(",")[0],
                (Filter("_IsPerson", "istrue", ()),),
                is_person,
            )
        )
        self.views = {v.name.casefold(): v for v in views}

    def _exists(self, entity: str, ident: str) -> bool:
        table = self.tables[entity]
        return table.get(table.spec.index_of(ident)) is not None

    def stamp(self, user: str = SYSTEM_USER) -> Stamp:
        return Stamp(self.now_ms(), user)

    def now_ms(self) -> int:
        return local_ms(self.clock.now(), int(self.settings["utc_offset_min"]))

    # --- routes -----------------------------------------------------------------------------
    def setup_routes(self, app: web.Application) -> None:
        app.router.add_post("/token", self._post_token)
        entities = EntityApi(self)
        app.router.add_get("/_sandbox/clock", self._get_clock)
        app.router.add_post("/_sandbox/clock", self._post_clock)
        app.router.add_get("/api/iqa", self._guard(self._iqa))
        app.router.add_get("/api/query", self._guard(self._iqa))
        app.router.add_route("*", "/api/{entity}", self._guard(entities.on_collection))
        app.router.add_route("*", "/api/{entity}/{id}", self._guard(entities.on_item))

    def error_response(self, status: int, message: str) -> web.Response:
        return web.json_response({"Message": message}, status=status)

    def _reply(self, exc: ImisError) -> web.Response:
        return web.json_response(exc.body, status=exc.status, headers=exc.headers)

    def _guard(
        self, handler: Callable[[web.Request, str], Awaitable[web.Response]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """Restore window, then bearer auth, then the handler; errors in iMIS shape."""

        async def guarded(request: web.Request) -> web.Response:
            try:
                await self._restore_gate()
                user = self._authorize(request)
                return await handler(request, user)
            except ImisError as exc:
                return self._reply(exc)
            except FilterError as exc:
                return self.error_response(400, str(exc))

        return guarded

    async def _restore_gate(self) -> None:
        s = self.settings
        window = in_restore_window(
            self.clock.now(), s["restore_windows_utc"], float(s["restore_window_s"])
        )
        if not window and not self.faults.extra.get("restore_now"):
            return
        if s["restore_mode"] == "hang":
            await asyncio.sleep(float(s["restore_hang_s"]))
        raise ImisError(503, "The service is unavailable: a database restore is in progress.")

    async def _iqa(self, request: web.Request, _user: str) -> web.Response:
        params = list(request.query.items())
        name = next((v for k, v in params if k.casefold() == "queryname"), "")
        query = find_query(name)
        if query is None:
            raise ImisError(404, f"IQA query '{name}' was not found.")
        s = self.settings

        def paging(limit: str | None, offset: str | None) -> tuple[int, int]:
            return parse_paging(limit, offset, s["default_limit"], s["max_limit"])

        return web.json_response(run_query(query, self.tables[query.table], params, paging))

    # --- tenants ----------------------------------------------------------------------------
    async def tenant_of(self, request: web.Request) -> str | None:
        """``demo-7`` (a configured user plus a suffix, base password) is a site of its own:
        named by the login form, then by the bearer token that site issued."""
        if request.method == "POST" and request.path == f"/{self.name}/token":
            form = await request.post()
            wanted = next((v for k, v in form.items() if k.casefold() == "username"), "")
            if not isinstance(wanted, str):
                return None
            named = suffixed(wanted, self.settings["users"], fold=True)
            return None if named is None else named[1]
        token = bearer(request.headers.get("Authorization", ""))
        if token is None or self.tokens.user_of(token) is not None:
            return None
        for name, sim in self.tenants().items():
            if isinstance(sim, ImisSim) and sim.tokens.user_of(token) is not None:
                return name
        return None

    def tenant_settings(self, tenant: str) -> dict[str, Any]:
        password = self.settings["users"].get(tenant.rpartition("-")[0])
        return {"users": {} if password is None else {tenant: password}}

    # --- clock control ----------------------------------------------------------------------
    async def _get_clock(self, _request: web.Request) -> web.Response:
        now, offset = self.shifted.now(), self.shifted.offset_s
        return web.json_response({"now": now, "offset_s": offset})

    async def _post_clock(self, request: web.Request) -> web.Response:
        """``{"set": <epoch s>}``, ``{"advance": <s>}`` or ``{"reset": true}``."""
        body = await request.json()
        if body.get("reset"):
            self.shifted.offset_s = 0.0
        if "set" in body:
            self.shifted.set(float(body["set"]))
        if "advance" in body:
            self.shifted.offset_s += float(body["advance"])
        return await self._get_clock(request)

    # --- auth -------------------------------------------------------------------------------
    def _expire_if_asked(self) -> None:
        if self.faults.extra.get("token_expire_now"):
            self.tokens.expire_all()
            self.faults.extra["token_expire_now"] = False  # a one-shot switch

    def _authorize(self, request: web.Request) -> str:
        self._expire_if_asked()
        user = self.tokens.user_of(bearer(request.headers.get("Authorization", "")))
        if user is None:
            exc = ImisError(401, DENIED)
            exc.headers["WWW-Authenticate"] = "Bearer"
            raise exc
        return user

    async def _post_token(self, request: web.Request) -> web.Response:
        try:
            await self._restore_gate()
        except ImisError as exc:
            return self._reply(exc)
        self._expire_if_asked()
        form = await request.post()
        user, error = grant(
            {k: v for k, v in form.items() if isinstance(v, str)}, self.settings["users"]
        )
        if user is None:
            return web.json_response(error, status=400)
        ttl = int(self.settings["token_expires_in_s"])
        token = self.tokens.issue(user, ttl)
        body = token_body(token, user, self.clock.now(), ttl, self.settings["token_extra_fields"])
        return web.json_response(body, headers={"Cache-Control": "no-cache", "Pragma": "no-cache"})

    # --- mutation API -----------------------------------------------------------------------
    async def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        view = self.views.get(str(body["entity"]).casefold())
        if view is None:
            raise ValueError(f"unknown iMIS entity {body['entity']!r}")
        return apply_mutation(view.table, body, self.stamp(), self.journal)


class ShiftedClock:
    """The sandbox clock plus an offset that tests move over HTTP (restore windows, token
    expiry, journal stamps all follow it)."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self.offset_s = 0.0

    def now(self) -> float:
        return self.base.now() + self.offset_s

    def set(self, epoch_s: float) -> None:
        self.offset_s = epoch_s - self.base.now()


SIM = ImisSim
