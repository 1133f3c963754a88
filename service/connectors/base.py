"""What a connector is: declared streams plus a pull (and optionally push) per vendor.

A connector holds no database handle. The engine hands it a :class:`StreamContext` with
the saved checkpoint and a read-only view of what is staged; the connector yields
:class:`~service.models.Batch` objects, each committed together with its new state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from service.config import VendorSettings
from service.http import VendorClient
from service.models import JSON, Batch


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """A stream as its connector declares it (or builds it from a configured stream).

    ``key_field`` and ``cursor_field`` name payload fields: dotted paths, with ``a|b``
    meaning the first present of several (Aimsio objects carry a ``guid`` or an ``id``).
    """

    name: str
    key_field: str
    cursor_field: str | None = None
    description: str = ""
    # A periodic full re-read for entities whose content changes without the cursor
    # moving (they embed other entities); config `full_every` overrides it.
    full_every_s: float | None = None
    # (payload field, integer | number | boolean | text) pairs its staging view always has,
    # even before anything is staged; fields seen in staged payloads are added to them.
    fields: tuple[tuple[str, str], ...] = ()

    def key_of(self, payload: Any) -> str | None:
        """The record key the payload carries, or None when it has none."""
        value = field_value(payload, self.key_field)
        return None if value in (None, "") else str(value)

    def cursor_of(self, payload: Any) -> str | None:
        if self.cursor_field is None:
            return None
        value = field_value(payload, self.cursor_field)
        return None if value is None else str(value)


def field_value(payload: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``a|b``: the first of several that is present)."""
    for alternative in path.split("|"):
        value = payload
        for part in alternative.split("."):
            value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                break
        if value is not None:
            return value
    return None


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
    # Key → payload of the live rows of any (vendor, stream): inputs built from staged data
    # (an AIMMS task body). Read in full, so for modest streams only.
    staged_rows: Callable[[str, str], Awaitable[dict[str, JSON]]] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # Progress hooks: how many records this run will fetch, once the connector knows, and
    # each record as it arrives (for live progress; nothing depends on them).
    expect: Callable[[int], None] = field(default=lambda _n: None)
    advance: Callable[[int], None] = field(default=lambda _n: None)
    # A remark for the run's record that is not an error (e.g. "new export job: the old
    # one was purged"); kept in ``sync_run.note`` and shown by ``resync``.
    note: Callable[[str], None] = field(default=lambda _text: None)
    # Time as parameters: tests drive connectors on fake time, never real sleeps.
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

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
    """Base class: subclasses declare ``vendor`` and ``stream_specs`` and implement ``pull``.

    A connector whose vendor has user-defined sources (Aqua views, iMIS IQA queries, AIMMS
    task exchanges) sets ``stream_options`` to a pydantic model: any stream name is then
    accepted, its ``options`` validated by that model at config time (a bad definition is
    a one-line error naming the key), and ``configured_spec`` turns it into a spec.
    """

    vendor: ClassVar[str]
    stream_specs: ClassVar[tuple[StreamSpec, ...]] = ()
    push_entities: ClassVar[tuple[str, ...]] = ()
    stream_options: ClassVar[type[BaseModel] | None] = None
    # The model of ``[vendors.<name>] options``, if the connector has one (check-config
    # validates it, so a bad value fails before any run).
    connection_options: ClassVar[type[BaseModel] | None] = None
    # The vendor's login details that config need not repeat (token path, header, …):
    # the runtime builds the auth kind the config names from these plus the config.
    auth_defaults: ClassVar[dict[str, Any]] = {}
    # Daily UTC windows when the vendor is known to be down (config `blackouts` overrides).
    default_blackouts: ClassVar[tuple[str, ...]] = ()
    # How long the vendor may queue a call before working on it (then it times the call
    # out). A call we abandon holds its parallel slot until ``timeout_s`` plus this after
    # it was sent, unless the connection configures ``vendor_timeout_s``.
    vendor_queue_timeout_s: ClassVar[float] = 0.0
    # The limit group connections share unless they name one (None: each its own). For a
    # vendor that counts limits per client IP rather than per account.
    default_limit_group: ClassVar[str | None] = None

    def __init__(self, settings: VendorSettings, client: VendorClient) -> None:
        self.settings = settings
        self.client = client

    @property
    def connection(self) -> str:
        """The account's name (its config table); ``vendor`` is the connector's."""
        return self.client.vendor

    @classmethod
    def known_streams(cls) -> list[str]:
        return [s.name for s in cls.stream_specs]

    @classmethod
    def declared(cls, stream: str) -> StreamSpec | None:
        for s in cls.stream_specs:
            if s.name.lower() == stream.lower():
                return s
        return None

    @classmethod
    def check_stream(cls, stream: str, options: dict[str, Any]) -> BaseModel | None:
        """Validate a configured stream; raises ``KeyError`` for a stream this connector
        does not serve and pydantic's ``ValidationError`` for bad options."""
        if cls.declared(stream) is not None:
            return None
        if cls.stream_options is None:
            raise KeyError(stream)
        return cls.stream_options.model_validate(options)

    @classmethod
    def configured_spec(cls, stream: str, options: BaseModel) -> StreamSpec:
        """The spec of a user-configured stream (connectors with ``stream_options``)."""
        raise NotImplementedError(f"{cls.vendor} has no configured streams")

    def spec(self, stream: str) -> StreamSpec:
        found = self.declared(stream)
        if found is not None:
            return found
        if self.stream_options is None:
            raise KeyError(stream)
        configured = self.settings.streams.get(stream)
        options = self.check_stream(stream, configured.options if configured else {})
        assert options is not None
        return self.configured_spec(stream, options)

    def pull(self, ctx: StreamContext) -> AsyncIterator[Batch]:
        raise NotImplementedError

    async def push(self, entity: str, rows: list[tuple[str, JSON]]) -> list[PushOutcome]:
        raise NotImplementedError(f"{self.connection} does not accept pushes")

    @classmethod
    def validate_push_row(cls, entity: str, payload: JSON) -> str | None:
        """A reason the row cannot be sent, or None. Pure; checked before any request."""
        return None

    @classmethod
    def push_key(cls, entity: str, payload: JSON) -> str | None:
        """The natural key of a row to push (how the vendor matches it), if it has one."""
        return None
