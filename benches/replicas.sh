#!/usr/bin/env bash
# Read scaling: pgbench -S with 50 clients through Ocelot in front of one primary, against Ocelot in front of the
# same primary plus two streaming replicas (read/write splitting on, reads balanced over the replicas), the two
# interleaved in each round. Prints TPS of each and the ratio.
#
#   benches/replicas.sh                     # 50 clients, 10 s per run, 3 rounds
#   CLIENTS=100 SECONDS_PER_RUN=20 ROUNDS=5 MODE=loc benches/replicas.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
cargo build --release -q
BIN="${CARGO_TARGET_DIR:-target}/release/ocelot"

CLIENTS=${CLIENTS:-50}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
ROUNDS=${ROUNDS:-3}
MODE=${MODE:-random}
SCALE=${SCALE:-10}
P=${BASE_PORT:-35432}
W=$(mktemp -d /tmp/ocelot-replbench.XXXXXX)
AS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$W"; AS=(runuser -u postgres --); fi
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for d in r2 r1 pg; do "${AS[@]}" pg_ctl -D "$W/$d" -m immediate stop >/dev/null 2>&1 || true; done
  rm -rf "$W"
}
trap cleanup EXIT

start_pg() { # DIR PORT
  "${AS[@]}" pg_ctl -D "$W/$1" -l "$W/$1.log" -w \
    -o "-p $2 -k $W -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=128MB" start >/dev/null
}
"${AS[@]}" initdb -A trust -U postgres -D "$W/pg" --no-sync >/dev/null
echo "host replication all 127.0.0.1/32 trust" >> "$W/pg/pg_hba.conf"
start_pg pg "$P"
psql -X -q -h 127.0.0.1 -p "$P" -U postgres -c "CREATE DATABASE bench" postgres
pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p "$P" -U postgres bench >/dev/null 2>&1
for r in r1 r2; do
  "${AS[@]}" pg_basebackup -c fast -h 127.0.0.1 -p "$P" -U postgres -D "$W/$r" -R >/dev/null
done
start_pg r1 $((P + 1))
start_pg r2 $((P + 2))

config() { # PORT SERVERS
  cat <<CONF
[general]
host = "127.0.0.1"
port = $1
admin_username = "admin"
admin_password = "admin"
worker_threads = $(nproc)
[pools.bench]
query_parser_enabled = true
query_parser_read_write_splitting = true
load_balancing_mode = "$MODE"
[pools.bench.users.0]
username = "postgres"
auth_type = "trust"
pool_size = 20
[pools.bench.shards.0]
database = "bench"
servers = [$2]
CONF
}
config $((P + 10)) "[\"127.0.0.1\", $P, \"primary\"]" > "$W/one.toml"
config $((P + 11)) "[\"127.0.0.1\", $P, \"primary\"], [\"127.0.0.1\", $((P + 1)), \"replica\"], [\"127.0.0.1\", $((P + 2)), \"replica\"]" > "$W/three.toml"
"$BIN" "$W/one.toml" -l warn & PIDS+=($!)
"$BIN" "$W/three.toml" -l warn & PIDS+=($!)
sleep 1

tps() { pgbench -h 127.0.0.1 -p "$1" -U postgres -S -n -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" bench 2>/dev/null | awk '/^tps/ {print $3}'; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
: > "$W/a"; : > "$W/b"
for _ in $(seq "$ROUNDS"); do
  tps $((P + 10)) >> "$W/a"
  tps $((P + 11)) >> "$W/b"
done
a=$(median < "$W/a"); b=$(median < "$W/b")
printf "pgbench -S, %s clients, %s s x %s rounds, %s cores, balancing %s\n" "$CLIENTS" "$SECONDS_PER_RUN" "$ROUNDS" "$(nproc)" "$MODE"
printf "one primary:                %10.0f tps\n" "$a"
printf "primary + 2 replicas:       %10.0f tps\n" "$b"
printf "ratio:                      %10.2f\n" "$(echo "$b $a" | awk '{print ($2>0)?$1/$2:0}')"
