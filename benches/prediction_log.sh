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
. benches/lib.sh
bench_setup logbench
start_pg pg "$P" "-c max_connections=200"
seed_house "$P"
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
  echo "round $round done"
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
