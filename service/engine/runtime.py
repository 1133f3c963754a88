"""The runtime: owns the database engine, the one HTTP session, and one connector
(with its limiter) per vendor, all cleaned up through a single exit stack.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import structlog
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import (
    AuthSettings,
    ConfigProblems,
    Settings,
    VendorSettings,
    blackout_remaining_s,
    mask_url,
    parse_window,
)
from service.connectors import REGISTRY, Connector, connector_class
from service.db import check_schema, create_engine, translate_db_errors
from service.engine.groups import LimitGroup, group_of, group_problems
from service.engine.lease import HeldLease
from service.errors import ConfigError
from service.http import HttpClient, HttpMetrics, RetryPolicy, VendorClient, VendorLimiter
from service.http.client import tls_context
from service.http.logins import LoginSpec, build_auth

Clock = Callable[[], datetime]
log = structlog.get_logger("service.engine.runtime")

# The vendor counts arrivals, and a request granted at the edge of a window may arrive
# late by scheduling jitter; 4% keeps 40 ms of headroom for ≥ 0.96 of the cap.
RATE_SAFETY_MARGIN = 0.04


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_owner() -> str:
    """Lease owner id: host, pid and a random suffix (unique per process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def check_streams(settings: Settings) -> None:
    """Every enabled vendor has a connector, and every configured stream is one it serves,
    with options its connector accepts. Raises ``ConfigProblems`` naming every problem."""
    problems: list[ConfigError] = []
    for vendor, vs in settings.vendors.items():
        if vs.enabled:
            problems.extend(_vendor_problems(vendor, vs))
    if not problems:
        problems.extend(group_problems(settings))
    if problems:
        raise ConfigProblems(problems)


def _vendor_problems(vendor: str, vs: VendorSettings) -> list[ConfigError]:
    kind = vs.connector or vendor
    try:
        cls = connector_class(kind)
    except KeyError as exc:
        where = "enabled" if kind == vendor else "connector"
        return [ConfigError(exc.args[0], key=f"vendors.{vendor}.{where}")]
    problems = []
    if (
        vs.auth.kind in ("password_grant", "basic_jwt")
        and vs.auth.token_path is None
        and "token_path" not in cls.auth_defaults
    ):
        problems.append(
            ConfigError(
                f"required for {vs.auth.kind} ({vendor}'s connector knows no login path)",
                key=f"vendors.{vendor}.auth.token_path",
            )
        )
    if cls.connection_options is not None:
        try:
            cls.connection_options.model_validate(vs.options)
        except ValidationError as exc:
            problems.extend(_option_problems(exc, f"vendors.{vendor}.options"))
    for stream, ss in vs.streams.items():
        key = f"vendors.{vendor}.streams.{stream}"
        try:
            cls.check_stream(stream, ss.options)
        except KeyError:
            known = ", ".join(cls.known_streams())
            problems.append(
                ConfigError(f"{vendor} has no stream {stream!r} (known: {known})", key=key)
            )
        except ValidationError as exc:
            problems.extend(_option_problems(exc, f"{key}.options"))
    return problems


def _option_problems(exc: ValidationError, key: str) -> list[ConfigError]:
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        out.append(ConfigError(msg, key=key + (f".{where}" if where else "")))
    return out


def blackouts_of(settings: VendorSettings, cls: type[Connector]) -> list[str]:
    """The vendor's blackout windows: from config, else its connector's known ones."""
    return list(settings.blackouts if settings.blackouts is not None else cls.default_blackouts)


def vendor_blackout_s(settings: Settings, vendor: str, now: datetime | None = None) -> float:
    """Seconds until the blackout window the vendor is in ends (0.0 when in none)."""
    cls = REGISTRY.get(settings.connector_of(vendor))
    if cls is None or vendor not in settings.vendors:
        return 0.0
    windows = [parse_window(w) for w in blackouts_of(settings.vendors[vendor], cls)]
    return blackout_remaining_s(windows, now or datetime.now(UTC))


def login_spec(auth: AuthSettings, defaults: Mapping[str, Any]) -> LoginSpec:
    """The configured auth kind with the connector's defaults for what config leaves out."""

    def secret(value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value()

    def pick(name: str, fallback: Any) -> Any:
        value = getattr(auth, name)
        return value if value is not None else defaults.get(name, fallback)

    kind = auth.kind
    return LoginSpec(
        kind,
        username=auth.username,
        password=secret(auth.password),
        client_id=auth.client_id,
        client_secret=secret(auth.client_secret),
        api_key=secret(auth.api_key),
        token=secret(auth.token),
        header=pick("header", "apikey" if kind == "apikey" else "Authorization"),
        token_path=pick("token_path", None),
        token_method=pick("token_method", "GET" if kind == "basic_jwt" else "POST"),
        token_field=pick("token_field", "Token" if kind == "basic_jwt" else "access_token"),
        scope=pick("scope", None),
        token_ttl_s=pick("token_ttl_s", None),
        refresh_margin_s=auth.refresh_margin_s,
    )


@dataclass
class _VendorHold:
    """This process's hold on one vendor's lease, shared by all its runs."""

    held: HeldLease
    users: int = 0


class Runtime:
    """One per process. ``async with Runtime(settings) as rt:`` then ``rt.connector(v)``."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utc_now,
        owner: str | None = None,
        db: AsyncEngine | None = None,
        require_schema: bool = True,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.owner = owner or default_owner()
        self._given_db = db
        self._require_schema = require_schema
        self._metrics = HttpMetrics(registry) if registry is not None else None
        self._stack = AsyncExitStack()
        self._connectors: dict[str, Connector] = {}
        self._limiters: dict[str, VendorLimiter] = {}  # by limit group lease
        self._vendor_holds: dict[str, _VendorHold] = {}
        self._vendor_lock = asyncio.Lock()
        self._db: AsyncEngine | None = None
        self._http: HttpClient | None = None

    @property
    def db(self) -> AsyncEngine:
        assert self._db is not None, "Runtime not started"
        return self._db

    @property
    def http(self) -> HttpClient:
        assert self._http is not None, "Runtime not started"
        return self._http

    async def __aenter__(self) -> Runtime:
        await self._stack.__aenter__()
        try:
            if self._given_db is not None:
                self._db = self._given_db
            else:
                engine = create_engine(self.settings.database.url, echo=self.settings.database.echo)
                self._stack.push_async_callback(engine.dispose)
                self._db = engine
            check_streams(self.settings)
            if self._require_schema:
                with translate_db_errors("reading the schema version"):
                    await check_schema(self._db)
            pool = sum(v.max_parallel for v in self.settings.vendors.values() if v.enabled)
            self._http = HttpClient(connector_limit=max(pool, 10), metrics=self._metrics)
            await self._stack.enter_async_context(self._http)
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    def connector(self, vendor: str) -> Connector:
        """The vendor's connector; created once, so its limiter is shared by every stream."""
        found = self._connectors.get(vendor)
        if found is not None:
            return found
        settings = self.settings.vendor(vendor)
        if not settings.enabled:
            raise ConfigError("vendor is disabled", key=f"vendors.{vendor}.enabled")
        cls = connector_class(self.settings.connector_of(vendor))
        limiter = self.group_limiter(group_of(self.settings, vendor))
        # Until when an abandoned call may still run at the vendor (after its send).
        vendor_timeout_s = settings.vendor_timeout_s
        if vendor_timeout_s is None:
            vendor_timeout_s = settings.timeout_s + cls.vendor_queue_timeout_s
        retry = RetryPolicy(
            max_attempts=settings.retry.max_attempts,
            base_s=settings.retry.base_s,
            max_backoff_s=settings.retry.max_backoff_s,
            max_elapsed_s=settings.retry.max_elapsed_s,
        )
        client: VendorClient = self.http.register(
            vendor,
            settings.base_url,
            limiter=limiter,
            auth=None,
            retry=retry,
            timeout_s=settings.timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            vendor_timeout_s=vendor_timeout_s,
            tls=tls_context(settings.tls_verify, settings.ca_file),
        )
        if not settings.tls_verify:
            log.warning(
                "TLS certificate verification is OFF for this vendor (tls_verify = false)",
                vendor=vendor,
                base_url=mask_url(settings.base_url),
            )
        windows = [parse_window(w) for w in blackouts_of(settings, cls)]
        if windows:
            client.blackout = functools.partial(blackout_remaining_s, windows)
        connector = cls(settings, client)
        client.auth = build_auth(login_spec(settings.auth, cls.auth_defaults), client)
        self._connectors[vendor] = connector
        return connector

    def group_limiter(self, group: LimitGroup) -> VendorLimiter:
        """The group's one limiter in this process, shared by its connections' clients."""
        found = self._limiters.get(group.lease)
        if found is None:
            found = VendorLimiter(
                group.name,
                group.max_parallel,
                group.rate_per_s,
                safety_margin=RATE_SAFETY_MARGIN,
            )
            self._stack.push_async_callback(found.aclose)  # its timers of abandoned slots
            self._limiters[group.lease] = found
        return found

    def _held(self, name: str, **hooks: Any) -> HeldLease:
        sync = self.settings.sync
        return HeldLease(
            self.db,
            name,
            self.owner,
            ttl_s=sync.lease_ttl_s,
            heartbeat_s=sync.heartbeat_s,
            now=self.clock,
            **hooks,
        )

    @asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[HeldLease]:
        """Hold the lease ``name`` (heartbeat while held), or raise ``LeaseHeld``.

        Released on every exit, cancellation included (shielded, so a shutdown does not
        strand it); a release the database refuses leaves the row to expire.
        """
        held = self._held(name)
        await held.acquire()
        try:
            yield held
        finally:
            await asyncio.shield(held.release())

    @asynccontextmanager
    async def vendor_lease(self, vendor: str) -> AsyncIterator[HeldLease]:
        """Hold the lease of the connection's limit group while any run or push of this
        process uses it (``vendor:<connection>``, or ``group:<name>`` for a shared group).

        The limiter lives in this process, so only one process may drive a group at a
        time: another daemon replica or a manual ``resync`` elsewhere gets ``LeaseHeld``.
        While the lease is unconfirmed (its renewal failed) the group's limiter is
        fenced: no request leaves until it is confirmed again or lost.
        """
        self.connector(vendor)  # its limiter exists before the lease can fence it
        async with self.group_lease(group_of(self.settings, vendor)) as held:
            yield held

    @asynccontextmanager
    async def group_lease(self, group: LimitGroup) -> AsyncIterator[HeldLease]:
        """Hold ``group.lease`` (shared by every user in this process, released by the
        last one); ``LeaseHeld`` when another process holds it."""
        hold = await self.hold_group(group)
        try:
            yield hold.held
        finally:
            await asyncio.shield(self.unhold_group(group, hold))

    def holds(self, lease: str) -> bool:
        """Whether this process holds the group lease ``lease`` right now."""
        hold = self._vendor_holds.get(lease)
        return hold is not None and not hold.held.lost.is_set()

    async def hold_group(self, group: LimitGroup) -> _VendorHold:
        """Take (or share) the group's lease; pair with ``unhold_group``."""
        limiter = self.group_limiter(group)
        async with self._vendor_lock:
            hold = self._vendor_holds.get(group.lease)
            if hold is None or hold.held.lost.is_set():
                held = self._held(
                    group.lease,
                    on_unconfirmed=limiter.fence,
                    on_confirmed=limiter.unfence,
                )
                await held.acquire()
                limiter.unfence()  # a fence left by an earlier, lost hold
                taken = held.took_over
                if taken is not None:
                    # The last holder's requests still count at the vendor: in its rate
                    # window for a period after it stopped, and (if it died rather than
                    # released) in its parallel cap while the vendor works on them.
                    since_s = (self.clock() - taken.expired_at).total_seconds()
                    busy_s = limiter.period_s
                    if not taken.released:
                        # Any connection of the group may have sent them: the longest.
                        busy_s = max(
                            busy_s,
                            *(self.connector(c).client.vendor_timeout_s for c in group.connections),
                        )
                    wait_s = max(0.0, busy_s - since_s)
                    limiter.pause(wait_s)
                    event = log.debug if taken.released else log.warning
                    event(
                        "vendor lease taken from its last holder",
                        vendor=group.name,
                        previous_owner=taken.owner,
                        released=taken.released,
                        wait_s=round(wait_s, 2),
                    )
                hold = _VendorHold(held)
                self._vendor_holds[group.lease] = hold
            hold.users += 1
        return hold

    async def unhold_group(self, group: LimitGroup, hold: _VendorHold) -> None:
        async with self._vendor_lock:
            hold.users -= 1
            # A run that started meanwhile reuses the hold; only the last one releases.
            if hold.users == 0 and self._vendor_holds.get(group.lease) is hold:
                del self._vendor_holds[group.lease]
                await hold.held.release()
