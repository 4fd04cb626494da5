#!/usr/bin/env bash
# Side-by-side throughput benchmark: pgbench -S (select-only) through Ocelot, through PgBouncer (transaction mode,
# same pool size) and directly to PostgreSQL, at several client counts, in simple, extended and prepared protocol
# modes (prepared: named statements, which Ocelot maps onto its per-server statement cache), the three
# targets interleaved in each round. Prints TPS, each pooler's ratio to direct, each pooler's CPU time per
# transaction (user + system, from /proc), and added latency at 1 client.
#
#   benches/pgbench.sh                 # 1 10 50 200 clients, 10 s per run, 1 round
#   CLIENTS="10 50" MODES=prepared SECONDS_PER_RUN=20 ROUNDS=3 benches/pgbench.sh
#
# Needs pgbouncer (apt-get install -y pgbouncer); everything runs on 127.0.0.1 and stops at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
command -v pgbouncer >/dev/null || { apt-get update -qq && apt-get install -y -qq pgbouncer >/dev/null; }
# OCELOT_BIN runs a given build instead (to compare two builds).
if [ -z "${OCELOT_BIN:-}" ]; then cargo build --release -q; fi
BIN="${OCELOT_BIN:-${CARGO_TARGET_DIR:-target}/release/ocelot}"

CLIENTS=${CLIENTS:-"1 10 50 200"}
MODES=${MODES:-"simple extended prepared"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
ROUNDS=${ROUNDS:-1}
POOL=${POOL:-20}
WORKERS=${WORKERS:-$(nproc)}
SCALE=${SCALE:-10}
PG_PORT=${PG_PORT:-25432}; BOUNCER_PORT=${BOUNCER_PORT:-26432}; OCELOT_PORT=${OCELOT_PORT:-27432}

W=$(mktemp -d /tmp/ocelot-bench.XXXXXX)
AS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$W"; AS=(runuser -u postgres --); fi
cleanup() {
  [ -n "${OCELOT_PID:-}" ] && kill "$OCELOT_PID" 2>/dev/null || true
  [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null || true
  "${AS[@]}" pg_ctl -D "$W/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$W"
}
trap cleanup EXIT

"${AS[@]}" initdb -A trust -U postgres -D "$W/pg" --no-sync >/dev/null
"${AS[@]}" pg_ctl -D "$W/pg" -l "$W/pg.log" -w \
  -o "-p $PG_PORT -k $W -c listen_addresses=127.0.0.1 -c max_connections=400 -c shared_buffers=256MB" start >/dev/null
psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -c "CREATE DATABASE bench" postgres
pgbench -q -i -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >/dev/null 2>&1

cat > "$W/pgbouncer.ini" <<CONF
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $W/users.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = 1000
logfile = $W/pgbouncer.log
CONF
echo '"postgres" ""' > "$W/users.txt"
if [ "${#AS[@]}" -gt 0 ]; then chown postgres "$W/pgbouncer.ini" "$W/users.txt"; fi
"${AS[@]}" pgbouncer "$W/pgbouncer.ini" >/dev/null 2>&1 &
BOUNCER_PID=$!

cat > "$W/pgcat.toml" <<CONF
[general]
host = "127.0.0.1"
port = $OCELOT_PORT
admin_username = "admin"
admin_password = "admin"
worker_threads = ${WORKERS:-$(nproc)}
[pools.bench.users.0]
username = "postgres"
auth_type = "trust"
pool_size = $POOL
[pools.bench.shards.0]
database = "bench"
servers = [["127.0.0.1", $PG_PORT, "primary"]]
CONF
"$BIN" "$W/pgcat.toml" -l warn &
OCELOT_PID=$!
sleep 1

BOUNCER_REAL_PID=$(pgrep -n -x pgbouncer)

# CPU time (user + system) of a process, in microseconds.
cpu_us() {
  [ -z "$1" ] && { echo 0; return; }
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) * 1000000 / hz}' "/proc/$1/stat"
}

# run PORT CLIENTS MODE [PID] -> "tps latency_ms cpu_us_per_transaction"
run() {
  local out before after n
  before=$(cpu_us "${4:-}")
  out=$(pgbench -h 127.0.0.1 -p "$1" -U postgres -S -n -c "$2" -j "$(( $2 < 2 ? 1 : 2 ))" -T "$SECONDS_PER_RUN" -M "$3" bench 2>&1) || { echo "0 0 0"; return; }
  after=$(cpu_us "${4:-}")
  n=$(echo "$out" | awk -F': ' '/actually processed/ {split($2, a, "/"); print a[1]}')
  echo "$(echo "$out" | awk '/^tps/ {print $3}') $(echo "$out" | awk '/^latency average/ {print $4}') $(echo "$before $after $n" | awk '{print ($3>0)?($2-$1)/$3:0}')"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

printf "pgbench -S, %s s per run, %s round(s), pool %s, scale %s, %s cores\n\n" "$SECONDS_PER_RUN" "$ROUNDS" "$POOL" "$SCALE" "$(nproc)"
printf "%-9s %7s %12s %12s %12s %9s %9s %13s %14s\n" mode clients direct_tps ocelot_tps bouncer_tps ocelot/% bouncer/% ocelot_cpu_us bouncer_cpu_us
for mode in $MODES; do
  for c in $CLIENTS; do
    : > "$W/d"; : > "$W/o"; : > "$W/b"; : > "$W/dl"; : > "$W/ol"; : > "$W/bl"; : > "$W/oc"; : > "$W/bc"
    for _ in $(seq "$ROUNDS"); do
      read -r t l < <(run "$PG_PORT" "$c" "$mode"); echo "$t" >> "$W/d"; echo "$l" >> "$W/dl"
      read -r t l u < <(run "$OCELOT_PORT" "$c" "$mode" "$OCELOT_PID"); echo "$t" >> "$W/o"; echo "$l" >> "$W/ol"; echo "$u" >> "$W/oc"
      read -r t l u < <(run "$BOUNCER_PORT" "$c" "$mode" "$BOUNCER_REAL_PID"); echo "$t" >> "$W/b"; echo "$l" >> "$W/bl"; echo "$u" >> "$W/bc"
    done
    d=$(median < "$W/d"); o=$(median < "$W/o"); b=$(median < "$W/b")
    printf "%-9s %7s %12.0f %12.0f %12.0f %8.0f%% %8.0f%% %13.1f %14.1f\n" "$mode" "$c" "$d" "$o" "$b" \
      "$(echo "$o $d" | awk '{print ($2>0)?100*$1/$2:0}')" "$(echo "$b $d" | awk '{print ($2>0)?100*$1/$2:0}')" \
      "$(median < "$W/oc")" "$(median < "$W/bc")"
    if [ "$c" = 1 ]; then
      dl=$(median < "$W/dl"); ol=$(median < "$W/ol"); bl=$(median < "$W/bl")
      printf "          latency at 1 client: direct %.3f ms, ocelot +%.0f us, pgbouncer +%.0f us\n" "$dl" \
        "$(echo "$ol $dl" | awk '{print 1000*($1-$2)}')" "$(echo "$bl $dl" | awk '{print 1000*($1-$2)}')"
    fi
  done
done
