#!/usr/bin/env bash
# Builds Ocelot, starts a local demo cluster in a temporary directory, and runs Ocelot in front of it on port 6432
# until Ctrl-C, which stops everything:
# - database "demo": a PostgreSQL 15 primary and two streaming replicas; reads are balanced over the replicas,
#   writes go to the primary;
# - database "sharded": two shards, each a primary with one streaming replica (shard 0 lives on the first
#   cluster), holding a sample table `accounts` hash-partitioned by id exactly as Ocelot routes it; writes that
#   touch both shards commit with two-phase commit.
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
SHARD1_PORT=${SHARD1_PORT:-15435}
SHARD1_REPLICA_PORT=${SHARD1_REPLICA_PORT:-15436}
OCELOT_PORT=${OCELOT_PORT:-6432}
METRICS_PORT=${METRICS_PORT:-9930}

cleanup() {
  "${AS[@]}" pg_ctl -D "$DEMO/replica" -m fast stop >/dev/null 2>&1 || true
  "${AS[@]}" pg_ctl -D "$DEMO/replica2" -m fast stop >/dev/null 2>&1 || true
  "${AS[@]}" pg_ctl -D "$DEMO/shard1_replica" -m fast stop >/dev/null 2>&1 || true
  "${AS[@]}" pg_ctl -D "$DEMO/shard1" -m fast stop >/dev/null 2>&1 || true
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
max_prepared_transactions = 20
CONF
echo "host replication all 127.0.0.1/32 trust" >> "$DEMO/primary/pg_hba.conf"
"${AS[@]}" pg_ctl -D "$DEMO/primary" -l "$DEMO/primary.log" -w start >/dev/null
psql -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -c "CREATE DATABASE demo" postgres
# Sample houses for the in-proxy models: id, size, rooms and the price to learn.
psql -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d demo -c \
  "CREATE TABLE houses AS SELECT g AS id, 40 + g % 160 AS size, 1 + g % 5 AS rooms,
     50 + 3 * (40 + g % 160) + 10 * (1 + g % 5) + g % 7 AS price FROM generate_series(1, 1000) g"
psql -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -c "CREATE DATABASE shard0" postgres
# Each shard holds the hash partition Ocelot routes to it (modulus 2), so a misrouted row could not be stored.
psql -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d shard0 -c \
  "CREATE TABLE accounts (id bigint, owner text, balance numeric(12,2)) PARTITION BY HASH (id);
   CREATE TABLE accounts_0 PARTITION OF accounts FOR VALUES WITH (MODULUS 2, REMAINDER 0);"
"${AS[@]}" initdb -A trust -U postgres -D "$DEMO/shard1" --no-sync >/dev/null
cat >> "$DEMO/shard1/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $SHARD1_PORT
unix_socket_directories = '$DEMO'
max_prepared_transactions = 20
CONF
echo "host replication all 127.0.0.1/32 trust" >> "$DEMO/shard1/pg_hba.conf"
"${AS[@]}" pg_ctl -D "$DEMO/shard1" -l "$DEMO/shard1.log" -w start >/dev/null
psql -X -q -h 127.0.0.1 -p "$SHARD1_PORT" -U postgres -c "CREATE DATABASE shard1" postgres
psql -X -q -h 127.0.0.1 -p "$SHARD1_PORT" -U postgres -d shard1 -c \
  "CREATE TABLE accounts (id bigint, owner text, balance numeric(12,2)) PARTITION BY HASH (id);
   CREATE TABLE accounts_1 PARTITION OF accounts FOR VALUES WITH (MODULUS 2, REMAINDER 1);"
"${AS[@]}" pg_basebackup -c fast -h 127.0.0.1 -p "$SHARD1_PORT" -U postgres -D "$DEMO/shard1_replica" -R >/dev/null
sed -i "s/^port = .*/port = $SHARD1_REPLICA_PORT/" "$DEMO/shard1_replica/postgresql.conf"
"${AS[@]}" pg_ctl -D "$DEMO/shard1_replica" -l "$DEMO/shard1_replica.log" -w start >/dev/null
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
enable_prometheus_exporter = true
prometheus_exporter_port = $METRICS_PORT

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

[pools.sharded]
query_parser_enabled = true
query_parser_read_write_splitting = true
automatic_sharding_key = "accounts.id"
two_phase_commit = true
shard_id_regex = '/\\* shard_id: (\\d+) \\*/'

[pools.sharded.users.0]
username = "demo"
password = "demo"
auth_type = "scram-sha-256"
server_username = "postgres"
pool_size = 5

[pools.sharded.shards.0]
database = "shard0"
servers = [["127.0.0.1", $PRIMARY_PORT, "primary"], ["127.0.0.1", $REPLICA_PORT, "replica"]]

[pools.sharded.shards.1]
database = "shard1"
servers = [["127.0.0.1", $SHARD1_PORT, "primary"], ["127.0.0.1", $SHARD1_REPLICA_PORT, "replica"]]
CONF
# Sample rows, inserted through Ocelot so each lands on the shard its id hashes to.
"$BIN" "$DEMO/pgcat.toml" -l warn & SEED_PID=$!
for _ in $(seq 50); do PGPASSWORD=demo psql -X -q -h 127.0.0.1 -p "$OCELOT_PORT" -U demo sharded -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.1; done
# One multi-row INSERT: Ocelot splits it by shard and commits both parts together.
VALUES=$(for id in $(seq 1 20); do printf "(%d, 'owner %d', %d * 10.5)," "$id" "$id" "$id"; done)
PGPASSWORD=demo psql -X -q -h 127.0.0.1 -p "$OCELOT_PORT" -U demo sharded \
  -c "INSERT INTO accounts (id, owner, balance) VALUES ${VALUES%,}"
kill -INT "$SEED_PID"; wait "$SEED_PID" 2>/dev/null || true

cat <<MSG

  Ocelot demo: primary on $PRIMARY_PORT, streaming replicas on $REPLICA_PORT and $REPLICA2_PORT, Ocelot on $OCELOT_PORT.
  Connect with:

    PGPASSWORD=demo psql -h 127.0.0.1 -p $OCELOT_PORT -U demo demo

  Then try: SELECT inet_server_port(), pg_is_in_recovery();   (a replica answers reads)
            CREATE TABLE t (x int); INSERT INTO t VALUES (1);  (writes go to the primary)
            SET SERVER ROLE TO 'primary'; SHOW SERVER ROLE;

  Sharded (2 shards, each a primary with a replica), 20 sample accounts:

    PGPASSWORD=demo psql -h 127.0.0.1 -p $OCELOT_PORT -U demo sharded

  Then try: SELECT *, inet_server_port() FROM accounts WHERE id = 7;       (one shard, by key)
            SELECT count(*), sum(balance), avg(balance) FROM accounts;      (every shard, merged)
            SELECT id, balance FROM accounts ORDER BY balance DESC LIMIT 3; (merged in order)
            SELECT id % 3 AS g, count(*) FROM accounts GROUP BY 1 ORDER BY 1;
            UPDATE accounts SET balance = balance + 1 WHERE balance > 100;  (both shards, two-phase commit)
            BEGIN; UPDATE accounts SET owner = 'x' WHERE id = 1;
                   UPDATE accounts SET owner = 'y' WHERE id = 2; COMMIT;    (a transaction across shards)
            /* shard_id: 1 */ SELECT count(*) FROM accounts;               (one shard, by comment)

  Models in the proxy (no extension on the servers), 1000 sample houses:
    PGPASSWORD=demo psql -h 127.0.0.1 -p $OCELOT_PORT -U demo demo
  Then try: SELECT * FROM pgml.train('houses', 'regression', 'houses', 'price');
            SELECT pgml.predict('houses', ARRAY[7, 120, 3]);
            SELECT * FROM pgml.log_predictions('houses', 0.5, actuals_table => 'houses', actuals_key => 'id');
            SELECT id, pgml.predict('houses', ARRAY[id, size + 30, rooms]) FROM houses;  (sizes drift)
            SELECT * FROM pgml.live_metrics('houses');  SELECT * FROM pgml.drift('houses');
  Dashboard: http://127.0.0.1:$METRICS_PORT/    Metrics: http://127.0.0.1:$METRICS_PORT/metrics
  Config: $DEMO/pgcat.toml    Stop: Ctrl-C

MSG
"$BIN" "$DEMO/pgcat.toml"
