#!/usr/bin/env bash
# Builds Ocelot, starts a local demo cluster (a PostgreSQL 15 primary and two streaming replicas in a temporary
# directory), and runs Ocelot in front of it on port 6432 until Ctrl-C, which stops everything. Reads are
# balanced over the replicas, writes go to the primary.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
cargo build --release
BIN="${CARGO_TARGET_DIR:-target}/release/ocelot"

DEMO=$(mktemp -d /tmp/ocelot-demo.XXXXXX)
AS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$DEMO"; AS=(runuser -u postgres --); fi
PRIMARY_PORT=${PRIMARY_PORT:-15432}
REPLICA_PORT=${REPLICA_PORT:-15433}
REPLICA2_PORT=${REPLICA2_PORT:-15434}
OCELOT_PORT=${OCELOT_PORT:-6432}

cleanup() {
  "${AS[@]}" pg_ctl -D "$DEMO/replica" -m fast stop >/dev/null 2>&1 || true
  "${AS[@]}" pg_ctl -D "$DEMO/replica2" -m fast stop >/dev/null 2>&1 || true
  "${AS[@]}" pg_ctl -D "$DEMO/primary" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$DEMO"
}
trap cleanup EXIT

"${AS[@]}" initdb -A trust -U postgres -D "$DEMO/primary" --no-sync >/dev/null
cat >> "$DEMO/primary/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PRIMARY_PORT
unix_socket_directories = '$DEMO'
wal_level = replica
CONF
echo "host replication all 127.0.0.1/32 trust" >> "$DEMO/primary/pg_hba.conf"
"${AS[@]}" pg_ctl -D "$DEMO/primary" -l "$DEMO/primary.log" -w start >/dev/null
psql -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -c "CREATE DATABASE demo" postgres
"${AS[@]}" pg_basebackup -c fast -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DEMO/replica" -R >/dev/null
sed -i "s/^port = .*/port = $REPLICA_PORT/" "$DEMO/replica/postgresql.conf"
"${AS[@]}" pg_ctl -D "$DEMO/replica" -l "$DEMO/replica.log" -w start >/dev/null
"${AS[@]}" pg_basebackup -c fast -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -D "$DEMO/replica2" -R >/dev/null
sed -i "s/^port = .*/port = $REPLICA2_PORT/" "$DEMO/replica2/postgresql.conf"
"${AS[@]}" pg_ctl -D "$DEMO/replica2" -l "$DEMO/replica2.log" -w start >/dev/null

cat > "$DEMO/pgcat.toml" <<CONF
[general]
host = "127.0.0.1"
port = $OCELOT_PORT
admin_username = "admin"
admin_password = "admin"

[pools.demo]
pool_mode = "transaction"
query_parser_enabled = true
query_parser_read_write_splitting = true
load_balancing_mode = "loc"

[pools.demo.users.0]
username = "demo"
password = "demo"
auth_type = "scram-sha-256"
server_username = "postgres"
pool_size = 5

[pools.demo.shards.0]
database = "demo"
servers = [["127.0.0.1", $PRIMARY_PORT, "primary"], ["127.0.0.1", $REPLICA_PORT, "replica"], ["127.0.0.1", $REPLICA2_PORT, "replica"]]
CONF

cat <<MSG

  Ocelot demo: primary on $PRIMARY_PORT, streaming replicas on $REPLICA_PORT and $REPLICA2_PORT, Ocelot on $OCELOT_PORT.
  Connect with:

    PGPASSWORD=demo psql -h 127.0.0.1 -p $OCELOT_PORT -U demo demo

  Then try: SELECT inet_server_port(), pg_is_in_recovery();   (a replica answers reads)
            CREATE TABLE t (x int); INSERT INTO t VALUES (1);  (writes go to the primary)
            SET SERVER ROLE TO 'primary'; SHOW SERVER ROLE;

  Config: $DEMO/pgcat.toml    Stop: Ctrl-C

MSG
"$BIN" "$DEMO/pgcat.toml"
