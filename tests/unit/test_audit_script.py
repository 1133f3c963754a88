"""scripts/audit.sh judges pip-audit's reports: a fake pip-audit writes each case's report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
OWN = {"name": "vendorsync", "skip_reason": "distribution marked as editable"}
OK = {"name": "aiohttp", "version": "3.14.5", "vulns": []}
UNAUDITED = {"name": "yarl", "skip_reason": "Dependency not found on PyPI and could not be audited"}
VULN = {
    "name": "aiohttp",
    "version": "3.9.0",
    "vulns": [{"id": "GHSA-xxxx-yyyy-zzzz", "fix_versions": ["3.9.2"], "aliases": []}],
}


def fake_venv(tmp_path: Path, reports: dict[str, list[dict[str, Any]] | None]) -> Path:
    """A venv whose pip-audit writes ``reports[service]`` (None: the service is down)."""
    bin_ = tmp_path / "venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "python").symlink_to(sys.executable)
    (tmp_path / "reports.json").write_text(json.dumps(reports))
    script = bin_ / "pip-audit"
    script.write_text(
        f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
service = args[args.index("--vulnerability-service") + 1]
report = json.load(open({str(tmp_path / "reports.json")!r}))[service]
if report is None:
    sys.exit("requests.exceptions.ConnectionError: cannot reach " + service)
open(args[args.index("--output") + 1], "w").write(json.dumps({{"dependencies": report}}))
sys.exit(1 if any(d.get("vulns") for d in report) else 0)
"""
    )
    script.chmod(0o755)
    return tmp_path / "venv"


def audit(venv: Path, strict: bool = False) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "VENV": str(venv), "AUDIT_STRICT": "1" if strict else "0"}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "audit.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("reports", "strict", "code", "says"),
    [
        ({"pypi": [OWN, OK], "osv": [OWN, OK]}, False, 0, "1 of 1 installed packages audited"),
        ({"pypi": [OWN, VULN], "osv": None}, False, 1, "aiohttp 3.9.0: GHSA-xxxx-yyyy-zzzz"),
        ({"pypi": [OWN, OK], "osv": [OWN, VULN]}, False, 1, "fix: 3.9.2"),
        ({"pypi": [OWN, UNAUDITED], "osv": None}, False, 0, "WARNING: 1 package(s)"),
        ({"pypi": None, "osv": None}, False, 0, "WARNING: all package(s) could not be audited"),
        ({"pypi": [OWN, UNAUDITED], "osv": None}, True, 3, "WARNING"),
        ({"pypi": [OWN, UNAUDITED, OK], "osv": [OWN, OK, OK]}, False, 0, "WARNING: 1 package"),
    ],
)
def test_audit_fails_on_vulnerabilities_and_warns_when_unable_to_audit(
    tmp_path: Path, reports: dict[str, Any], strict: bool, code: int, says: str
) -> None:
    proc = audit(fake_venv(tmp_path, reports), strict)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert says in proc.stdout + proc.stderr
    assert "vendorsync" not in proc.stdout + proc.stderr  # our own package is not audited


def test_missing_pip_audit_is_an_error(tmp_path: Path) -> None:
    proc = audit(tmp_path / "nothing")
    assert proc.returncode == 1
    assert "pip-audit is a dev dependency" in proc.stderr
