#!/usr/bin/env bash
# CI: PostgreSQL server binaries for the graph-store tests (tests/blockwise/test_store.py).
# The tests start their own throw-away server from these binaries (initdb + pg_ctl on a free port
# of 127.0.0.1, as the unprivileged `postgres` account when run as root); they never use the
# cluster the package may start. Idempotent: does nothing where the binaries are already there.
set -euo pipefail
if command -v pg_ctl >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "postgres.sh: PostgreSQL is not installed and this is not root: apt-get install postgresql" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
