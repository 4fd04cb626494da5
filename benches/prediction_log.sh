#!/usr/bin/env bash
# What prediction logging costs the predictions it samples. One PostgreSQL, one Ocelot (release build), the
# `houses` linear model; pgbench runs `SELECT pgml.predict('houses', ARRAY[...])` at CLIENTS clients with the
# project's logging off, at sample rate 0.1 and at 1.0, interleaved, ROUNDS rounds of SECONDS_PER_RUN seconds;
# prints the median predictions/s of each and its ratio to logging off, then what the log wrote and dropped.
#
#   benches/prediction_log.sh          # CLIENTS=50 SECONDS_PER_RUN=8 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
BIN="${CARGO_TARGET_DIR:-target}/release/ocelot"
[ -x "$BIN" ] || cargo build --release
CLIENTS=${CLIENTS:-50}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
ROUNDS=${ROUNDS:-3}
P=${BASE_PORT:-25432}
W=$(mktemp -d /tmp/ocelot-logbench.XXXXXX)
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
enable_prometheus_exporter = true
prometheus_exporter_port = $((P + 2))
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
q() { psql -X -q -A -t -h 127.0.0.1 -p $((P + 1)) -U postgres -d bench -c "$1"; }
q "SELECT * FROM pgml.train('houses', 'regression', 'house', 'price', test_sampling => 'last')" >/dev/null 2>&1
echo "SELECT pgml.predict('houses', ARRAY[100, 3, 10]::real[]);" > "$W/predict.sql"
run() {
  pgbench -h 127.0.0.1 -p $((P + 1)) -U postgres -n -f "$W/predict.sql" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" bench 2>&1 \
    | awk '/^tps/ {printf "%.0f\n", $3}'
}
declare -A R
for round in $(seq "$ROUNDS"); do
  for rate in 0 0.1 1; do
    q "SELECT * FROM pgml.log_predictions('houses', $rate)" >/dev/null
    R[$rate]+="$(run) "
  done
  echo "round $round: off ${R[0]##* } 0.1 ${R[0.1]% } 1.0 ${R[1]% }" | awk '{print "round", $2, "done"}'
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
off=$(echo "${R[0]}" | median)
echo "pgml.predict at $CLIENTS clients, median of $ROUNDS rounds of ${SECONDS_PER_RUN} s (predictions/s):"
for rate in 0 0.1 1; do
  m=$(echo "${R[$rate]}" | median)
  awk -v r="$rate" -v m="$m" -v o="$off" -v all="${R[$rate]}" \
    'BEGIN {printf "  logging %-4s %8d  (%.3f of off; rounds: %s)\n", (r == 0 ? "off" : r), m, m / o, all}'
done
sleep 1
echo "log rows in pgml.predictions: $(q 'SELECT count(*) FROM pgml.predictions')"
curl -s "http://127.0.0.1:$((P + 2))/metrics" | grep '^ocelot_prediction_log_rows_total' | sed 's/^/  /'
