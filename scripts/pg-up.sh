#!/usr/bin/env bash
# Start a local PostgreSQL for the test suite and benchmarks (idempotent).
#
# Afterwards postgresql://postgres:postgres@127.0.0.1:5432/test answers.
# Needs root (or passwordless sudo) the first time: it may install the
# package, starts the cluster, and runs psql as the `postgres` OS user.
set -euo pipefail

WAIT_S="${PG_UP_WAIT_S:-30}"
DB_NAME="${PG_UP_DB:-test}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo -n"
fi

as_postgres() {
    # From / so psql does not complain about an unreadable working directory.
    if [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            (cd / && runuser -u postgres -- "$@")
        else
            (cd / && su postgres -s /bin/sh -c "$(printf '%q ' "$@")")
        fi
    else
        (cd / && sudo -n -u postgres "$@")
    fi
}

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    echo "pg-up: installing PostgreSQL" >&2
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y postgresql
fi

version="$(ls /etc/postgresql | sort -V | tail -n 1)"

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    if ! pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
        echo "pg-up: starting cluster $version/main" >&2
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start
    fi
fi

deadline=$((SECONDS + WAIT_S))
until pg_isready -q -h 127.0.0.1 -p 5432; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "pg-up: PostgreSQL did not answer on 127.0.0.1:5432 within ${WAIT_S}s" >&2
        exit 1
    fi
    sleep 0.5
done

as_postgres psql -q -v ON_ERROR_STOP=1 -c "ALTER USER postgres PASSWORD 'postgres'"
if [ "$(as_postgres psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != "1" ]; then
    as_postgres createdb "$DB_NAME"
fi

echo "pg-up: ready at postgresql://postgres:***@127.0.0.1:5432/$DB_NAME" >&2
