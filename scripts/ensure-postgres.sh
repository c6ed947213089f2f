#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 for the tests:
# starts the local cluster when it is installed but down, installs Debian's
# postgresql when it is missing. Idempotent; prints one line.
set -euo pipefail

host=127.0.0.1
port=5432

ready() { pg_isready -q -h "$host" -p "$port" 2>/dev/null; }

if command -v pg_isready >/dev/null && ready; then
    echo "postgres: ready on $host:$port"
    exit 0
fi

if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "postgres: not installed; installing Debian's postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    # Tests connect as postgres over TCP without a password.
    sed -i 's/^\(host\s\+all\s\+all\s\+127.0.0.1\/32\s\+\)\S\+/\1trust/' "/etc/postgresql/$version/main/pg_hba.conf"
    sed -i 's/^\(host\s\+all\s\+all\s\+::1\/128\s\+\)\S\+/\1trust/' "/etc/postgresql/$version/main/pg_hba.conf"
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
echo "postgres: starting cluster $version/main"
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true

for _ in $(seq 1 60); do
    if ready; then
        echo "postgres: ready on $host:$port"
        exit 0
    fi
    sleep 0.5
done
echo "postgres: not reachable on $host:$port after 30 s" >&2
exit 1
