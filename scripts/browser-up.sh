#!/usr/bin/env bash
# Install Debian's headless-capable chromium for the status page browser test (idempotent).
#
# Playwright drives it (executable_path=/usr/bin/chromium); Playwright's own browser
# download is never used. Needs root (or passwordless sudo) the first time.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo -n"
fi
echo "browser-up: installing chromium" >&2
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium
