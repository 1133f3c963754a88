"""Every benchmark runs at a tiny size (``VENDORSYNC_BENCH_TINY=1``): exit 0 and a last line
of JSON with its figures. The figures themselves mean nothing at this size; ``make bench``
measures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bench
from bench import TINY_ENV, _all

ROOT = Path(__file__).resolve().parents[2]
# Keys each benchmark's JSON must carry; a benchmark not listed here needs only "bench".
EXPECTED: dict[str, set[str]] = {
    "upsert": {"rows", "ratio", "met"},
    "aimsio_fetch": {"ratio_to_cap", "violations", "met"},
    "amilia_pages": {"ratio_to_cap", "records_per_s", "violations", "rate_limited", "met"},
    "imis_paging": {"sequential_pages_per_s", "concurrent_5_ratio", "met"},
    "aqua_export": {"rows", "peak_rss_mb", "sqlite"},
    "peer_dlt": {
        "database",
        "ratio_aimsio_user",
        "ratio_amilia_accounts",
        "ratio_imis_party",
        "vendorsync_violations",
        "vendorsync_incremental_correct",
        "dlt_incremental_correct",
        "streams",
        "met",
    },
    "load": {
        "violations",
        "peak_rss_mb",
        "fds_over_time",
        "fd_bound",
        "rss_growth_last_half_mb",
        "runs",
        "runs_failed",
        "met",
    },
    "scale": {"ratio_to_caps_1", "ratio_to_caps_3", "violations", "failover_s", "met"},
}


def tiny_env() -> dict[str, str]:
    return {**os.environ, TINY_ENV: "1", "PYTHONPATH": str(ROOT)}


def last_json(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "no output"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict)
    return figures


def test_list_names_every_benchmark() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=tiny_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == bench.names()
    assert {"peer_dlt", "load"} <= set(bench.names())


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", bench.names())
def test_benchmark_runs_tiny_and_ends_with_its_json(name: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench", name],
        capture_output=True,
        text=True,
        timeout=170,
        env=tiny_env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = last_json(proc.stdout)
    assert figures["bench"] == name
    missing = EXPECTED.get(name, set()) - set(figures)
    assert not missing, f"{name} lacks {sorted(missing)}"


def test_all_writes_json_and_markdown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_all, "RESULTS", tmp_path)
    monkeypatch.setattr(_all, "names", lambda: ["upsert"])
    monkeypatch.setenv(TINY_ENV, "1")
    assert _all.run_all(quick=True) == 0
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["benches"]["upsert"]["exit"] == 0
    assert results["benches"]["upsert"]["figures"]["bench"] == "upsert"
    md = (tmp_path / "latest.md").read_text()
    assert "| `upsert` | 0 |" in md
