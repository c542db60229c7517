#!/bin/sh
# PostgreSQL for proxal's session state (deploy/docker/Dockerfile.postgres): on the first
# start (an empty PGDATA) initdb with POSTGRES_USER's password and CREATE DATABASE
# POSTGRES_DB; on every start, exec postgres on port PGPORT, with this script's arguments
# as further server settings (e.g. `-c max_connections=200`).
#
# Environment: POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE; required, and refused while it
# is the REPLACE_ME placeholder of deploy/k8s/base/secrets.yaml), POSTGRES_USER and
# POSTGRES_DB (default proxal), PGDATA, PGPORT (default 5432), POSTGRES_LISTEN_ADDRESSES
# (default *, every address; the smoke run, on the host's network, sets 127.0.0.1).
# The password only matters on the first start: later, change it with ALTER ROLE.
set -eu

: "${PGDATA:?}"
POSTGRES_USER=${POSTGRES_USER:-proxal}
POSTGRES_DB=${POSTGRES_DB:-proxal}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
        POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
    fi
    case ${POSTGRES_PASSWORD:-} in
        "" | REPLACE_ME)
            echo "proxal-postgres: set POSTGRES_PASSWORD (not empty, not the REPLACE_ME" \
                "placeholder) to initialise $PGDATA" >&2
            exit 1
            ;;
    esac
    pwfile=$(mktemp)
    trap 'rm -f "$pwfile"' EXIT
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    # C collation: no dependency on the C library's locale data, which changes across
    # Debian releases and would corrupt text indexes; UTF-8 text.
    initdb --pgdata="$PGDATA" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --encoding=UTF8 --no-locale --auth-local=scram-sha-256 --auth-host=scram-sha-256
    rm -f "$pwfile"
    # Password logins from any address (the container network; TLS is not set up here).
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    # Single-user mode: no server to start and stop just to create the database.
    printf 'CREATE DATABASE "%s";\n' "$POSTGRES_DB" |
        postgres --single -D "$PGDATA" -c listen_addresses= postgres >/dev/null
    echo "proxal-postgres: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)" >&2
fi

exec postgres -D "$PGDATA" -c listen_addresses="${POSTGRES_LISTEN_ADDRESSES:-*}" "$@"
