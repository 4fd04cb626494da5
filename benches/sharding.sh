#!/usr/bin/env bash
# Sharding benchmark, each pair interleaved in one run:
# - single-shard point reads by key (pgbench, 50 clients) through Ocelot over 3 shards vs through Ocelot over one
#   server holding all the data;
# - fan-out latency of a cross-shard count(*) and of ORDER BY ... LIMIT 10 (1 client) vs the same on one server.
#
#   benches/sharding.sh          # ROWS=100000 SECONDS_PER_RUN=8 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
cargo build --release -q
BIN="${CARGO_TARGET_DIR:-target}/release/ocelot"
ROWS=${ROWS:-100000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
ROUNDS=${ROUNDS:-3}
P=${BASE_PORT:-45432}
. benches/lib.sh
bench_setup shardbench

i=0
for d in s0 s1 s2 one; do
  port=$((P + i)); i=$((i + 1))
  start_pg "$d" "$port" "-c max_connections=200 -c shared_buffers=64MB"
  psql -X -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE bench" postgres
done
# Each shard keeps only the rows PostgreSQL's hash partitioning (modulus 3) assigns to it, as Ocelot routes them.
for s in 0 1 2; do
  psql -X -q -h 127.0.0.1 -p $((P + s)) -U postgres -d bench <<SQL
CREATE TABLE stage (id bigint, v text) PARTITION BY HASH (id);
CREATE TABLE stage_0 PARTITION OF stage FOR VALUES WITH (MODULUS 3, REMAINDER 0);
CREATE TABLE stage_1 PARTITION OF stage FOR VALUES WITH (MODULUS 3, REMAINDER 1);
CREATE TABLE stage_2 PARTITION OF stage FOR VALUES WITH (MODULUS 3, REMAINDER 2);
INSERT INTO stage SELECT g, 'v' || g FROM generate_series(1, $ROWS) g;
CREATE TABLE data AS SELECT * FROM stage_$s;
ALTER TABLE data ADD PRIMARY KEY (id);
DROP TABLE stage;
ANALYZE data;
SQL
done
psql -X -q -h 127.0.0.1 -p $((P + 3)) -U postgres -d bench -c \
  "CREATE TABLE data AS SELECT g::bigint AS id, 'v' || g AS v FROM generate_series(1, $ROWS) g; ALTER TABLE data ADD PRIMARY KEY (id); ANALYZE data;"

common() {
  cat <<CONF
[general]
host = "127.0.0.1"
port = $1
admin_username = "admin"
admin_password = "admin"
worker_threads = $(nproc)
[pools.bench]
automatic_sharding_key = "data.id"
[pools.bench.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 10
CONF
}
{ common $((P + 10)); for s in 0 1 2; do printf '[pools.bench.shards.%s]\ndatabase = "bench"\nservers = [["127.0.0.1", %s, "primary"]]\n' "$s" $((P + s)); done; } > "$W/sharded.toml"
{ common $((P + 11)); printf '[pools.bench.shards.0]\ndatabase = "bench"\nservers = [["127.0.0.1", %s, "primary"]]\n' $((P + 3)); } > "$W/one.toml"
"$BIN" "$W/sharded.toml" -l warn & PIDS+=($!)
"$BIN" "$W/one.toml" -l warn & PIDS+=($!)
sleep 1

printf '\\set id random(1, %s)\nSELECT v FROM data WHERE id = :id;\n' "$ROWS" > "$W/point.sql"
echo 'SELECT count(*) FROM data;' > "$W/count.sql"
echo 'SELECT id, v FROM data ORDER BY id DESC LIMIT 10;' > "$W/top.sql"
bench() { # PORT SCRIPT CLIENTS PROTOCOL -> "tps latency_ms"
  local out
  out=$(pgbench -h 127.0.0.1 -p "$1" -U postgres -n -f "$2" -c "$3" -j "$(( $3 < 2 ? 1 : 2 ))" -M "$4" -T "$SECONDS_PER_RUN" bench 2>&1)
  echo "$(echo "$out" | awk '/^tps/ {print $3}') $(echo "$out" | awk '/^latency average/ {print $4}')"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf "%s rows; %s s x %s rounds; %s cores; 3 shards vs 1 server, each behind Ocelot\n\n" "$ROWS" "$SECONDS_PER_RUN" "$ROUNDS" "$(nproc)"
for t in "point 50 simple" "point 50 extended" "count 1 simple" "top 1 simple"; do
  set -- $t
  : > "$W/a"; : > "$W/b"; : > "$W/al"; : > "$W/bl"
  for _ in $(seq "$ROUNDS"); do
    read -r tps lat < <(bench $((P + 10)) "$W/$1.sql" "$2" "$3"); echo "$tps" >> "$W/a"; echo "$lat" >> "$W/al"
    read -r tps lat < <(bench $((P + 11)) "$W/$1.sql" "$2" "$3"); echo "$tps" >> "$W/b"; echo "$lat" >> "$W/bl"
  done
  printf "%-6s %-8s %3s clients: sharded %9.0f tps %8.3f ms | one server %9.0f tps %8.3f ms | tps ratio %.2f\n" "$1" "$3" "$2" \
    "$(median < "$W/a")" "$(median < "$W/al")" "$(median < "$W/b")" "$(median < "$W/bl")" \
    "$(echo "$(median < "$W/a") $(median < "$W/b")" | awk '{print ($2>0)?$1/$2:0}')"
done
