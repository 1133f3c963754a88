#!/usr/bin/env bash
# Make `promtool` (Debian's prometheus package) available for the alert rules test, without
# installing or starting a Prometheus server: the package is unpacked under var/tools/.
# Idempotent; prints the promtool path. Uses a promtool already on PATH when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    exit 0
fi
dest="var/tools/prometheus"
tool="$dest/usr/bin/promtool"
if [ ! -x "$tool" ]; then
    echo "promtool-up: unpacking Debian's prometheus package into $dest" >&2
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    if ! (cd "$work" && apt-get download prometheus >/dev/null 2>&1); then
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
        $SUDO apt-get update >/dev/null
        (cd "$work" && apt-get download prometheus >/dev/null)
    fi
    mkdir -p "$dest"
    dpkg-deb -x "$work"/prometheus_*.deb "$dest"
fi
echo "$(pwd)/$tool"
