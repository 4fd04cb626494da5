#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests that start their own PostgreSQL 15 servers and drive
# Ocelot with real clients (tokio-postgres, psql, pgbench, asyncpg, psycopg, node-postgres, pgjdbc).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
./scripts/setup-drivers.sh
./scripts/fetch-models.sh
cargo test --workspace --all-targets "$@"
