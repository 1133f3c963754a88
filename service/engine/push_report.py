"""What one push round did: per-row outcomes in one vocabulary, and the exit-code rule."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum


class PushOutcomeKind(StrEnum):
    """What happened to one outbox row in this round (or would, in a dry run)."""

    SENT = "sent"  # the vendor accepted it
    SKIPPED = "skipped"  # equal to the last payload the vendor accepted
    SUPERSEDED = "superseded"  # a newer row for the same key exists; never sent
    REJECTED = "rejected"  # the vendor refused it (final)
    INVALID = "invalid"  # failed local validation (final)
    DEAD = "dead"  # dead-lettered: out of attempts, a fatal vendor error, or no connector
    RETRY = "retry"  # transient failure: pending again after a backoff
    ERROR = "error"  # an unexpected exception (a bug): pending again, never dead-lettered
    PAUSED = "paused"  # the vendor refused our credentials: pending, no attempt spent
    DEFERRED = "deferred"  # the vendor is disabled or another process holds its lease
    WOULD_SEND = "would-send"  # dry run
    WOULD_ENQUEUE = "would-enqueue"  # dry run: a mapping rule would add this row


# Outcomes after which nothing is left to do for the row; any other one fails the round.
DONE = frozenset(
    {
        PushOutcomeKind.SENT,
        PushOutcomeKind.SKIPPED,
        PushOutcomeKind.SUPERSEDED,
        PushOutcomeKind.WOULD_SEND,
        PushOutcomeKind.WOULD_ENQUEUE,
    }
)


@dataclass(slots=True)
class RowOutcome:
    vendor: str
    entity: str
    record_key: str
    status: PushOutcomeKind
    detail: str | None = None


@dataclass(slots=True)
class PushReport:
    outcomes: list[RowOutcome] = field(default_factory=list)
    enqueued_by_mappings: int = 0  # in a dry run: rows the rules would enqueue
    requests: int = 0
    dry_run: bool = False
    auth_failures: dict[str, str] = field(default_factory=dict)  # vendor → error
    bugs: int = 0  # batches hit by an unexpected exception

    def counts(self) -> dict[tuple[str, str], dict[str, int]]:
        out: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for o in self.outcomes:
            out[(o.vendor, o.entity)][str(o.status)] += 1
        return {k: dict(v) for k, v in out.items()}

    @property
    def exit_code(self) -> int:
        """0 when every due row ended sent, skipped or superseded (or nothing was due);
        1 when any was rejected, invalid, dead-lettered, left for retry, hit a bug, paused
        by an auth failure, or deferred (vendor disabled or its lease held elsewhere)."""
        failed = self.auth_failures or any(o.status not in DONE for o in self.outcomes)
        return 1 if failed else 0

    def problem(self) -> str | None:
        """One line on what went wrong, or None when ``exit_code`` is 0."""
        if not self.exit_code:
            return None
        paused: dict[str, int] = defaultdict(int)
        bad: dict[str, int] = defaultdict(int)
        for o in self.outcomes:
            if o.status == PushOutcomeKind.PAUSED:
                paused[o.vendor] += 1
            elif o.status not in DONE:
                bad[str(o.status)] += 1
        parts = [
            f"{vendor}: authentication failed ({why}); its push is paused, "
            f"{paused[vendor]} row(s) left pending: check vendors.{vendor}.auth"
            for vendor, why in sorted(self.auth_failures.items())
        ]
        if bad:
            verb = "would not send" if self.dry_run else "not sent"
            parts.append(
                f"{sum(bad.values())} row(s) {verb}: "
                + ", ".join(f"{kind} {n}" for kind, n in sorted(bad.items()))
            )
        if self.bugs:
            parts.append(f"{self.bugs} batch(es) hit an unexpected error (see the log)")
        return "push incomplete: " + "; ".join(parts)
