"""VendorClient: one vendor's requests through the shared session.

Every attempt (first send, retries, and logins made through ``request(auth=False)``)
runs inside the vendor's ``limiter.slot()``. Auth headers are obtained before taking
the slot, so a login sharing the limiter cannot deadlock against its own caller.

An attempt we abandon once sent (our timeout, a cancellation, a stream left before its
end) is still running at the vendor: its limiter slot stays taken until
``vendor_timeout_s`` after the send. One the vendor ended (reset, disconnect, truncated
body) or that never connected frees its slot at once.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from service.errors import (
    AuthError,
    ParseError,
    RateLimited,
    RetriableError,
    ServerError,
    VendorError,
)
from service.http.auth import Auth
from service.http.limiter import Grant, VendorLimiter
from service.http.metrics import RequestStats
from service.http.response import Response, StreamContent, StreamResponse
from service.http.retry import (
    OVERLOAD_STATUSES,
    RetryPolicy,
    backoff_s,
    parse_retry_after,
    should_retry,
)
from service.http.translate import (
    EXCERPT_CHARS,
    FOREIGN_ERRORS,
    body_excerpt,
    redact_url,
    status_error,
    translate_error,
)

if TYPE_CHECKING:
    from service.http.client import HttpClient

log = structlog.get_logger("service.http")

DEFAULT_EXPECTED = (200, 201, 202, 204)
STREAM_CHUNK = 64 * 1024

Params = Mapping[str, Any] | Sequence[tuple[str, Any]]


@dataclass(slots=True)
class _Exchange:
    status: int
    headers: CIMultiDictProxy[str]
    url: str
    body: bytes  # the whole body, or for a stream the first chunk / an error excerpt
    sent_at: float | None = None
    grant: Grant | None = None
    reader: aiohttp.StreamReader | None = None
    response: Response | None = None  # built (and JSON-checked) by _check


def ended_by_us(exc: BaseException) -> bool:
    """Whether an exchange that ended with ``exc`` may still be running at the vendor.

    Timeouts and anything not from the wire (a cancellation, the caller's own error) mean
    we dropped the connection; a reset, disconnect or truncated body means the vendor
    ended it, and a connect timeout means it never reached the vendor.
    """
    cause = exc.__cause__ if isinstance(exc, VendorError) and exc.__cause__ else exc
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return False
    if isinstance(cause, TimeoutError):
        return True
    return not isinstance(cause, FOREIGN_ERRORS)


class VendorClient:
    """One vendor's view of the shared session: base URL, limiter, auth, retry policy.

    ``vendor_timeout_s`` (default ``timeout_s``): how long after sending the vendor may
    keep working on an attempt we abandoned; its parallel slot stays taken until then.
    """

    def __init__(
        self,
        owner: HttpClient,
        vendor: str,
        base_url: URL,
        *,
        limiter: VendorLimiter,
        auth: Auth | None,
        retry: RetryPolicy,
        timeout_s: float,
        connect_timeout_s: float,
        default_headers: dict[str, str],
        vendor_timeout_s: float | None = None,
        tls: ssl.SSLContext | bool = True,
    ) -> None:
        self._owner = owner
        self.tls = tls
        # Seconds until the vendor's current blackout window ends (0.0: none); set by the
        # runtime from config. A retriable failure inside a window waits it out.
        self.blackout: Callable[[datetime], float] | None = None
        self.vendor = vendor
        self.base_url = base_url
        self.limiter = limiter
        self.auth = auth
        self.retry = retry
        self.default_headers = default_headers
        self.vendor_timeout_s = vendor_timeout_s if vendor_timeout_s is not None else timeout_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        # Large downloads: no total bound, but every socket read must make progress.
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=timeout_s
        )
        self.stats = RequestStats(vendor, clock=owner.clock, metrics=owner.metrics)

    def __repr__(self) -> str:
        return f"VendorClient({self.vendor!r}, {redact_url(self.base_url)!r}, auth={self.auth!r})"

    def url_for(self, path_or_url: str, params: Params | None = None) -> URL:
        """An absolute URL as given, or a path appended to ``base_url`` (its path kept)."""
        given = URL(path_or_url)
        if given.is_absolute():
            url = given
        elif path_or_url:
            url = URL(str(self.base_url).rstrip("/") + "/" + path_or_url.lstrip("/"))
        else:
            url = self.base_url
        return url.extend_query(params) if params else url

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Params | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        expected: Sequence[int] = DEFAULT_EXPECTED,
        expect_json: bool = False,
    ) -> Response:
        """Send one logical request with retries; the body is read completely.

        Statuses in ``expected`` are returned (even 4xx ones you list); others raise
        the classified error once retries are exhausted. With ``expect_json`` a body that
        is not valid JSON is retried like a transport fault, then raises ``ParseError``.
        ``data`` is re-sent on retries, so pass bytes/str/dict, not a one-shot stream.
        """
        url = self.url_for(path_or_url, params)
        ex, _ = await self._with_retries(
            method.upper(),
            url,
            headers,
            auth,
            tuple(expected),
            expect_json,
            streaming=False,
            send={"json": json, "data": data},
        )
        return ex.response or self._response(ex)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Params | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        expected: Sequence[int] = (200,),
        chunk_size: int = STREAM_CHUNK,
    ) -> AsyncIterator[StreamResponse]:
        """Open a response for incremental reading; the limiter slot is held until exit.

        Retries happen only until the first chunk has arrived (before anything is
        handed out); a failure while the caller reads raises ``TransportError``.
        """
        url = self.url_for(path_or_url, params)
        ex, stack = await self._with_retries(
            method.upper(),
            url,
            headers,
            auth,
            tuple(expected),
            False,
            streaming=True,
            send={"json": json, "data": data},
            chunk_size=chunk_size,
        )
        async with stack:
            assert ex.reader is not None
            content = StreamContent(ex.reader, ex.body, partial(self._stream_failed, ex))
            try:
                yield StreamResponse(ex.status, ex.headers, ex.url, content, vendor=self.vendor)
            except BaseException as exc:
                if not ex.reader.at_eof() and ended_by_us(exc):
                    self._abandon(ex)
                raise
            else:
                if not ex.reader.at_eof():  # left early: we close, the vendor may go on
                    self._abandon(ex)
            finally:
                self._finished(ex, status=ex.status)

    # internals ---------------------------------------------------------------------------
    def _response(self, ex: _Exchange) -> Response:
        return Response(ex.status, ex.headers, ex.url, ex.body, vendor=self.vendor)

    def _finished(self, ex: _Exchange, *, status: int | None = None, error: str = "") -> None:
        assert ex.sent_at is not None
        latency_s = self._owner.clock() - ex.sent_at
        self.stats.record_outcome(latency_s=latency_s, status=status, error=error or None)

    def _abandon(self, ex: _Exchange) -> None:
        """Keep the attempt's parallel slot until the vendor would have ended it."""
        grant = ex.grant
        if grant is None or grant.hold_s is not None:
            return
        if grant.sent_at is None and self._owner.traces_sends:
            return  # its headers never left: the vendor has nothing to work on
        grant.abandon(self.vendor_timeout_s)
        self.stats.record_abandoned()

    def _blackout_wait(self, ex: _Exchange) -> tuple[float, bool]:
        """Seconds left in the current blackout window, and whether ``ex`` left inside one."""
        if self.blackout is None:
            return 0.0, False
        now = self._owner.now()
        sent_inside = False
        if ex.sent_at is not None:
            ago_s = max(0.0, self._owner.clock() - ex.sent_at)
            sent_inside = self.blackout(now - timedelta(seconds=ago_s)) > 0
        return self.blackout(now), sent_inside

    def _stream_failed(self, ex: _Exchange, exc: BaseException) -> VendorError:
        self.stats.errors[type(exc).__name__] += 1
        return translate_error(exc, vendor=self.vendor, url=ex.url)

    async def _attempt(
        self,
        stack: AsyncExitStack,
        ex: _Exchange,
        method: str,
        url: URL,
        headers: dict[str, str],
        send: dict[str, Any],
        *,
        streaming: bool,
        expected: tuple[int, ...],
        chunk_size: int,
    ) -> None:
        """One send inside a limiter slot, filling in ``ex``. The slot (and, for streams,
        the response) stays on ``stack``; aiohttp errors leave here translated."""
        grant = await stack.enter_async_context(self.limiter.slot())
        ex.grant = grant
        ex.sent_at = self._owner.clock()
        in_flight = self.limiter.in_flight + self.limiter.held
        self.stats.record_send(wait_s=grant.wait_s, in_flight=in_flight)
        try:
            resp = await stack.enter_async_context(
                self._owner.session.request(
                    method,
                    url,
                    headers=headers,
                    timeout=self.stream_timeout if streaming else self.timeout,
                    trace_request_ctx=grant,
                    ssl=self.tls,
                    **send,
                )
            )
            ex.status, ex.headers, ex.url = resp.status, resp.headers, str(resp.url)
            if not streaming:
                ex.body = await resp.read()
            elif resp.status in expected:
                ex.body = await resp.content.read(chunk_size)
                ex.reader = resp.content
            else:
                ex.body = await resp.content.read(EXCERPT_CHARS * 4)
        except FOREIGN_ERRORS as exc:
            if ended_by_us(exc):
                self._abandon(ex)
            self._finished(ex, error=type(exc).__name__)
            raise translate_error(exc, vendor=self.vendor, url=ex.url) from exc
        except BaseException:
            self._abandon(ex)  # cancelled mid-exchange: we drop the connection
            raise
        if not (streaming and ex.reader is not None):
            self._finished(ex, status=ex.status)

    def _check(
        self, ex: _Exchange, method: str, expected: tuple[int, ...], expect_json: bool
    ) -> tuple[VendorError | None, float | None, bool]:
        """The error an exchange amounts to (None when fine), any Retry-After, and
        whether it is a malformed JSON body (retried when ``expect_json``)."""
        if ex.status in expected:
            if expect_json:
                ex.response = self._response(ex)
                try:
                    ex.response.json()
                except ParseError as bad:
                    self.stats.errors["ParseError"] += 1
                    return bad, None, True
            return None, None, False
        retry_after = parse_retry_after(ex.headers.get("Retry-After"), self._owner.now())
        err = status_error(
            ex.status,
            method=method,
            vendor=self.vendor,
            url=redact_url(ex.url),
            body=ex.body,
            retry_after_s=retry_after,
        )
        return err, retry_after, False

    async def _with_retries(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str] | None,
        use_auth: bool,
        expected: tuple[int, ...],
        expect_json: bool,
        *,
        streaming: bool,
        send: dict[str, Any],
        chunk_size: int = STREAM_CHUNK,
    ) -> tuple[_Exchange, AsyncExitStack]:
        """The retry loop. Returns the good exchange and, for streams, the open stack."""
        policy, clock = self.retry, self._owner.clock
        auth = self.auth if use_auth else None
        attempt = 0  # failed attempts counted against the policy
        refreshed = False
        first_sent: float | None = None
        while True:
            attempt += 1
            sent_headers = await auth.headers() if auth is not None else {}
            all_headers = {**self.default_headers, **(headers or {}), **sent_headers}
            stack = AsyncExitStack()
            retry_after: float | None = None
            malformed = False
            ex = _Exchange(0, CIMultiDictProxy(CIMultiDict()), str(url), b"")
            try:
                await self._attempt(
                    stack,
                    ex,
                    method,
                    url,
                    all_headers,
                    send,
                    streaming=streaming,
                    expected=expected,
                    chunk_size=chunk_size,
                )
                err, retry_after, malformed = self._check(ex, method, expected, expect_json)
            except VendorError as exc:
                err = exc
            except BaseException:
                await stack.aclose()
                raise
            if err is None:
                if not streaming:
                    await stack.aclose()
                return ex, stack
            await stack.aclose()
            if first_sent is None:  # the elapsed budget starts at the first send
                first_sent = ex.sent_at if ex.sent_at is not None else clock()

            if isinstance(err, AuthError) and err.status == 401 and auth is not None:
                if not refreshed and await auth.on_unauthorized(sent_headers):
                    refreshed = True
                    attempt -= 1  # a token refresh is not a failure of the request
                    continue
                raise err

            wait_s, sent_inside = self._blackout_wait(ex)
            if (wait_s > 0 or sent_inside) and isinstance(err, RetriableError):
                # A known outage: wait for its end (the whole vendor) instead of spending
                # retries, and start the retry budget afresh afterwards. A call sent inside
                # the window whose failure arrives after it ended is retried the same way.
                self.limiter.pause(wait_s)
                log.info("http.blackout", vendor=self.vendor, wait_s=round(wait_s, 1))
                attempt -= 1
                first_sent = None
                continue

            overload = isinstance(err, RateLimited) or (
                isinstance(err, ServerError) and err.status in OVERLOAD_STATUSES
            )
            delay = (
                retry_after
                if retry_after is not None
                else backoff_s(policy, attempt, self._owner.rng)
            )
            if overload:
                # The whole vendor waits: every task's next slot, not just this one.
                self.limiter.pause(min(delay, policy.max_elapsed_s))
            retry_on: tuple[type[BaseException], ...] = (
                (RetriableError, ParseError) if malformed else (RetriableError,)
            )
            elapsed = clock() - first_sent
            if not should_retry(
                err, attempt, elapsed, policy, next_delay_s=delay, retry_on=retry_on
            ):
                log.warning(
                    "http.give_up",
                    vendor=self.vendor,
                    method=method,
                    url=redact_url(url),
                    attempts=attempt,
                    elapsed_s=round(elapsed, 3),
                    error=str(err),
                )
                raise err
            self.stats.record_retry()
            log.info(
                "http.retry",
                vendor=self.vendor,
                method=method,
                url=redact_url(url),
                attempt=attempt,
                delay_s=round(delay, 3),
                paused=overload,
                error=type(err).__name__,
                detail=body_excerpt(str(err), 120),
            )
            if not overload:
                await self._owner.sleep(delay)
