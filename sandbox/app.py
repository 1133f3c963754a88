"""The simulator base class and the aiohttp app that mounts every vendor under its prefix.

Each vendor is a :class:`VendorSim` mounted at ``/{name}``. Its middleware counts the
request (stats), enforces the vendor's limits, injects faults, then calls the vendor's
own handler. Control endpoints under ``/{name}/_sandbox/`` bypass all of that.

Tenants: a request whose credentials name another account (``tenant_of``) is served, counted
and limited by that tenant's own instance (own seed, data, tokens); ``?tenant=`` on a control
endpoint reaches that instance's control handler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import zlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from sandbox.clock import Clock, SystemClock
from sandbox.faults import Faults
from sandbox.limits import Admission, LimitConfig, Limiter
from sandbox.stats import VendorStats

CONTROL_PREFIX = "/_sandbox/"
REQUEST_LOG = 200  # the last requests' method and raw target, for tests that check encoding
MAX_BODY_BYTES = 256 * 1024**2  # aiohttp's 1 MiB default would refuse real-sized pushes


@dataclass
class SandboxOptions:
    records: int = 1000  # records per entity
    seed: int = 42
    latency_ms: float = 0.0
    clock: Clock = field(default_factory=SystemClock)
    # Per-vendor overrides: {"aimsio": {"limits": {...}, "faults": {...}, ...vendor keys}}
    vendors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def for_vendor(self, name: str) -> dict[str, Any]:
        return dict(self.vendors.get(name, {}))


def tenant_seed(seed: int, tenant: str) -> int:
    """A tenant's own seed: deterministic, different for each tenant."""
    return zlib.crc32(f"{seed}:{tenant}".encode())


def suffixed(name: str, bases: Iterable[str], *, fold: bool = False) -> tuple[str, str] | None:
    """``(base, tenant)`` when ``name`` is a known base plus ``-<suffix>`` (``demo-7`` of
    ``demo``); a known name itself, or anything else, → None. ``fold``: match in any case
    (the tenant is then named in the base's own case, suffix lowered)."""
    known = {(b.casefold() if fold else b): b for b in bases}
    if (name.casefold() if fold else name) in known:
        return None
    head, sep, suffix = name.rpartition("-")
    base = known.get(head.casefold() if fold else head)
    if not sep or not suffix or base is None:
        return None
    return base, f"{base}-{suffix.casefold() if fold else suffix}"


def suffixed_email(email: str, users: Iterable[str]) -> tuple[str, str] | None:
    """``(base email, tenant)``: ``demo-7@x.test`` of a known ``demo@x.test`` → tenant
    ``demo-7`` (any case); a known email itself, or anything else, → None."""
    local, at, domain = email.casefold().rpartition("@")
    if not at:
        return None
    bases = {
        u.casefold().rpartition("@")[0]: u for u in users if u.casefold().endswith(at + domain)
    }
    named = suffixed(local, bases)
    return None if named is None else (bases[named[0]], named[1])


class VendorSim:
    """Base of one vendor's simulator. Subclasses add routes and vendor behaviour.

    Class attributes a subclass sets:
    - ``name``: the vendor id and URL prefix.
    - ``default_limits``: how the real vendor limits clients.
    - ``contract``: the documented caps a compliant client keeps (for violation counting).
    - ``extra_faults``: names of vendor-specific fault switches accepted in ``faults.extra``.
    """

    name: ClassVar[str]
    default_limits: ClassVar[LimitConfig] = LimitConfig()
    contract_max_parallel: ClassVar[int | None] = None
    contract_rate_per_s: ClassVar[float | None] = None
    extra_faults: ClassVar[frozenset[str]] = frozenset()
    # True where the vendor counts its limit by client address rather than by account
    # (Amilia: 100 calls/s per IP): every tenant then shares this instance's limiter, and
    # ``shared_stats`` counts all tenants' requests per client address together.
    tenants_share_limits: ClassVar[bool] = False

    def __init__(self, options: SandboxOptions) -> None:
        self.options = options
        self.clock = options.clock
        own = options.for_vendor(self.name)
        limits = LimitConfig(**self.default_limits.__dict__)
        limits.update(own.pop("limits", {}))
        self.limiter = Limiter(limits)
        self.stats = VendorStats(
            max_parallel=self.contract_max_parallel, rate_per_s=self.contract_rate_per_s
        )
        self._initial_faults = {"latency_ms": options.latency_ms, **own.pop("faults", {})}
        self.faults = self._fresh_faults()
        self.settings = own  # vendor-specific keys, read by subclasses
        # Other accounts (tenants) of this vendor: each its own simulator instance, so its
        # own data, limits and counters. This instance is the default tenant.
        self.tenant_id: str | None = None
        self.root: VendorSim = self  # the default tenant, which knows every other one
        self._tenants: dict[str, VendorSim] = {}
        self.shared_stats: dict[str, VendorStats] = {}  # client address → counters
        self._route_list: list[AbstractRoute] = []
        self._route_index: dict[int, int] = {}  # id(route) → its place in _route_list
        # (method, raw path and query as sent, header names): what a client really sent.
        self.request_log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG)

    def _fresh_faults(self) -> Faults:
        faults = Faults(seed=self.options.seed)
        faults.update(self._initial_faults, self.extra_faults)
        return faults

    # --- hooks for subclasses -------------------------------------------------------------
    def setup_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def error_response(self, status: int, message: str) -> web.Response:
        """The vendor's own error body shape; override per vendor."""
        return web.json_response({"message": message}, status=status)

    def timeout_response(self) -> web.Response:
        return web.Response(status=self.limiter.config.timeout_status)

    async def mutate(self, body: dict[str, Any]) -> dict[str, Any]:
        raise web.HTTPBadRequest(text="this simulator has no mutation API")

    def reset_data(self) -> None:
        """Called by ``POST /_sandbox/reset`` with ``{"data": true}``; optional."""

    async def tenant_of(self, request: web.Request) -> str | None:
        """The tenant (account) a request's credentials name; None: the default tenant.
        Vendors whose credentials can name accounts override this. It may read the body
        (a login form): aiohttp keeps what was read for the handler."""
        return None

    def tenant_settings(self, tenant: str) -> dict[str, Any]:
        """Vendor settings of a new tenant (e.g. its user), over the default tenant's."""
        return {}

    def tenant(self, tenant: str) -> VendorSim:
        """The simulator of ``tenant``, created on first use with its own seed."""
        sim = self._tenants.get(tenant)
        if sim is None:
            own = {**self.options.for_vendor(self.name), **self.tenant_settings(tenant)}
            options = dataclasses.replace(
                self.options,
                seed=tenant_seed(self.options.seed, tenant),
                vendors={**self.options.vendors, self.name: own},
            )
            sim = type(self)(options)
            sim.tenant_id = tenant
            sim.root = self
            if self.tenants_share_limits:
                sim.limiter = self.limiter
                sim.shared_stats = self.shared_stats
            sim.build()  # its own routes, bound to its own state (never served directly)
            self._tenants[tenant] = sim
        return sim

    def tenants(self) -> dict[str, VendorSim]:
        return dict(self._tenants)

    def _control_target(self, request: web.Request) -> VendorSim:
        tenant = request.query.get("tenant")
        return self if not tenant or tenant == self.tenant_id else self.tenant(tenant)

    # --- shared machinery -------------------------------------------------------------------
    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/_sandbox/stats", self._get_stats)
        app.router.add_get("/_sandbox/requests", self._get_requests)
        app.router.add_post("/_sandbox/faults", self._post_faults)
        app.router.add_get("/_sandbox/faults", self._get_faults)
        app.router.add_post("/_sandbox/reset", self._post_reset)
        app.router.add_post("/_sandbox/mutate", self._post_mutate)
        self.setup_routes(app)
        self._route_list = list(app.router.routes())
        self._route_index = {id(r): i for i, r in enumerate(self._route_list)}
        return app

    def _handler_of(self, sim: VendorSim, request: web.Request, handler: Any) -> Any:
        """The tenant's own handler for the route this instance matched: both built the
        same routes in the same order, and handlers (bound methods, closures) capture
        their instance."""
        index = self._route_index.get(id(request.match_info.route))
        return handler if index is None else sim._route_list[index].handler

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.match_info.route.resource is not None and CONTROL_PREFIX in request.path:
            # ``?tenant=X``: that tenant's own control handler (a vendor's clock, queue…).
            named = request.query.get("tenant")
            if named and named != "*" and named != self.tenant_id:
                handler = self._handler_of(self.tenant(named), request, handler)
            control: web.StreamResponse = await handler(request)
            return control
        tenant = await self.tenant_of(request)
        if tenant is not None and tenant != self.tenant_id:
            sim = self.tenant(tenant)
            return await sim._admit_and_handle(request, self._handler_of(sim, request, handler))
        return await self._admit_and_handle(request, handler)

    def _shared_counter(self, client: str) -> VendorStats | None:
        if not self.tenants_share_limits:
            return None
        shared = self.shared_stats.get(client)
        if shared is None:
            shared = VendorStats(
                max_parallel=self.contract_max_parallel, rate_per_s=self.contract_rate_per_s
            )
            self.shared_stats[client] = shared
        return shared

    async def _admit_and_handle(self, request: web.Request, handler: Any) -> web.StreamResponse:
        client = request.remote or "?"
        shared = self._shared_counter(client)
        self.stats.arrive(request.path)
        if shared is not None:
            shared.arrive(request.path)
        self.request_log.append(
            {"method": request.method, "target": request.raw_path, "headers": list(request.headers)}
        )
        admission = Admission(False, 500)
        status = 500
        try:
            admission = await self.limiter.admit(client)
            if not admission.admitted:
                if admission.status == 429:
                    self.stats.rate_limited += 1
                    if shared is not None:
                        shared.rate_limited += 1
                    resp: web.StreamResponse = self.error_response(429, "Too Many Requests")
                else:
                    self.stats.timeouts += 1
                    resp = self.timeout_response()
                status = resp.status
                return resp
            resp = await self._with_faults(request, handler)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.limiter.release(admission)
            self.stats.depart(status)
            if shared is not None:
                shared.depart(status)

    async def _with_faults(self, request: web.Request, handler: Any) -> web.StreamResponse:
        faults = self.faults
        delay = faults.delay_s()
        if delay > 0:
            await asyncio.sleep(delay)
        if faults.roll(faults.reset_rate):
            self.stats.errors_injected += 1
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError  # aiohttp drops the connection without a response
        if faults.roll(faults.error_rate):
            self.stats.errors_injected += 1
            return self.error_response(faults.error_status, "Injected server error")
        resp: web.StreamResponse = await handler(request)
        if isinstance(resp, web.Response) and resp.body is not None and resp.status < 400:
            body = resp.body if isinstance(resp.body, bytes) else None
            if body and faults.roll(faults.truncate_rate):
                self.stats.errors_injected += 1
                return await _send_truncated(request, resp, body)
            is_json = (resp.content_type or "").endswith("json")
            if body and is_json and faults.roll(faults.malformed_rate):
                self.stats.errors_injected += 1
                return web.Response(
                    body=body[: max(1, len(body) // 2)] + b"<!-- not json",
                    status=resp.status,
                    content_type=resp.content_type,
                )
        return resp

    async def _get_requests(self, request: web.Request) -> web.Response:
        """The last requests (oldest first) as received: method, raw target, header names."""
        return web.json_response(list(self._control_target(request).request_log))

    async def _get_stats(self, request: web.Request) -> web.Response:
        """``?tenant=X``: that tenant's counters; ``?tenant=*``: every tenant's. Where tenants
        share limits, ``by_client`` adds the counters of all tenants per client address."""
        shared: dict[str, Any] = {}
        if self.tenants_share_limits:
            by_client = {k: v.to_dict() for k, v in self.shared_stats.items()}
            shared = {"by_client": by_client}
        if request.query.get("tenant") == "*":
            every = {"": self, **self._tenants}
            return web.json_response(
                {
                    "vendor": self.name,
                    "tenants": {k: sim.stats.to_dict() for k, sim in every.items()},
                    **shared,
                }
            )
        sim = self._control_target(request)
        return web.json_response(
            {"vendor": self.name, "tenant": sim.tenant_id, **sim.stats.to_dict(), **shared}
        )

    async def _get_faults(self, request: web.Request) -> web.Response:
        sim = self._control_target(request)
        return web.json_response(
            {"faults": sim.faults.to_dict(), "limits": sim.limiter.config.__dict__}
        )

    async def _post_faults(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        sim = self._control_target(request)
        try:
            limits = body.pop("limits", None)
            if limits is not None:
                sim.limiter.config.update(limits)
            sim.faults.update(body, sim.extra_faults)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return await self._get_faults(request)

    async def _post_reset(self, request: web.Request) -> web.Response:
        body = await _json_body(request) if request.can_read_body else {}
        # Without ?tenant= every tenant is reset.
        sims = (
            [self._control_target(request)]
            if request.query.get("tenant")
            else [self, *self._tenants.values()]
        )
        if not request.query.get("tenant"):
            for shared in self.shared_stats.values():
                shared.reset()
        for sim in sims:
            sim.stats.reset()
            sim.limiter.reset()
            if body.get("faults", True):
                sim.faults = sim._fresh_faults()
            if body.get("data", False):
                sim.reset_data()
        return web.json_response({"vendor": self.name, "reset": True})

    async def _post_mutate(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        sim = self._control_target(request)
        try:
            result = await sim.mutate(body)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(result)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body


async def _send_truncated(
    request: web.Request, resp: web.Response, body: bytes
) -> web.StreamResponse:
    out = web.StreamResponse(status=resp.status, headers={"Content-Type": resp.content_type})
    out.content_length = len(body)
    await out.prepare(request)
    await out.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.abort()
    return out


def build_app(sims: list[VendorSim]) -> web.Application:
    root = web.Application(client_max_size=MAX_BODY_BYTES)
    for sim in sims:
        root.add_subapp(f"/{sim.name}", sim.build())
    return root
