"""What a connector is: declared streams plus a pull (and optionally push) per vendor.

A connector holds no database handle. The engine hands it a :class:`StreamContext` with
the saved checkpoint and a read-only view of what is staged; the connector yields
:class:`~service.models.Batch` objects, each committed together with its new state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from service.config import VendorSettings
from service.http import ApiKeyAuth, Auth, BasicAuth, VendorClient
from service.models import JSON, Batch


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    key_field: str
    cursor_field: str | None = None
    description: str = ""


@dataclass(slots=True)
class StreamContext:
    """Everything a connector may know about the run it serves."""

    vendor: str
    stream: str
    state: JSON | None
    batch_size: int
    full: bool = False  # ignore the checkpoint and what is staged; re-read everything
    since: datetime | None = None  # re-read from this point instead of the checkpoint
    staged_cursors: Callable[[], Awaitable[dict[str, str | None]]] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    async def cursors(self) -> dict[str, str | None]:
        """Key → cursor of the live staged rows (empty on a ``--full`` run)."""
        if self.full or self.staged_cursors is None:
            return {}
        return await self.staged_cursors()


PushStatus = Literal["created", "edited", "accepted", "rejected", "retry"]


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """The vendor's verdict on one pushed row."""

    record_key: str
    status: PushStatus
    message: str | None = None


class Connector:
    """Base class: subclasses declare ``vendor`` and ``stream_specs`` and implement ``pull``."""

    vendor: ClassVar[str]
    stream_specs: ClassVar[tuple[StreamSpec, ...]] = ()
    push_entities: ClassVar[tuple[str, ...]] = ()
    # How long the vendor may queue a call before working on it (then it times the call
    # out). A call we abandon holds its parallel slot until ``timeout_s`` plus this after
    # it was sent, unless the connection configures ``vendor_timeout_s``.
    vendor_queue_timeout_s: ClassVar[float] = 0.0

    def __init__(self, settings: VendorSettings, client: VendorClient) -> None:
        self.settings = settings
        self.client = client

    @classmethod
    def known_streams(cls) -> list[str]:
        return [s.name for s in cls.stream_specs]

    def spec(self, stream: str) -> StreamSpec:
        for s in self.stream_specs:
            if s.name.lower() == stream.lower():
                return s
        raise KeyError(stream)

    def make_auth(self) -> Auth | None:
        """The auth hook for this vendor's calls; connectors with a login flow override it."""
        auth = self.settings.auth
        if auth.kind == "basic":
            assert auth.username is not None
            assert auth.password is not None
            return BasicAuth(auth.username, auth.password.get_secret_value())
        if auth.kind == "apikey":
            assert auth.api_key is not None
            return ApiKeyAuth("apikey", auth.api_key.get_secret_value())
        if auth.kind == "none":
            return None
        raise NotImplementedError(f"{self.vendor}: auth kind {auth.kind!r} needs a login flow")

    def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
        raise NotImplementedError

    async def push(self, entity: str, rows: list[tuple[str, JSON]]) -> list[PushOutcome]:
        raise NotImplementedError(f"{self.vendor} does not accept pushes")

    @classmethod
    def validate_push_row(cls, entity: str, payload: JSON) -> str | None:
        """A reason the row cannot be sent, or None. Pure; checked before any request."""
        return None

    @classmethod
    def push_key(cls, entity: str, payload: JSON) -> str | None:
        """The natural key of a row to push (how the vendor matches it), if it has one."""
        return None
