"""Server-side limit enforcement, the way each vendor does it.

Two styles exist among our vendors:
- ``queue`` (Aimsio): excess requests wait for a rate slot and a parallel slot; one that
  would wait longer than ``queue_timeout_s`` gets ``timeout_status`` (never 429).
- ``reject`` (Amilia): a sliding one-second window per client address; over the cap → 429.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

WINDOW_S = 1.0


@dataclass
class LimitConfig:
    enabled: bool = False
    mode: Literal["queue", "reject"] = "reject"
    max_parallel: int | None = None
    rate_per_s: float | None = None
    queue_timeout_s: float = 5.0
    timeout_status: int = 504
    per_client: bool = False  # reject mode: count per client address (Amilia: per IP)

    def update(self, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown limit setting {key!r}")
            setattr(self, key, value)


class Admission:
    """The outcome of asking to run a request: admitted, or the status to answer."""

    __slots__ = ("admitted", "status")

    def __init__(self, admitted: bool, status: int = 200) -> None:
        self.admitted = admitted
        self.status = status


class Limiter:
    def __init__(self, config: LimitConfig) -> None:
        self.config = config
        self._lock = asyncio.Lock()
        self._running = 0
        self._slot_freed = asyncio.Event()
        self._admitted: deque[float] = deque()
        self._by_client: dict[str, deque[float]] = {}

    async def admit(self, client: str) -> Admission:
        cfg = self.config
        if not cfg.enabled:
            return Admission(True)
        if cfg.mode == "reject":
            return self._admit_reject(client)
        return await self._admit_queue()

    @property
    def running(self) -> int:
        """Requests admitted and not yet answered: the server-side concurrency."""
        return self._running

    def release(self, admission: Admission) -> None:
        if admission.admitted and self.config.enabled:
            self._running -= 1
            self._slot_freed.set()

    def _admit_reject(self, client: str) -> Admission:
        cfg = self.config
        now = time.monotonic()
        window = self._by_client.setdefault(client if cfg.per_client else "*", deque())
        while window and now - window[0] >= WINDOW_S:
            window.popleft()
        if cfg.rate_per_s is not None and len(window) >= cfg.rate_per_s:
            return Admission(False, 429)
        if cfg.max_parallel is not None and self._running >= cfg.max_parallel:
            return Admission(False, 429)
        window.append(now)
        self._running += 1
        return Admission(True)

    async def _admit_queue(self) -> Admission:
        cfg = self.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.queue_timeout_s
        try:
            # The lock keeps the queue FIFO, as the vendor's own request queue does.
            async with asyncio.timeout_at(deadline), self._lock:
                while cfg.rate_per_s is not None:
                    now = time.monotonic()
                    while self._admitted and now - self._admitted[0] >= WINDOW_S:
                        self._admitted.popleft()
                    if len(self._admitted) < cfg.rate_per_s:
                        break
                    await asyncio.sleep(self._admitted[0] + WINDOW_S - now)
                while cfg.max_parallel is not None and self._running >= cfg.max_parallel:
                    self._slot_freed.clear()
                    await self._slot_freed.wait()
                self._running += 1
                self._admitted.append(time.monotonic())
        except TimeoutError:
            return Admission(False, cfg.timeout_status)
        return Admission(True)

    def reset(self) -> None:
        self._admitted.clear()
        self._by_client.clear()
