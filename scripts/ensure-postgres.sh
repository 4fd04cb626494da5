#!/usr/bin/env bash
# Makes sure PostgreSQL 15 server programs, psql and pgbench are on PATH and a `postgres` user exists (initdb
# refuses to run as root, so servers run as that user). Source it: `. scripts/ensure-postgres.sh`.
set -euo pipefail
for d in /usr/lib/postgresql/15/bin /usr/local/pgsql/bin; do
  [ -d "$d" ] && case ":$PATH:" in *":$d:"*) ;; *) PATH="$PATH:$d" ;; esac
done
export PATH
if ! command -v initdb >/dev/null || ! command -v pgbench >/dev/null || ! command -v psql >/dev/null; then
  echo "installing PostgreSQL 15 from Debian packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 postgresql-client-15 >/dev/null
  PATH="$PATH:/usr/lib/postgresql/15/bin"
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi
