#!/usr/bin/env bash
# Static checks of the Dockerfile and compose file, and a replay of the image's install
# steps (no Docker engine needed): a clean venv gets `pip install .` exactly as the image
# does, then the installed command migrates a fresh SQLite from outside the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
venv_bin=${VENV:-.venv}/bin

"$venv_bin/hadolint" --failure-threshold warning Dockerfile
echo "hadolint: Dockerfile ok"

if ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq docker-compose >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq docker-compose >/dev/null; }
  fi
fi
if command -v docker-compose >/dev/null 2>&1; then
  docker-compose -f docker-compose.yaml config -q
  docker-compose -f docker-compose.yaml --profile sandbox config -q 2>/dev/null || true
  docker-compose -f docker-compose.yaml --profile monitoring config -q
  echo "docker-compose config: ok"
elif [ -n "${CI:-}" ]; then
  echo "docker-compose is required under CI" >&2
  exit 1
else
  echo "docker-compose not installed: compose check skipped (it runs in CI)" >&2
fi

work=$(mktemp -d)
# pip may build in the source tree; leave it as it was.
trap 'rm -rf "$work" "$root/build" "$root"/*.egg-info' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "$root"
cd "$work"
"$work/venv/bin/vendorsync" --help >/dev/null
VENDORSYNC_DATABASE__URL="sqlite+aiosqlite:///$work/image.db" \
  "$work/venv/bin/vendorsync" migrate --config "$root/config/vendorsync.toml"
VENDORSYNC_DATABASE__URL="sqlite+aiosqlite:///$work/image.db" \
  "$work/venv/bin/vendorsync" status --config "$root/config/vendorsync.toml" >/dev/null
echo "image install steps: ok (installed package migrates from outside the source tree)"
