#!/usr/bin/env bash
# Builds Ocelot, starts a local demo cluster (a PostgreSQL 15 primary and a streaming replica in a temporary
# directory), and runs Ocelot in front of it on port 6432 until Ctrl-C, which stops everything.
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
OCELOT_PORT=${OCELOT_PORT:-6432}

cleanup() {
  "${AS[@]}" pg_ctl -D "$DEMO/replica" -m fast stop >/dev/null 2>&1 || true
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

cat > "$DEMO/pgcat.toml" <<CONF
[general]
host = "127.0.0.1"
port = $OCELOT_PORT
admin_username = "admin"
admin_password = "admin"

[pools.demo]
pool_mode = "transaction"

[pools.demo.users.0]
username = "demo"
password = "demo"
auth_type = "scram-sha-256"
server_username = "postgres"
pool_size = 5

[pools.demo.shards.0]
database = "demo"
servers = [["127.0.0.1", $PRIMARY_PORT, "primary"], ["127.0.0.1", $REPLICA_PORT, "replica"]]
CONF

cat <<MSG

  Ocelot demo: primary on $PRIMARY_PORT, streaming replica on $REPLICA_PORT, Ocelot on $OCELOT_PORT.
  Connect with:

    PGPASSWORD=demo psql -h 127.0.0.1 -p $OCELOT_PORT -U demo demo

  Config: $DEMO/pgcat.toml    Stop: Ctrl-C

MSG
"$BIN" "$DEMO/pgcat.toml"
