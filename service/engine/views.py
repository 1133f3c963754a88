"""``vendorsync views``: the staging view of every configured stream, with the fields its
connector declares (``db/views.py`` builds them)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from service.config import Settings
from service.connectors import connector_class
from service.db import translate_db_errors
from service.db.views import ViewInfo, refresh_views


def configured_streams(settings: Settings) -> list[tuple[str, str]]:
    """Every configured ``(connection, stream)``, enabled or not (its data may be staged)."""
    return [(v, s) for v, vs in settings.vendors.items() for s in vs.streams]


def declared_fields(settings: Settings) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
    out = {}
    for vendor, stream in configured_streams(settings):
        try:
            spec = connector_class(vendor).declared(stream)
        except KeyError:  # a connection of no known connector: fields as seen
            continue
        if spec is not None and spec.fields:
            out[(vendor, stream)] = spec.fields
    return out


async def create_views(engine: AsyncEngine, settings: Settings) -> list[ViewInfo]:
    """One transaction: the views of every configured stream (``vendorsync views``)."""
    with translate_db_errors("creating the staging views"):
        async with engine.begin() as conn:
            return await refresh_views(
                conn, configured_streams(settings), declared_fields(settings)
            )
