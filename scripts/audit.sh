#!/usr/bin/env bash
# Audit the installed dependencies (.venv: runtime and dev tools) for known vulnerabilities
# with pip-audit. Our own editable package is skipped.
#
# Exit 1: a known vulnerability in an installed package (not listed in audit-ignore.txt),
#         or pip-audit itself is missing or broken.
# Exit 0 with a WARNING: the vulnerability service could not be asked (no network, a mirror
#         without PyPI's per-version JSON): that is not the project's fault, so CI goes on,
#         but the warning says how many packages went unaudited. AUDIT_STRICT=1 makes it an
#         error (exit 3) for runs that must prove an audit happened.
#
# Services: PyPI's JSON API first (pip-audit's default); for whatever it could not audit,
# OSV (api.osv.dev).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
AUDIT="$VENV/bin/pip-audit"
PY="$VENV/bin/python"
IGNORE_FILE="scripts/audit-ignore.txt"

if [ ! -x "$AUDIT" ]; then
    echo "audit: $AUDIT not found; run 'make install' (pip-audit is a dev dependency)" >&2
    exit 1
fi

ignore=()
if [ -f "$IGNORE_FILE" ]; then
    # One vulnerability id per line, then a comment saying why it is accepted.
    while read -r id _; do
        case "$id" in "" | "#"*) continue ;; esac
        ignore+=(--ignore-vuln "$id")
    done <"$IGNORE_FILE"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

audit_with() { # service → $work/<service>.json (or nothing when the service failed)
    local service="$1"
    # pip-audit exits 1 both for "vulnerabilities found" and for its own failures: the JSON
    # report, when written, is what we judge by.
    "$AUDIT" --skip-editable --progress-spinner off --format json --output "$work/$service.json" \
        --vulnerability-service "$service" --timeout 30 "${ignore[@]}" \
        2>"$work/$service.err" || true
}

audit_with pypi
audit_with osv

"$PY" - "$work" "${AUDIT_STRICT:-0}" <<'EOF'
import json
import sys
from pathlib import Path

work, strict = Path(sys.argv[1]), sys.argv[2] == "1"
reports = {}
for service in ("pypi", "osv"):
    path = work / f"{service}.json"
    if path.exists() and path.stat().st_size:
        reports[service] = json.loads(path.read_text())["dependencies"]
    else:
        err = (work / f"{service}.err").read_text().strip().splitlines()
        print(f"audit: {service} service failed: {err[-1] if err else 'no report'}", file=sys.stderr)

installed: dict[str, str] = {}
audited: set[str] = set()
vulns: dict[tuple[str, str], list[str]] = {}
for service, deps in reports.items():
    for dep in deps:
        if dep.get("skip_reason", "").startswith("distribution marked as editable"):
            continue
        installed[dep["name"]] = dep.get("version", "?")
        if "skip_reason" in dep:
            continue
        audited.add(dep["name"])
        for v in dep.get("vulns", []):
            fix = ", ".join(v.get("fix_versions") or []) or "no fixed version"
            line = f"{v['id']} (fix: {fix})"
            vulns.setdefault((dep["name"], dep["version"]), [])
            if line not in vulns[(dep["name"], dep["version"])]:
                vulns[(dep["name"], dep["version"])].append(line)

if vulns:
    print("audit: KNOWN VULNERABILITIES in installed packages:", file=sys.stderr)
    for (name, version), ids in sorted(vulns.items()):
        print(f"  {name} {version}: {'; '.join(ids)}", file=sys.stderr)
    print(f"audit: upgrade them, or accept one in scripts/audit-ignore.txt with a reason",
          file=sys.stderr)
    sys.exit(1)
missing = sorted(set(installed) - audited)
if audited:
    print(f"audit: {len(audited)} of {len(installed)} installed packages audited "
          f"({', '.join(reports)}): no known vulnerabilities")
if missing or not installed:
    shown = ", ".join(missing[:8]) + (" …" if len(missing) > 8 else "")
    print(f"audit: WARNING: {len(missing) or 'all'} package(s) could not be audited "
          f"(vulnerability service unreachable or incomplete here): {shown}", file=sys.stderr)
    if strict:
        sys.exit(3)
EOF
