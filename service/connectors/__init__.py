"""The connector registry: vendor id → connector class."""

from __future__ import annotations

from service.connectors.aimsio import AimsioConnector
from service.connectors.aqua import AquaConnector
from service.connectors.base import Connector, PushOutcome, StreamContext, StreamSpec

# One line per vendor.
REGISTRY: dict[str, type[Connector]] = {
    "aimsio": AimsioConnector,
    "aqua": AquaConnector,
}


def register(cls: type[Connector]) -> type[Connector]:
    REGISTRY[cls.vendor] = cls
    return cls


def connector_class(vendor: str) -> type[Connector]:
    try:
        return REGISTRY[vendor]
    except KeyError:
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise KeyError(f"no connector for vendor {vendor!r} (available: {known})") from None


__all__ = [
    "REGISTRY",
    "Connector",
    "PushOutcome",
    "StreamContext",
    "StreamSpec",
    "connector_class",
    "register",
]
