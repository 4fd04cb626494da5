#!/usr/bin/env bash
# In-proxy prediction benchmark, interleaved in one run on one PostgreSQL:
# - `SELECT pgml.predict('houses', ARRAY[...]::real[])` answered by Ocelot from its model cache;
# - the same linear model trained by scikit-learn, pickled, and called as a PL/Python function inside
#   PostgreSQL (the pickle loaded once per backend, kept in GD), called through Ocelot's pool so that the
#   backends, warmed up first, keep their loaded model (a fresh backend spends about a second importing
#   scikit-learn);
# - the same scikit-learn model behind a small Python HTTP service (ThreadingHTTPServer, JSON in and out), loaded
#   by wrk with a POST per prediction;
# - the same linear model written as a SQL expression and computed by PostgreSQL (the best an in-database
#   model can do without Python: no function call overhead at all), through Ocelot;
# - `SELECT 1` through Ocelot to PostgreSQL, the floor of any query that reaches a server.
# At 1 and 50 clients; medians of ROUNDS rounds; ratios against PL/Python and SELECT 1. Then per-row inference
# over 100,000 rows: Ocelot's pgml.predict per row vs the PL/Python function per row (median of ROUNDS).
#
#   benches/predict.sh          # SECONDS_PER_RUN=8 ROUNDS=3
# Installs Debian's postgresql-plpython3-15, python3-sklearn and wrk when missing (this upgrades the server
# package to the plpython package's version).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
if [ ! -f "$(pg_config --pkglibdir)/plpython3.so" ] || ! /usr/bin/python3 -c "import sklearn" 2>/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-plpython3-15 python3-sklearn wrk >/dev/null
fi
cargo build --release -q
BIN="${CARGO_TARGET_DIR:-target}/release/ocelot"
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
ROUNDS=${ROUNDS:-3}
P=${BASE_PORT:-46432}
. benches/lib.sh
bench_setup predictbench

start_pg pg "$P" "-c max_connections=200"
seed_house "$P"
cat > "$W/ocelot.toml" <<CONF
[general]
host = "127.0.0.1"
port = $((P + 1))
admin_username = "admin"
admin_password = "admin"
worker_threads = ${WORKERS:-$(nproc)}
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

# The reference model: scikit-learn's LinearRegression on the same rows, pickled with the Python PL/Python uses.
psql -X -q -A -t -h 127.0.0.1 -p "$P" -U postgres -d bench -c "COPY house TO STDOUT WITH CSV" > "$W/house.csv"
/usr/bin/python3 - "$W" <<'PY'
import pickle, sys
import numpy as np
from sklearn.linear_model import LinearRegression
d = np.loadtxt(sys.argv[1] + "/house.csv", delimiter=",")
m = LinearRegression().fit(d[:750, :3], d[:750, 3])
pickle.dump(m, open(sys.argv[1] + "/model.pkl", "wb"))
PY
chmod 644 "$W/model.pkl"; chmod 755 "$W"
psql -X -q -h 127.0.0.1 -p "$P" -U postgres -d bench <<SQL
CREATE EXTENSION plpython3u;
CREATE FUNCTION sk_predict(features real[]) RETURNS real AS \$\$
if 'model' not in GD:
    import pickle
    GD['model'] = pickle.load(open('$W/model.pkl', 'rb'))
return float(GD['model'].predict([features])[0])
\$\$ LANGUAGE plpython3u;
CREATE TABLE house100k AS SELECT g AS id, (40 + (g * 37) % 160)::float8 AS size, 1 + (g * 7) % 6 AS rooms, (g * 13) % 80 AS age
  FROM generate_series(1, 100000) g;
SQL
# The HTTP model service.
cat > "$W/serve.py" <<'PY'
import json, pickle, socket, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
model = pickle.load(open(sys.argv[2], "rb"))
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, Nagle and delayed ACKs stall each response.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        y = float(model.predict([json.loads(body)["features"]])[0])
        out = json.dumps({"prediction": y}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
/usr/bin/python3 "$W/serve.py" $((P + 2)) "$W/model.pkl" 2>/dev/null & PIDS+=($!)
cat > "$W/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"features": [100, 3, 10]}'
wrk.headers["Content-Type"] = "application/json"
LUA
sleep 1
curl -s -X POST -d '{"features": [100, 3, 10]}' "http://127.0.0.1:$((P + 2))/" | grep -q prediction

echo "SELECT pgml.predict('houses', ARRAY[100, 3, 10]::real[]);" > "$W/predict.sql"
echo "SELECT sk_predict(ARRAY[100, 3, 10]::real[]);" > "$W/plpython.sql"
echo "SELECT (50 + 3 * 100 + 10 * 3 - 0.5 * 10)::real;" > "$W/sqlexpr.sql"
echo "SELECT 1;" > "$W/one.sql"
bench() { # PORT SCRIPT CLIENTS [PROTOCOL] -> tps
  pgbench -h 127.0.0.1 -p "$1" -U postgres -n -M "${4:-simple}" -f "$2" -c "$3" -j "$(( $3 < 2 ? 1 : 2 ))" -T "$SECONDS_PER_RUN" bench 2>&1 \
    | awk '/^tps/ {print $3}'
}
http() { # CLIENTS -> requests/s
  wrk -t "$(( $1 < 2 ? 1 : 2 ))" -c "$1" -d "${SECONDS_PER_RUN}s" -s "$W/post.lua" "http://127.0.0.1:$((P + 2))/" \
    | awk '/^Requests\/sec/ {print $2}'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# Every pooled backend imports scikit-learn and loads the pickle once, before anything is measured.
bench $((P + 1)) "$W/plpython.sql" 10 > /dev/null
bench $((P + 1)) "$W/plpython.sql" 10 > /dev/null
printf "%s s x %s rounds; %s cores; PostgreSQL 15\n\n" "$SECONDS_PER_RUN" "$ROUNDS" "$(nproc)"
for clients in 1 50; do
  : > "$W/p"; : > "$W/y"; : > "$W/h"; : > "$W/s"; : > "$W/o"
  for _ in $(seq "$ROUNDS"); do
    bench $((P + 1)) "$W/predict.sql" "$clients" >> "$W/p"
    bench $((P + 1)) "$W/plpython.sql" "$clients" >> "$W/y"
    http "$clients" >> "$W/h"
    bench $((P + 1)) "$W/sqlexpr.sql" "$clients" >> "$W/s"
    bench $((P + 1)) "$W/one.sql" "$clients" >> "$W/o"
  done
  p=$(median < "$W/p"); y=$(median < "$W/y"); h=$(median < "$W/h"); s=$(median < "$W/s"); o=$(median < "$W/o")
  printf "%2s clients: pgml.predict in Ocelot %7.0f/s | PL/Python sklearn %7.0f/s | HTTP sklearn %7.0f/s | model as SQL via Ocelot %7.0f/s | SELECT 1 via Ocelot %7.0f/s\n" \
    "$clients" "$p" "$y" "$h" "$s" "$o"
  printf "            Ocelot/PL/Python %.1fx | Ocelot/HTTP %.1fx | Ocelot/SELECT 1 %.2fx\n" \
    "$(echo "$p $y" | awk '{print ($2>0)?$1/$2:0}')" "$(echo "$p $h" | awk '{print ($2>0)?$1/$2:0}')" "$(echo "$p $o" | awk '{print ($2>0)?$1/$2:0}')"
done

# The extended protocol (Parse/Bind/Describe/Execute/Sync per call, unnamed statement), as drivers send queries
# with parameters.
echo
for clients in 1 50; do
  : > "$W/p"; : > "$W/y"
  for _ in $(seq "$ROUNDS"); do
    bench $((P + 1)) "$W/predict.sql" "$clients" extended >> "$W/p"
    bench $((P + 1)) "$W/plpython.sql" "$clients" extended >> "$W/y"
  done
  p=$(median < "$W/p"); y=$(median < "$W/y")
  printf "%2s clients, extended protocol: pgml.predict in Ocelot %7.0f/s | PL/Python sklearn %7.0f/s | %.1fx\n" \
    "$clients" "$p" "$y" "$(echo "$p $y" | awk '{print ($2>0)?$1/$2:0}')"
done

# Per-row inference over 100,000 rows, the whole result read by psql.
per_row() { # PORT SQL -> seconds
  local t0 t1
  t0=$(date +%s.%N)
  psql -X -q -A -t -h 127.0.0.1 -p "$1" -U postgres -d bench -c "$2" > /dev/null
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{print $2 - $1}'
}
: > "$W/rp"; : > "$W/ry"
for _ in $(seq "$ROUNDS"); do
  per_row $((P + 1)) "SELECT id, pgml.predict('houses', ARRAY[size, rooms, age]) FROM house100k" >> "$W/rp"
  per_row $((P + 1)) "SELECT id, sk_predict(ARRAY[size, rooms, age]::real[]) FROM house100k" >> "$W/ry"
done
rp=$(median < "$W/rp"); ry=$(median < "$W/ry")
printf "\nper-row over 100,000 rows: Ocelot %.2f s (%.0f rows/s) | PL/Python %.2f s (%.0f rows/s) | %.1fx\n" \
  "$rp" "$(echo "$rp" | awk '{print 100000/$1}')" "$ry" "$(echo "$ry" | awk '{print 100000/$1}')" "$(echo "$rp $ry" | awk '{print $2/$1}')"
