"""A byte-bounded cache of serialised list pages, each valid for one data stamp."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class PageCache:
    """LRU by bytes: ``get`` answers only a body stored under the same ``stamp``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._pages: OrderedDict[Hashable, tuple[Hashable, bytes]] = OrderedDict()

    def get(self, key: Hashable, stamp: Hashable) -> bytes | None:
        hit = self._pages.get(key)
        if hit is None or hit[0] != stamp:
            self.misses += 1
            return None
        self._pages.move_to_end(key)
        self.hits += 1
        return hit[1]

    def put(self, key: Hashable, stamp: Hashable, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        old = self._pages.pop(key, None)
        if old is not None:
            self.size -= len(old[1])
        self._pages[key] = (stamp, body)
        self.size += len(body)
        while self.size > self.max_bytes:
            _, (_, dropped) = self._pages.popitem(last=False)
            self.size -= len(dropped)

    def clear(self) -> None:
        self._pages.clear()
        self.size = 0
