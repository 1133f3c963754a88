"""``python -m bench NAME [--quick]``: run one benchmark, print its table, then one JSON line.

``python -m bench --list`` names them; ``python -m bench --all [--quick]`` runs each in its
own process (``make bench``) and writes ``bench/results/latest.json`` and ``latest.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

from bench import names
from service.console import tune_gc
from service.logging import setup_logging


def run_one(name: str, quick: bool) -> int:
    module = importlib.import_module(f"bench.{name}")
    run: Callable[[bool], dict[str, Any]] = module.main
    setup_logging("error")  # the table is the output; the engine's run logs would bury it
    tune_gc()  # as every vendorsync command does
    figures = run(quick)
    sys.stdout.flush()
    print(json.dumps({"bench": name, **figures}, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", nargs="?", help="benchmark to run: " + ", ".join(names()))
    parser.add_argument("--quick", action="store_true", help="smaller size, under 60 s")
    parser.add_argument("--list", action="store_true", help="name every benchmark and exit")
    parser.add_argument("--all", action="store_true", help="run every benchmark, write results")
    args = parser.parse_args(argv)
    if args.list:
        for name in names():
            print(name)
        return 0
    if args.all:
        from bench._all import run_all

        return run_all(args.quick)
    if args.name not in names():
        print(
            f"unknown benchmark {args.name!r}; available: {', '.join(names())}",
            file=sys.stderr,
        )
        return 2
    return run_one(args.name, args.quick)


if __name__ == "__main__":
    sys.exit(main())
