"""The boundary where aiohttp's exceptions and HTTP statuses become our error tree.

``translate_error`` is the only place an aiohttp exception is mapped; callers write
``raise translate_error(exc, ...) from exc``. URLs and body excerpts that end up in
messages pass through ``redact_url`` / ``body_excerpt`` first.
"""

from __future__ import annotations

import re

import aiohttp
from yarl import URL

from service.errors import (
    AuthError,
    ParseError,
    RateLimited,
    RequestRejected,
    ServerError,
    TlsError,
    TransportError,
    VendorError,
)
from service.http.retry import classify_status
from service.secrets import mask_url, redact_text

# Everything an exchange with aiohttp may raise on the wire.
FOREIGN_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError, OSError)

MASK = "***"
EXCERPT_CHARS = 200
_SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|key|sig|auth|session|credential|bearer", re.IGNORECASE
)


def redact_url(url: str | URL) -> str:
    """``url`` without userinfo and with secret-looking query values masked.

    The text goes through the one ``mask_url`` first: yarl misreads a password holding
    an unencoded ``@``, and part of it would otherwise survive.
    """
    try:
        u = URL(mask_url(str(url)))
    except ValueError:
        return "<invalid url>"
    if u.user is not None or u.password is not None:
        u = u.with_user(None)
    if u.query_string:
        u = u.with_query([(k, MASK if _SECRET_NAME.search(k) else v) for k, v in u.query.items()])
    return str(u)


def body_excerpt(body: bytes | str, limit: int = EXCERPT_CHARS) -> str:
    """A short, single-line, secret-masked excerpt of a response body for messages."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = " ".join(text[: limit * 4].split())
    text = redact_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_error(
    status: int,
    *,
    method: str,
    vendor: str | None,
    url: str,
    body: bytes | str = b"",
    retry_after_s: float | None = None,
) -> VendorError:
    """The error for a non-expected status (``url`` already redacted)."""
    excerpt = body_excerpt(body)
    msg = f"HTTP {status} on {method} {url}" + (f": {excerpt}" if excerpt else "")
    cls = classify_status(status)
    if cls is RateLimited:
        return RateLimited(msg, retry_after_s=retry_after_s, vendor=vendor, url=url)
    if cls is ServerError:
        return ServerError(msg, status=status, vendor=vendor, url=url)
    if cls is AuthError:
        return AuthError(msg, status=status, vendor=vendor, url=url)
    if cls is RequestRejected:
        return RequestRejected(msg, status=status, body=excerpt, vendor=vendor, url=url)
    if cls is TransportError:
        return TransportError(msg, vendor=vendor, url=url)
    return ParseError(f"unexpected HTTP {status} on {method} {url}", vendor=vendor, url=url)


def translate_error(exc: BaseException, *, vendor: str | None, url: str | URL) -> VendorError:
    """Map an aiohttp / socket / timeout exception to the error tree."""
    safe = redact_url(url)
    kind = type(exc).__name__
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TransportError(
            f"truncated or corrupt body from {safe} ({kind})", vendor=vendor, url=safe
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        reason = getattr(exc.certificate_error, "verify_message", None) or exc.certificate_error
        return TlsError(
            f"TLS certificate verification failed for {safe}: {reason} "
            "(trust a private CA with ca_file, or set tls_verify = false)",
            vendor=vendor,
            url=safe,
        )
    if isinstance(exc, aiohttp.TooManyRedirects):
        return ParseError(f"too many redirects from {safe}", vendor=vendor, url=safe)
    if isinstance(exc, aiohttp.ClientResponseError):
        # Its str() carries the raw URL; build the message ourselves.
        return status_error(exc.status, method="request", vendor=vendor, url=safe, body=exc.message)
    if isinstance(exc, TimeoutError):  # includes aiohttp's ServerTimeoutError
        return TransportError(f"timed out talking to {safe} ({kind})", vendor=vendor, url=safe)
    if isinstance(exc, ValueError):  # InvalidURL, or a streamed line over the buffer limit
        return ParseError(f"unusable URL or body from {safe} ({kind})", vendor=vendor, url=safe)
    detail = str(exc).replace(str(url), safe) if str(url) else str(exc)
    return TransportError(f"{kind} talking to {safe}: {detail}", vendor=vendor, url=safe)
