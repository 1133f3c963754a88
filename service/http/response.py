"""What a request hands back: a buffered ``Response`` or a bounded-memory ``StreamResponse``."""

from __future__ import annotations

import json as jsonlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import orjson

from service.errors import ParseError, VendorError
from service.http.translate import FOREIGN_ERRORS, body_excerpt, redact_url

_UNSET: Any = object()
T = TypeVar("T")
# A streamed line longer than aiohttp's buffer raises ValueError.
_READ_ERRORS: tuple[type[BaseException], ...] = (*FOREIGN_ERRORS, ValueError)


def _loads(body: bytes) -> Any:
    """orjson first (a 250 KB page decodes several times faster, which is what lets a
    client keep up with Amilia's 100 pages/s); the standard library for what orjson
    refuses but JSON allows (integers beyond 64 bits), so results never differ."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return jsonlib.loads(body)


class Response:
    """A complete HTTP response: status, headers, final URL and the body bytes."""

    __slots__ = ("_json", "body", "headers", "status", "url", "vendor")

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        url: str,
        body: bytes,
        *,
        vendor: str | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.url = url
        self.body = body
        self.vendor = vendor
        self._json: Any = _UNSET

    def __repr__(self) -> str:
        return f"<Response {self.status} {redact_url(self.url)} {len(self.body)} bytes>"

    def text(self, encoding: str = "utf-8") -> str:
        return self.body.decode(encoding, "replace")

    def json(self) -> Any:
        """The body parsed as JSON; ``ParseError`` (with a short excerpt) when it is not."""
        if self._json is _UNSET:
            try:
                self._json = _loads(self.body)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                safe = redact_url(self.url)
                raise ParseError(
                    f"invalid JSON from {safe}: {exc.__class__.__name__} at "
                    f"{getattr(exc, 'pos', '?')}: {body_excerpt(self.body) or '<empty>'}",
                    vendor=self.vendor,
                    url=safe,
                ) from exc
        return self._json


class StreamContent:
    """Reads a streamed body in bounded memory; wire errors arrive as ``TransportError``.

    The first chunk was read before the response was handed out (so a failure there
    could still be retried); it is served first.
    """

    def __init__(
        self,
        reader: aiohttp.StreamReader,
        prefix: bytes,
        translate: Callable[[BaseException], VendorError],
    ) -> None:
        self._reader = reader
        self._prefix = prefix
        self._translate = translate
        self.bytes_read = 0

    async def _guard(self, op: Awaitable[T]) -> T:
        try:
            return await op
        except _READ_ERRORS as exc:
            raise self._translate(exc) from exc

    def _count(self, data: bytes) -> bytes:
        self.bytes_read += len(data)
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (``b""`` at the end); ``n=-1`` reads everything that is left."""
        if self._prefix:
            if n < 0:
                head, self._prefix = self._prefix, b""
                return self._count(head + await self._guard(self._reader.read()))
            head, self._prefix = self._prefix[:n], self._prefix[n:]
            return self._count(head)
        return self._count(await self._guard(self._reader.read(n)))

    async def readline(self) -> bytes:
        """One line including its ``\\n`` (the last may lack it); ``b""`` at the end."""
        if self._prefix:
            cut = self._prefix.find(b"\n")
            if cut >= 0:
                line, self._prefix = self._prefix[: cut + 1], self._prefix[cut + 1 :]
                return self._count(line)
            head, self._prefix = self._prefix, b""
            return self._count(head + await self._guard(self._reader.readline()))
        return self._count(await self._guard(self._reader.readline()))

    async def iter_chunks(self, size: int = 64 * 1024) -> AsyncIterator[bytes]:
        while chunk := await self.read(size):
            yield chunk

    async def iter_lines(self) -> AsyncIterator[bytes]:
        while line := await self.readline():
            yield line

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.iter_lines()


class StreamResponse:
    """A response whose body is read incrementally while the limiter slot is held."""

    def __init__(
        self,
        status: int,
        headers: Mapping[str, str],
        url: str,
        content: StreamContent,
        *,
        vendor: str | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.url = url
        self.content = content
        self.vendor = vendor

    def __repr__(self) -> str:
        return f"<StreamResponse {self.status} {redact_url(self.url)}>"

    def iter_chunks(self, size: int = 64 * 1024) -> AsyncIterator[bytes]:
        return self.content.iter_chunks(size)

    async def read(self) -> bytes:
        """The whole remaining body (unbounded; for small streamed answers only)."""
        return await self.content.read()
