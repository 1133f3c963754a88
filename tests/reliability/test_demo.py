"""`make demo` as a new user meets it: the demo, then `vendorsync status` on the same data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.reliability.test_cli import project, run, sandbox_url

__all__ = ["project", "sandbox_url"]  # fixtures


@pytest.mark.long  # the reliability tier: over 25 s
def test_demo_then_status_shows_the_demo_runs(project: Path) -> None:
    demo = run("demo", "--records", "10", cwd=project)
    assert demo.returncode == 0, demo.stderr
    assert "Traceback" not in demo.stderr
    assert "violations" in demo.stdout
    assert "their durations" in demo.stdout  # concurrent durations are explained
    for vendor, entity in (("imis", "Party"), ("amilia", "accounts"), ("aimms", "task")):
        assert re.search(rf"{vendor}\s+│\s+{entity}\s+│[^\n]*│\s+sent\s", demo.stdout), vendor
    assert demo.stdout.count("│ sent ") >= 10  # 4 Aimsio users, 2 each to iMIS, Amilia, AIMMS
    assert "created 31 staging views" in demo.stdout
    status = run("status", cwd=project)
    assert status.returncode == 0, status.stderr
    for stream in ("User", "Employee", "JobOrder"):
        assert stream in status.stdout
    assert "succeeded" in status.stdout
    again = run("demo", "--records", "10", cwd=project)  # a rerun keeps the earlier file
    assert again.returncode == 0, again.stderr
    assert list(project.glob("vs.db.before-demo"))
