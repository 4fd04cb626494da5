# Sourced by the benchmark scripts: a work directory owned by the server user and removed at exit, with the
# PostgreSQL servers and background processes started in it stopped first.
#   bench_setup NAME                 sets W (the directory), AS (the command prefix for server programs), PIDS
#   start_pg DIR PORT [OPTIONS]      initdb and start a server in $W/DIR on PORT (OPTIONS: extra -c settings)
#   seed_house PORT                  database "bench" with the 1000-row table `house` the predict benchmarks train on

bench_setup() {
  W=$(mktemp -d "/tmp/ocelot-$1.XXXXXX")
  AS=()
  if [ "$(id -u)" = 0 ]; then chown postgres "$W"; AS=(runuser -u postgres --); fi
  PIDS=()
  PGDIRS=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for d in "${PGDIRS[@]}"; do "${AS[@]}" pg_ctl -D "$d" -m immediate stop >/dev/null 2>&1 || true; done
  rm -rf "$W"
}

seed_house() {
  psql -X -q -h 127.0.0.1 -p "$1" -U postgres -c "CREATE DATABASE bench" postgres
  psql -X -q -h 127.0.0.1 -p "$1" -U postgres -d bench -c \
    "CREATE TABLE house AS SELECT s AS size, r AS rooms, a AS age, 50 + 3 * s + 10 * r - 0.5 * a AS price
       FROM (SELECT (40 + (g * 37) % 160)::float8 AS s, 1 + (g * 7) % 6 AS r, (g * 13) % 80 AS a FROM generate_series(1, 1000) g) t"
}

start_pg() {
  local d="$W/$1"
  PGDIRS+=("$d")
  "${AS[@]}" initdb -A trust -U postgres -D "$d" --no-sync >/dev/null
  "${AS[@]}" pg_ctl -D "$d" -l "$d.log" -w -o "-p $2 -k $W -c listen_addresses=127.0.0.1 ${3:-}" start >/dev/null
}
