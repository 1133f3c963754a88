"""``python -m bench NAME [--quick]``: run one benchmark, print its table, then one JSON line."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

from bench import names
from service.console import tune_gc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", help="benchmark to run: " + ", ".join(names()))
    parser.add_argument("--quick", action="store_true", help="smaller size, under 60 s")
    args = parser.parse_args(argv)
    if args.name not in names():
        print(
            f"unknown benchmark {args.name!r}; available: {', '.join(names())}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"bench.{args.name}")
    run: Callable[[bool], dict[str, Any]] = module.main
    tune_gc()  # as every vendorsync command does
    figures = run(args.quick)
    sys.stdout.flush()
    print(json.dumps({"bench": args.name, **figures}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
