#!/usr/bin/env bash
# Starts the five PostgreSQL 15 servers PgCat's CI gives its Ruby specs (ports 5432 and 10432 with md5, 7432,
# 8432 and 9432 with scram-sha-256; password `postgres`; pg_stat_statements tracking everything) in $PGCAT_PG
# (default /tmp/pgcat-pg), and loads PgCat's `tests/sharding/query_routing_setup.sql` and pgbench's tables into them
# as PgCat's .circleci/run_tests.sh does. Usage: setup.sh <pgcat checkout>. See docs/peer-suites.md.
set -euo pipefail
repo=${1:?usage: setup.sh <pgcat checkout>}
dir=${PGCAT_PG:-/tmp/pgcat-pg}
mkdir -p "$dir" && chown postgres "$dir"
as_pg() { runuser -u postgres -- "$@"; }
for port in 5432 7432 8432 9432 10432; do
  data="$dir/$port"
  method=md5
  case $port in 7432|8432|9432) method=scram-sha-256 ;; esac
  if [ ! -d "$data" ]; then
    echo postgres > "$dir/pw" && chown postgres "$dir/pw"
    as_pg initdb -D "$data" -U postgres --pwfile="$dir/pw" --auth-host="$method" --auth-local=trust >/dev/null
    cat >> "$data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
max_connections = 200
password_encryption = '$method'
CONF
  fi
  as_pg pg_ctl -D "$data" -l "$dir/$port.log" -w status >/dev/null 2>&1 || as_pg pg_ctl -D "$data" -l "$dir/$port.log" -w start >/dev/null
  export PGPASSWORD=postgres PGOPTIONS="-c client_min_messages=warning"
  psql -q -h 127.0.0.1 -p "$port" -U postgres -f "$repo/tests/sharding/query_routing_setup.sql" >/dev/null
  for db in postgres shard0 shard1 shard2 some_db; do
    psql -q -h 127.0.0.1 -p "$port" -U postgres -d "$db" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null 2>&1
  done
done
for shard in shard0 shard1 shard2; do
  PGPASSWORD=sharding_user pgbench -q -h 127.0.0.1 -p 5432 -U sharding_user -i "$shard" >/dev/null 2>&1
done
echo "PgCat's servers are up in $dir"
