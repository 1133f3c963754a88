"""The load suite in CI: ``python -m bench load --quick`` (ten streams over all five vendors,
60 s, faults on every call) must meet its own verdict: zero violations, no failed or
hung run, file descriptors within their bound, memory flat over the second half."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.long, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def test_ten_streams_under_faults_for_a_minute_break_no_limit_and_leak_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VENDORSYNC_BENCH")}
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "load", "--quick"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=480,
    )
    print(proc.stdout)  # the table, for the record (-s)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["duration_s"] >= 60
    assert figures["streams"] == 10
    assert figures["violations"] == 0, proc.stdout
    assert figures["runs_failed"] == 0
    assert figures["cancelled_at_end"] == 0
    assert figures["runs"] >= 100  # every stream ran again and again
    assert figures["fds_peak"] <= figures["fd_bound"]
    assert figures["fds_end"] <= figures["fds_start"] + 5
    assert figures["rss_growth_last_half_mb"] <= 8.0
    assert figures["met"] is True
