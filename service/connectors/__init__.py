"""The connector registry: vendor id → connector class."""

from __future__ import annotations

from service.connectors.aimms import AimmsConnector
from service.connectors.aimsio import AimsioConnector
from service.connectors.amilia import AmiliaConnector
from service.connectors.aqua import AquaConnector
from service.connectors.base import Connector, PushOutcome, StreamContext, StreamSpec
from service.connectors.imis import ImisConnector

# One line per vendor.
REGISTRY: dict[str, type[Connector]] = {
    "aimsio": AimsioConnector,
    "aimms": AimmsConnector,
    "imis": ImisConnector,
    "amilia": AmiliaConnector,
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
