"""The daemon's status page at ``/``: streams, lag, failures, outbox backlog, dead letters.

Server-rendered (Jinja2, autoescaped); the only script is a few lines that send the two
actions with the admin token in a header. Reading needs no token. The actions
(``POST /actions/requeue/{id}``, ``POST /actions/run/{vendor}/{stream}``) need the configured
``daemon.admin_token`` in ``X-Admin-Token``, compared in constant time. That header is also
the CSRF defence: a cross-site form or image cannot send a custom header, and a cross-site
``fetch`` with one needs a CORS preflight this server never grants; requests that say they
come from another origin are refused as well. The token is never rendered, logged or stored.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.db import translate_db_errors
from service.db.outbox import outbox_summary
from service.db.overview import dead_letters, outbox_backlog, requeue_dead_letter
from service.engine.freshness import collect_freshness
from service.errors import SyncError
from service.secrets import redact_text

log = structlog.get_logger("service.daemon.status_page")

TOKEN_HEADER = "X-Admin-Token"
TEMPLATES = Path(__file__).parent / "templates"
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


@dataclass
class PageHooks:
    """What the page reads and does, given by the daemon."""

    settings: Settings
    db: AsyncEngine
    # Next fire time of each stream's job, as the running scheduler knows it.
    scheduled: Callable[[], dict[tuple[str, str], datetime]]
    # Start a stream's run now; False when no such job exists.
    run_now: Callable[[str, str], bool]
    owner: str
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


def _age(seconds: float | None) -> str:
    """``42s``, ``3m 20s``, ``2h 5m``, ``1d 3h``."""
    if seconds is None:
        return "-"
    s = int(seconds)
    for (big, big_s), (small, small_s) in (
        (("d", 86400), ("h", 3600)),
        (("h", 3600), ("m", 60)),
        (("m", 60), ("s", 1)),
    ):
        if s >= big_s:
            return f"{s // big_s}{big} {s % big_s // small_s}{small}"
    return f"{s}s"


_env.filters["age"] = _age
_env.filters["utc"] = lambda d: "-" if d is None else d.strftime("%Y-%m-%d %H:%M:%S")


def _authorize(request: web.Request, token: str | None) -> web.Response | None:
    """None when the request may act; else the refusal (never echoing what was sent)."""
    if token is None:
        return _json(403, "actions are disabled: no daemon.admin_token is configured")
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return _json(403, "refused: the request comes from another site")
    if request.headers.get("Sec-Fetch-Site") not in (None, "same-origin", "none"):
        return _json(403, "refused: the request comes from another site")
    sent = request.headers.get(TOKEN_HEADER)
    if not sent:
        return _json(401, f"this action needs the admin token in the {TOKEN_HEADER} header")
    if not hmac.compare_digest(sent.encode(), token.encode()):
        log.warning("status page: admin token refused", path=request.path, peer=request.remote)
        return _json(403, "wrong admin token")
    return None


def _json(status: int, message: str) -> web.Response:
    return web.json_response({"ok": status < 300, "message": message}, status=status)


async def _page_data(hooks: PageHooks) -> dict[str, Any]:
    now = hooks.clock()
    with translate_db_errors("reading the status"):  # connect and commit failures too
        async with hooks.db.connect() as conn:
            streams = await collect_freshness(conn, hooks.settings, now, hooks.scheduled())
            outbox = await outbox_summary(conn)
            dead = await dead_letters(conn)
            backlog = await outbox_backlog(conn)
    for row in dead:
        row["last_error"] = redact_text(row["last_error"] or "")
    counts: dict[str, int] = {}
    for s in streams:
        counts[s.state] = counts.get(s.state, 0) + 1
    return {
        "now": now,
        "owner": hooks.owner,
        "streams": [
            {**s.as_dict(), "last_error": redact_text(s.last_error or "")} for s in streams
        ],
        "counts": counts,
        "outbox": outbox,
        "backlog": backlog,
        "dead": dead,
        "actions": hooks.settings.daemon.admin_token is not None,
        "token_header": TOKEN_HEADER,
    }


def add_status_page(app: web.Application, hooks: PageHooks) -> None:
    """Serve the page at ``/`` and its two actions on ``app``."""

    def token() -> str | None:
        secret = hooks.settings.daemon.admin_token
        return None if secret is None else secret.get_secret_value()

    async def page(_: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        try:
            data, status = {**await _page_data(hooks), "error": None}, 200
        except SyncError as exc:  # the database is down: say so, on the page
            data, status = {"error": str(exc), "actions": False}, 503
            data.update(now=hooks.clock(), owner=hooks.owner)
        html = _env.get_template("status.html").render(nonce=nonce, **data)
        return web.Response(
            text=html,
            status=status,
            content_type="text/html",
            headers={
                "Content-Security-Policy": (
                    f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; "
                    "base-uri 'none'"
                ),
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
                "Cache-Control": "no-store",
            },
        )

    async def requeue(request: web.Request) -> web.Response:
        refusal = _authorize(request, token())
        if refusal is not None:
            return refusal
        try:
            row_id = int(request.match_info["row_id"])
        except ValueError:
            return _json(400, "not an outbox row id")
        try:
            with translate_db_errors("requeueing a dead letter"):
                async with hooks.db.begin() as conn:
                    done = await requeue_dead_letter(conn, row_id, hooks.clock())
        except SyncError as exc:
            return _json(503, str(exc))
        if not done:
            return _json(404, f"outbox row {row_id} is not a dead letter")
        log.info("status page: dead letter requeued", row_id=row_id)
        return _json(200, f"outbox row {row_id} requeued: it is sent on the next push round")

    async def run_now(request: web.Request) -> web.Response:
        refusal = _authorize(request, token())
        if refusal is not None:
            return refusal
        vendor, stream = request.match_info["vendor"], request.match_info["stream"]
        if not hooks.run_now(vendor, stream):
            return _json(404, "no such scheduled stream")
        log.info("status page: run requested", vendor=vendor, stream=stream)
        return _json(202, f"{vendor} {stream}: run requested (skipped if one is running)")

    app.router.add_get("/", page)
    app.router.add_post("/actions/requeue/{row_id}", requeue)
    app.router.add_post("/actions/run/{vendor}/{stream}", run_now)
