#!/usr/bin/env bash
# In-proxy prediction benchmark, interleaved in one run, each through Ocelot to one PostgreSQL:
# - `SELECT pgml.predict('houses', ARRAY[...]::real[])` answered by Ocelot from its model cache;
# - the same linear model written as a SQL expression and computed by PostgreSQL (the best an in-database
#   model can do without Python: no function call overhead at all);
# - `SELECT 1` through Ocelot to PostgreSQL, the floor of any query that reaches a server.
# At 1 and 50 clients; medians of ROUNDS rounds; ratios against SELECT 1.
#
#   benches/predict.sh          # SECONDS_PER_RUN=8 ROUNDS=3
# The PL/Python (scikit-learn) and HTTP-sidecar comparisons the issue asks for are not here yet.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
cargo build --release -q
BIN="${CARGO_TARGET_DIR:-target}/release/ocelot"
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
ROUNDS=${ROUNDS:-3}
P=${BASE_PORT:-46432}
W=$(mktemp -d /tmp/ocelot-predictbench.XXXXXX)
AS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$W"; AS=(runuser -u postgres --); fi
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  "${AS[@]}" pg_ctl -D "$W/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

"${AS[@]}" initdb -A trust -U postgres -D "$W/pg" --no-sync >/dev/null
"${AS[@]}" pg_ctl -D "$W/pg" -l "$W/pg.log" -w \
  -o "-p $P -k $W -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
psql -X -q -h 127.0.0.1 -p "$P" -U postgres -c "CREATE DATABASE bench" postgres
psql -X -q -h 127.0.0.1 -p "$P" -U postgres -d bench -c \
  "CREATE TABLE house AS SELECT s AS size, r AS rooms, a AS age, 50 + 3 * s + 10 * r - 0.5 * a AS price
     FROM (SELECT (40 + (g * 37) % 160)::float8 AS s, 1 + (g * 7) % 6 AS r, (g * 13) % 80 AS a FROM generate_series(1, 1000) g) t"
cat > "$W/ocelot.toml" <<CONF
[general]
host = "127.0.0.1"
port = $((P + 1))
admin_username = "admin"
admin_password = "admin"
worker_threads = $(nproc)
[pools.bench.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 10
[pools.bench.shards.0]
database = "bench"
servers = [["127.0.0.1", $P, "primary"]]
CONF
"$BIN" "$W/ocelot.toml" -l warn & PIDS+=($!)
sleep 1
psql -X -q -h 127.0.0.1 -p $((P + 1)) -U postgres -d bench -c \
  "SELECT * FROM pgml.train('houses', 'regression', 'house', 'price', test_sampling => 'last')" >/dev/null

echo "SELECT pgml.predict('houses', ARRAY[100, 3, 10]::real[]);" > "$W/predict.sql"
echo "SELECT (50 + 3 * 100 + 10 * 3 - 0.5 * 10)::real;" > "$W/sqlexpr.sql"
echo "SELECT 1;" > "$W/one.sql"
bench() { # SCRIPT CLIENTS -> tps
  pgbench -h 127.0.0.1 -p $((P + 1)) -U postgres -n -f "$1" -c "$2" -j "$(( $2 < 2 ? 1 : 2 ))" -T "$SECONDS_PER_RUN" bench 2>&1 \
    | awk '/^tps/ {print $3}'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf "%s s x %s rounds; %s cores; through Ocelot to one PostgreSQL 15\n\n" "$SECONDS_PER_RUN" "$ROUNDS" "$(nproc)"
for clients in 1 50; do
  : > "$W/p"; : > "$W/s"; : > "$W/o"
  for _ in $(seq "$ROUNDS"); do
    bench "$W/predict.sql" "$clients" >> "$W/p"
    bench "$W/sqlexpr.sql" "$clients" >> "$W/s"
    bench "$W/one.sql" "$clients" >> "$W/o"
  done
  p=$(median < "$W/p"); s=$(median < "$W/s"); o=$(median < "$W/o")
  printf "%2s clients: pgml.predict in Ocelot %8.0f tps | model as SQL in PostgreSQL %8.0f tps | SELECT 1 %8.0f tps | predict/SELECT 1 %.2f\n" \
    "$clients" "$p" "$s" "$o" "$(echo "$p $o" | awk '{print ($2>0)?$1/$2:0}')"
done
