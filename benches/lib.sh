# Sourced by the benchmark scripts: a work directory owned by the server user and removed at exit, with the
# PostgreSQL servers and background processes started in it stopped first.
#   bench_setup NAME                 sets W (the directory), AS (the command prefix for server programs), PIDS
#   start_pg DIR PORT [OPTIONS]      initdb and start a server in $W/DIR on PORT (OPTIONS: extra -c settings)

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

start_pg() {
  local d="$W/$1"
  PGDIRS+=("$d")
  "${AS[@]}" initdb -A trust -U postgres -D "$d" --no-sync >/dev/null
  "${AS[@]}" pg_ctl -D "$d" -l "$d.log" -w -o "-p $2 -k $W -c listen_addresses=127.0.0.1 ${3:-}" start >/dev/null
}
