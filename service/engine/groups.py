"""Limit groups: what a vendor counts its limits by.

Connections (``[vendors.<name>]`` tables) in one limit group share one limiter and one
lease, so one process drives the group at a time and its in-process limiter is the
group's true global limit. By default each connection is its own group (lease
``vendor:<connection>``, as before groups existed); ``limit_group = "<name>"``, or a
connector's ``default_limit_group`` (Amilia: 100 calls/s per client IP), makes several
share one (lease ``group:<name>``).
"""

from __future__ import annotations

from dataclasses import dataclass

from service.config import Settings
from service.connectors import REGISTRY
from service.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LimitGroup:
    name: str  # as shown (the connection's name for a group of its own)
    lease: str  # the lease row that says which process drives it
    connections: tuple[str, ...]  # enabled members
    max_parallel: int  # the strictest member's: the vendor counts the group as one
    rate_per_s: float


def group_name_of(settings: Settings, connection: str) -> str | None:
    """The shared group's name, or None when the connection is its own group."""
    vs = settings.vendor(connection)
    if vs.limit_group is not None:
        return vs.limit_group
    cls = REGISTRY.get(settings.connector_of(connection))
    return cls.default_limit_group if cls is not None else None


def lease_of(settings: Settings, connection: str) -> str:
    """The name of the lease that guards the connection's limit group."""
    shared = group_name_of(settings, connection)
    return f"vendor:{connection}" if shared is None else f"group:{shared}"


def limit_groups(settings: Settings) -> dict[str, LimitGroup]:
    """Every limit group with an enabled connection, by lease name (config order)."""
    members: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for name, vs in settings.vendors.items():
        if not vs.enabled:
            continue
        lease = lease_of(settings, name)
        members.setdefault(lease, []).append(name)
        names[lease] = group_name_of(settings, name) or name
    out = {}
    for lease, conns in members.items():
        vss = [settings.vendors[c] for c in conns]
        out[lease] = LimitGroup(
            names[lease],
            lease,
            tuple(conns),
            min(v.max_parallel for v in vss),
            min(v.rate_per_s for v in vss),
        )
    return out


def group_of(settings: Settings, connection: str) -> LimitGroup:
    lease = lease_of(settings, connection)
    found = limit_groups(settings).get(lease)
    if found is None:  # a disabled connection: a group of its own, never scheduled
        vs = settings.vendor(connection)
        return LimitGroup(connection, lease, (connection,), vs.max_parallel, vs.rate_per_s)
    return found


def group_problems(settings: Settings) -> list[ConfigError]:
    """A shared group whose connections use different connectors (whose limits differ)."""
    problems = []
    for group in limit_groups(settings).values():
        kinds = {settings.connector_of(c) for c in group.connections}
        if len(kinds) > 1:
            for c in group.connections:
                if settings.connector_of(c) != settings.connector_of(group.connections[0]):
                    problems.append(
                        ConfigError(
                            f"limit group {group.name!r} mixes connectors "
                            f"({', '.join(sorted(kinds))}); a group is one vendor's budget",
                            key=f"vendors.{c}.limit_group",
                        )
                    )
    return problems
