"""Benchmarks: ``python -m bench NAME [--quick]``.

Each ``bench/<name>.py`` has ``main(quick: bool) -> dict``: it starts what it needs,
prints a human table, and returns its figures, which ``__main__`` prints as the one last
line of JSON. ``VENDORSYNC_BENCH_TINY=1`` shrinks every size further, for the smoke test
only (its figures mean nothing).
"""

from __future__ import annotations

import os
import pkgutil
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
TINY_ENV = "VENDORSYNC_BENCH_TINY"


def tiny() -> bool:
    """Whether the smoke test asked for the tiny size."""
    return os.environ.get(TINY_ENV, "") not in ("", "0")


def size(full: T, quick: T, tiny_size: T, *, is_quick: bool) -> T:
    """The size for this run: tiny (smoke test), quick (``--quick``) or full."""
    if tiny():
        return tiny_size
    return quick if is_quick else full


def names() -> list[str]:
    """Every benchmark module in this package."""
    here = [str(Path(__file__).parent)]
    return sorted(m.name for m in pkgutil.iter_modules(here) if not m.name.startswith("_"))
