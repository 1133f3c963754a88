"""One exception tree, grouped by what the caller should do::

SyncError                      root; only cli and daemon catch it broadly
├── ConfigError                bad settings → one-line message, exit 2, never retried
├── VendorError                .vendor .stream .url
│   ├── RetriableError         back off and retry; the run stays resumable
│   │   ├── TransportError     aiohttp errors / timeouts, translated in service.http
│   │   ├── RateLimited        429 / overload; .retry_after_s
│   │   └── ServerError        5xx, maintenance windows
│   ├── FatalError             stop the stream, mark the run failed
│   │   ├── AuthError          401/403, token refresh failed
│   │   ├── RequestRejected    other 4xx; .status, a short body excerpt (no secrets)
│   │   ├── ParseError         unexpected payload shape; pagination loop
│   │   └── TlsError           the vendor's certificate is not trusted (never retried)
│   └── SkippableError         count it in the run, continue
│       └── InvalidRecord      .record_key
└── StagingError               database errors translated in service.db
    ├── SchemaBehind           migrations not at head
    └── LeaseHeld              another process runs this stream now
"""

from __future__ import annotations


class SyncError(Exception):
    """Root of every error vendorsync raises on purpose."""


class ConfigError(SyncError):
    """Invalid settings; ``key`` names the offending setting."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


class InputError(SyncError):
    """Bad user input such as a malformed rows file; nothing is applied."""


class VendorError(SyncError):
    def __init__(
        self,
        message: str,
        *,
        vendor: str | None = None,
        stream: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.vendor = vendor
        self.stream = stream
        self.url = url

    def __str__(self) -> str:
        where = " ".join(p for p in (self.vendor, self.stream) if p)
        base = super().__str__()
        return f"[{where}] {base}" if where else base


class RetriableError(VendorError):
    """Transient: back off and try again."""


class TransportError(RetriableError):
    """Connection errors, resets, timeouts, truncated bodies."""


class RateLimited(RetriableError):
    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: str | None):
        super().__init__(message, **kw)
        self.retry_after_s = retry_after_s


class ServerError(RetriableError):
    def __init__(self, message: str, *, status: int = 500, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.status = status


class FatalError(VendorError):
    """Stop the stream and mark the run failed."""


class AuthError(FatalError):
    def __init__(self, message: str, *, status: int | None = None, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.status = status


class RequestRejected(FatalError):
    def __init__(self, message: str, *, status: int, body: str = "", **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.status = status
        self.body = body


class ParseError(FatalError):
    """The vendor answered with a shape we do not understand."""


class TlsError(FatalError):
    """The vendor's TLS certificate failed verification: retrying cannot fix it."""


class SkippableError(VendorError):
    """Count it in the run and continue."""


class InvalidRecord(SkippableError):
    def __init__(self, message: str, *, record_key: str, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.record_key = record_key


class StagingError(SyncError):
    """Database errors, translated in service.db."""


class SchemaBehind(StagingError):
    """The staging schema is not at the latest migration."""


class LeaseHeld(StagingError):
    def __init__(self, name: str, owner: str, since: str, expires: str | None = None) -> None:
        until = f"; its lease expires at {expires} unless renewed" if expires else ""
        super().__init__(f"{name} is already running (owner {owner}, since {since}{until})")
        self.name = name
        self.owner = owner
        self.since = since
        self.expires = expires


class LeaseLost(StagingError):
    """This process could not keep its lease (another took it, or it could not be renewed)."""
