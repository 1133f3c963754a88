"""Benchmarks: ``python -m bench NAME [--quick]``.

Each ``bench/<name>.py`` has ``main(quick: bool) -> dict``: it starts what it needs,
prints a human table, and returns its figures, which ``__main__`` prints as the one last
line of JSON.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path


def names() -> list[str]:
    """Every benchmark module in this package."""
    here = [str(Path(__file__).parent)]
    return sorted(m.name for m in pkgutil.iter_modules(here) if not m.name.startswith("_"))
