"""Exit codes tell the truth: a run where every stream failed is not a success."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.test_cli import project, run, sandbox_url

__all__ = ["project", "sandbox_url"]  # fixtures


@pytest.mark.long  # the reliability tier: over 25 s
def test_run_once_exits_1_when_streams_fail(project: Path) -> None:
    assert run("migrate", cwd=project).returncode == 0
    env = {"VENDORSYNC_VENDORS__AIMSIO__AUTH__PASSWORD": "wrong"}
    proc = run("run", "--once", cwd=project, env=env)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "run(s) failed" in proc.stderr.splitlines()[-1]
    ok = run("run", "--once", cwd=project)
    assert ok.returncode == 0, ok.stderr
