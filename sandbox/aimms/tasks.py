"""The PRO task queue, computed from clock time: no timers, no sleeping.

Tasks wait in one FIFO queue (ordered by the time they became eligible, then by creation) and
start when one of ``parallelism`` slots is free. A started task's whole timeline is fixed at
assignment: ``assigned`` → ``running`` after ``assigned_s`` → ``solving`` after ``running_s``
→ ``completed`` after ``solving_s`` (a failing task goes ``running`` → ``failed``; a stuck
one stays ``running`` and keeps its slot). ``advance(now)`` replays the queue up to ``now``,
so any read at any clock time sees exactly the state the vendor would show.

A task created with ``scheduleInterval`` is a *group*: every run shares the UUID and has a
``groupIndex``; run ``k + 1`` appears (queued, due one interval later) when run ``k`` is due.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

TERMINAL = frozenset({"completed", "failed"})
STATES = ("queued", "assigned", "running", "solving", "completed", "failed")


@dataclass(eq=False)  # identity equality: runs and groups refer to each other
class TaskGroup:
    id: str
    app_name: str
    app_version: str
    service: str
    body: bytes
    content_type: str
    hook: str | None
    scheduled: bool  # any of scheduleFor / scheduleIn / scheduleInterval was given
    interval_s: float | None
    interval_text: str | None
    owner: int = 0  # user entity id of the API key that created it
    runs: dict[int, Run] = field(default_factory=dict)
    stopped: bool = False  # no further runs of a series

    def last(self) -> Run | None:
        return self.runs[max(self.runs)] if self.runs else None


@dataclass(eq=False)
class Run:
    group: TaskGroup
    index: int
    seq: int  # global creation order: the FIFO tie-break
    created_at: float
    eligible_at: float
    fate: str  # "ok" | "fail" | "stuck"
    error_message: str | None = None
    history: list[tuple[str, float]] = field(default_factory=list)  # (state, since), in order
    assigned_at: float | None = None
    finished_at: float = math.inf  # when the slot frees; inf while unknown (or stuck)
    interrupt_solve: bool = False
    interrupted: bool = False  # the solve was cut short
    return_code: int | None = None
    response: tuple[bytes, str] | None = None  # (body, content type) once completed
    notified: int = 0  # history entries already sent to the state hook
    dequeued: bool = False  # deleted or ended while waiting: the queue skips it

    def state_at(self, t: float) -> str:
        times = [since for _, since in self.history]
        pos = bisect.bisect_right(times, t) - 1
        return self.history[max(pos, 0)][0]

    def phase_time(self, state: str) -> float | None:
        return next((since for s, since in self.history if s == state), None)


Fate = tuple[str, str | None]  # ("ok" | "fail" | "stuck", errorMessage)


@dataclass(frozen=True)
class Phases:
    assigned_s: float = 1.0
    running_s: float = 2.0
    solving_s: float = 2.0


class TaskQueue:
    def __init__(self, *, seed: int, phases: Phases, max_runs_per_group: int) -> None:
        self.seed = seed
        self.phases = phases
        self.max_runs_per_group = max_runs_per_group
        self.groups: dict[str, TaskGroup] = {}
        self._order: list[Run] = []  # every run ever created, in creation order
        self._seq = 0
        self._waiting: list[tuple[float, int, Run]] = []  # heap; removed runs are skipped
        self._active: list[Run] = []  # runs holding a slot
        self._unfinished: list[Run] = []  # assigned runs whose end is not yet applied
        self._series: list[TaskGroup] = []  # groups that may still spawn runs
        self._hooked: list[Run] = []  # runs with unsent state-hook calls
        self._parallelism: int | None = None
        self._floor = -math.inf  # no start before this (set when parallelism changes)
        self._t = -math.inf

    # --- creating ---------------------------------------------------------------------------
    def create(self, group: TaskGroup, now: float, due: float | None, fate: Fate) -> Run:
        self.groups[group.id] = group
        if group.interval_s is not None:
            self._series.append(group)
        return self._new_run(group, 0, now, max(now, due if due is not None else now), fate)

    def new_id(self) -> str:
        rng = random.Random(f"{self.seed}:task:{self._seq}")
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def _new_run(
        self, group: TaskGroup, index: int, created: float, eligible: float, fate: Fate
    ) -> Run:
        run = Run(group, index, self._seq, created, eligible, fate[0], fate[1])
        self._seq += 1
        run.history.append(("queued", created))
        group.runs[index] = run
        self._order.append(run)
        heapq.heappush(self._waiting, (eligible, run.seq, run))
        if group.hook:
            self._hooked.append(run)
        return run

    # --- time -------------------------------------------------------------------------------
    def advance(self, now: float, parallelism: int, decide: Callable[[TaskGroup], Fate]) -> float:
        """Replay the queue up to ``now``; returns the (never decreasing) time used."""
        now = max(now, self._t)
        self._spawn_series(now, decide)
        if self._parallelism is not None and parallelism != self._parallelism:
            # The old capacity held until this observation; the new one counts from now.
            self._simulate(now, self._parallelism)
            self._floor = now
        self._parallelism = parallelism
        self._simulate(now, parallelism)
        self._t = now
        return now

    def _spawn_series(self, now: float, decide: Callable[[TaskGroup], Fate]) -> None:
        for group in list(self._series):
            last = group.last()
            while (
                not group.stopped
                and last is not None
                and group.interval_s is not None
                and last.eligible_at <= now
            ):
                if len(group.runs) >= self.max_runs_per_group:
                    group.stopped = True
                    break
                due = last.eligible_at + group.interval_s
                last = self._new_run(group, last.index + 1, last.eligible_at, due, decide(group))
            if group.stopped:
                self._series.remove(group)

    def _simulate(self, now: float, parallelism: int) -> None:
        while self._waiting and parallelism > 0:
            eligible, _, run = self._waiting[0]
            if run.dequeued:
                heapq.heappop(self._waiting)
                continue
            start = max(eligible, self._floor)
            busy = sorted(r.finished_at for r in self._active)
            if len(busy) >= parallelism:
                start = max(start, busy[len(busy) - parallelism])
            if start > now:
                return
            heapq.heappop(self._waiting)
            self._assign(run, start)
            self._active = [r for r in self._active if r.finished_at > start]
            self._active.append(run)

    def _assign(self, run: Run, start: float) -> None:
        p = self.phases
        running = start + p.assigned_s
        run.assigned_at = start
        run.history += [("assigned", start), ("running", running)]
        if run.fate == "stuck":
            run.finished_at = math.inf
        elif run.fate == "fail":
            run.finished_at = running + p.running_s
            run.history.append(("failed", run.finished_at))
        else:
            solving = running + p.running_s
            run.interrupted = run.interrupt_solve
            run.finished_at = solving if run.interrupt_solve else solving + p.solving_s
            run.history += [("solving", solving), ("completed", run.finished_at)]
        self._unfinished.append(run)

    def finished(self, now: float) -> list[Run]:
        """Assigned runs that ended by ``now`` and were not yet reported, in end order."""
        done = sorted(
            (r for r in self._unfinished if r.finished_at <= now),
            key=lambda r: (r.finished_at, r.seq),
        )
        if done:
            ended = {id(r) for r in done}
            self._unfinished = [r for r in self._unfinished if id(r) not in ended]
        return done

    def due_notifications(self, now: float) -> list[tuple[Run, str]]:
        """State changes up to ``now`` not yet sent to their task's hook, oldest first."""
        out: list[tuple[Run, str, float]] = []
        keep: list[Run] = []
        for run in self._hooked:
            reached = [(s, t) for s, t in run.history[run.notified :] if t <= now]
            out += [(run, s, t) for s, t in reached]
            run.notified += len(reached)
            ended = run.notified and run.history[run.notified - 1][0] in TERMINAL
            deleted = run.group.runs.get(run.index) is not run
            if not (ended or deleted):
                keep.append(run)
        self._hooked = keep
        out.sort(key=lambda item: (item[2], item[0].seq))
        return [(run, state) for run, state, _ in out]

    # --- operations on one run ------------------------------------------------------------
    def find(self, task_id: str, group_index: int | None) -> Run:
        group = self.groups.get(task_id)
        if group is None or not group.runs:
            raise KeyError(task_id)
        if group_index is None:
            last = group.last()
            assert last is not None
            return last
        return group.runs[group_index]

    def interrupt_solve(self, run: Run, now: float) -> str:
        """End the solve early, or as soon as it starts; returns DEX's ``setstatus`` value."""
        state = run.state_at(now)
        if state in TERMINAL:
            return "interrupt-processed"
        run.interrupt_solve = True
        solving = run.phase_time("solving")
        if solving is None:  # queued, or a failing/stuck run that never reaches its solve
            return "interrupt-solve"
        run.interrupted = True
        self._end(run, max(now, solving), "completed")
        return "interrupt-processed" if state == "solving" else "interrupt-solve"

    def interrupt_execution(self, run: Run, now: float) -> str:
        """Local DEX only: stop the task now; it ends ``failed``."""
        if run.state_at(now) in TERMINAL:
            return "interrupt-processed"
        run.error_message = "Task execution interrupted"
        self._end(run, now, "failed")
        return "interrupt-processed"

    def _end(self, run: Run, at: float, state: str) -> None:
        run.history = [(s, t) for s, t in run.history if t <= at and s not in TERMINAL]
        run.history.append((state, at))
        run.finished_at = at
        if run.assigned_at is None:  # ended while waiting: leave the queue
            run.dequeued = True
            self._unfinished.append(run)

    def delete(self, run: Run) -> None:
        group = run.group
        was_last = group.last() is run
        group.runs.pop(run.index, None)
        run.dequeued = True
        if was_last:
            group.stopped = True  # deleting the last run of a series ends the series
            if group in self._series:
                self._series.remove(group)
        if not group.runs:
            self.groups.pop(group.id, None)

    @property
    def created(self) -> int:
        """Runs ever created (deleted ones included)."""
        return self._seq

    def runs(self) -> Iterator[Run]:
        """Live runs in creation order."""
        for run in self._order:
            if run.group.runs.get(run.index) is run:
                yield run

    def busy(self, now: float) -> int:
        return sum(1 for r in self._active if r.finished_at > now)
