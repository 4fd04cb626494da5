#!/usr/bin/env bash
# Memory per idle client: N (default 10000) clients log in to Ocelot and stay silent; prints Ocelot's resident
# memory before and after, per client. Needs `ulimit -n` above N + 100.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
N=${N:-10000}
ulimit -n $((N + 1000)) 2>/dev/null || true
if [ -z "${OCELOT_BIN:-}" ]; then cargo build --release -q; fi
BIN="${OCELOT_BIN:-${CARGO_TARGET_DIR:-target}/release/ocelot}"
P=${BASE_PORT:-48432}
. benches/lib.sh
bench_setup idlebench
start_pg pg "$P"
psql -X -q -h 127.0.0.1 -p "$P" -U postgres -c "CREATE DATABASE app" postgres
cat > "$W/ocelot.toml" <<CONF
[general]
host = "127.0.0.1"
port = $((P + 1))
admin_username = "admin"
admin_password = "admin"
max_client_conn = $((N + 100))
[pools.app.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 2
[pools.app.shards.0]
database = "app"
servers = [["127.0.0.1", $P, "primary"]]
CONF
"$BIN" "$W/ocelot.toml" -l warn & PIDS+=($!)
sleep 1
python3 benches/idle_clients.py $((P + 1)) "$N" "${PIDS[0]}"
