#!/usr/bin/env bash
# Make sure the PostgreSQL server binaries that tests/pg_server.py starts are installed.
# Idempotent and silent when they are already there; installs Debian's `postgresql` otherwise.
set -euo pipefail

have_server() {
    compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null \
        && compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if have_server; then
    exit 0
fi

fail() {
    echo "ensure-postgres: $*" >&2
    echo "ensure-postgres: install the PostgreSQL server yourself (Debian: apt-get install postgresql)," \
        "or point ROAMSIGN_PG_BINDIR at a directory holding initdb and postgres" >&2
    exit 1
}

if [[ -n "${ROAMSIGN_PG_BINDIR:-}" && -x "${ROAMSIGN_PG_BINDIR}/postgres" && -x "${ROAMSIGN_PG_BINDIR}/initdb" ]]; then
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || fail "PostgreSQL server not found and apt-get is not available"

if [[ "$(id -u)" -eq 0 ]]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    fail "PostgreSQL server not found; installing it needs root (or password-less sudo)"
fi

echo "ensure-postgres: installing the PostgreSQL server (apt-get install postgresql)..." >&2
export DEBIAN_FRONTEND=noninteractive
# The package's own cluster is not used (tests start a private server); on machines without
# systemd its postinst may still try to create one, which is harmless.
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; then
    fail "apt-get update failed"
fi
if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    postgresql >/dev/null; then
    fail "apt-get install postgresql failed"
fi

have_server || fail "apt-get installed postgresql, but no /usr/lib/postgresql/*/bin/postgres appeared"
echo "ensure-postgres: installed $(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)" >&2
