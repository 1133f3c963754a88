"""``python -m bench --all [--quick]``: every benchmark in its own process, one after another
(each starts its own sandbox and databases), results in ``bench/results/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import names

RESULTS = Path(__file__).parent / "results"
TIMEOUT_S = {True: 600.0, False: 7200.0}  # per benchmark: quick, full


def last_json(lines: list[str]) -> dict[str, Any] | None:
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                found = json.loads(line)
            except json.JSONDecodeError:
                return None
            return found if isinstance(found, dict) else None
    return None


def run_bench(name: str, quick: bool) -> dict[str, Any]:
    """Run one benchmark, echoing its output; its exit code, seconds, figures and table."""
    cmd = [sys.executable, "-m", "bench", name, *(["--quick"] if quick else [])]
    print(f"\n$ python -m bench {name}{' --quick' if quick else ''}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    assert proc.stdout is not None
    watchdog = threading.Timer(TIMEOUT_S[quick], proc.kill)  # a hung benchmark ends here
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:  # ends when the benchmark exits
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
        rc = proc.wait()
    finally:
        watchdog.cancel()
        proc.stdout.close()
    figures = last_json(lines)
    return {
        "exit": rc if figures is not None else (rc or 1),
        "seconds": round(time.monotonic() - started, 1),
        "figures": figures,
        "table": [line for line in lines if not line.startswith("{")],
    }


def headline(figures: dict[str, Any] | None) -> str:
    """The scalar figures of one benchmark, compact, for the summary table."""
    if figures is None:
        return "no figures"
    shown = [
        f"{k}={v}"
        for k, v in figures.items()
        if k not in ("bench", "met") and isinstance(v, int | float | str | bool)
    ]
    return ", ".join(shown)


def markdown(results: dict[str, Any]) -> str:
    mode = "--quick" if results["quick"] else "full size"
    out = [
        f"# Benchmarks ({mode}), {results['finished']}",
        "",
        f"`make bench` on {results['cores']} cores; ratios are measured within one run.",
        "",
        "| bench | exit | seconds | met | figures |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["benches"].items():
        met = (r["figures"] or {}).get("met", "—")
        out.append(
            f"| `{name}` | {r['exit']} | {r['seconds']} | {met} | {headline(r['figures'])} |"
        )
    for name, r in results["benches"].items():
        out += ["", f"## {name}", ""]
        # peer_dlt prints Markdown tables already; the others print aligned text.
        if name == "peer_dlt":
            out += r["table"]
        else:
            out += ["```text", *r["table"], "```"]
    return "\n".join(out) + "\n"


def run_all(quick: bool) -> int:
    results: dict[str, Any] = {
        "quick": quick,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "benches": {},
    }
    for name in names():
        results["benches"][name] = run_bench(name, quick)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    md = markdown(results)
    (RESULTS / "latest.md").write_text(md)
    print("\n" + md)
    print(f"written: {RESULTS / 'latest.json'}, {RESULTS / 'latest.md'}")
    failed = [n for n, r in results["benches"].items() if r["exit"] != 0]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0
