#!/usr/bin/env bash
# Soak: an hour (or the seconds given) of mixed traffic through a release build of Ocelot, with a fault or a
# reload every minute, printing throughput, errors and Ocelot's memory every minute (tests/soak.rs). CI runs a
# two-minute version of the same test against the debug build.
#   scripts/soak.sh [seconds] [report-seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-postgres.sh
secs="${1:-3600}"
report="${2:-60}"
cargo build --release --bin ocelot
target="${CARGO_TARGET_DIR:-target}"
OCELOT_BIN="$PWD/$target/release/ocelot" OCELOT_SOAK_SECS="$secs" OCELOT_SOAK_REPORT_SECS="$report" \
    cargo test --test soak -- --nocapture
