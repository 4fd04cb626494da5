#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests that start their own PostgreSQL 15 servers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
cargo test --all-targets "$@"
