"""``taskStateHook`` callbacks: PRO calls the hook URL with PUT on every task state change.

The call carries ``task_uuid``, ``task_state``, ``at`` (when the call is made) and, when the
hook URL had a ``key`` parameter, ``hmac`` = hex HMAC-SHA256 keyed by that value over the
task UUID (the vendor says only "based on the key and the task's UUID"); the ``key`` itself is
stripped. Each call is made once: strict timeout, no retry, no redirect. Calls for one task
keep their order; calls for different tasks run concurrently.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections import deque
from typing import Any

import aiohttp
from yarl import URL

MAX_LOG = 500


def hook_hmac(key: str, task_uuid: str) -> str:
    return hmac.new(key.encode(), task_uuid.encode(), hashlib.sha256).hexdigest()


def hook_call_url(hook: str, task_uuid: str, task_state: str, at: str) -> URL:
    """The URL PRO calls: the hook's own params minus ``key``, plus the task params."""
    url = URL(hook)
    key = url.query.get("key")
    query = [(k, v) for k, v in url.query.items() if k != "key"]
    query += [("task_uuid", task_uuid), ("task_state", task_state), ("at", at)]
    if key is not None:
        query.append(("hmac", hook_hmac(key, task_uuid)))
    return url.with_query(query)


def valid_hook(hook: str) -> bool:
    try:
        url = URL(hook)
    except ValueError:
        return False
    return url.scheme in {"http", "https"} and bool(url.host)


class HookSender:
    """Fire-and-forget delivery, with a log tests can read (``GET /_sandbox/hooks``)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.log: deque[dict[str, Any]] = deque(maxlen=MAX_LOG)
        self._session: aiohttp.ClientSession | None = None
        self._tail: dict[str, asyncio.Task[None]] = {}  # last delivery per task, for order

    def send(self, task_uuid: str, calls: list[URL]) -> None:
        previous = self._tail.get(task_uuid)
        delivery = asyncio.create_task(self._deliver(task_uuid, calls, previous))
        self._tail[task_uuid] = delivery
        delivery.add_done_callback(lambda t: self._forget(task_uuid, t))

    def _forget(self, task_uuid: str, task: asyncio.Task[None]) -> None:
        if self._tail.get(task_uuid) is task:
            del self._tail[task_uuid]

    async def _deliver(
        self, task_uuid: str, calls: list[URL], previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        for url in calls:
            entry: dict[str, Any] = {"url": str(url), "task_uuid": task_uuid}
            entry["task_state"] = url.query.get("task_state")
            try:
                async with self._session.put(url, allow_redirects=False, timeout=timeout) as resp:
                    entry["status"] = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                entry["error"] = type(exc).__name__  # no retry: the vendor gives up at once
            self.log.append(entry)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until every delivery started so far has finished."""
        pending = list(self._tail.values())
        if pending:
            await asyncio.wait(pending, timeout=timeout_s)

    async def close(self) -> None:
        for task in list(self._tail.values()):
            task.cancel()
        await asyncio.gather(*self._tail.values(), return_exceptions=True)
        self._tail.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
