#!/usr/bin/env bash
# Runs each cargo-fuzz target (fuzz/fuzz_targets) for SECONDS seconds (default 60) on the nightly toolchain,
# growing the corpus in fuzz/corpus/<target>, and prints the executions per target. A crash stops the script and
# leaves its input in fuzz/artifacts/<target>/: add it as a regression test before fixing it.
#
#   scripts/fuzz.sh            # every target, 60 s each
#   scripts/fuzz.sh 600 router # one target, 10 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-60}
shift || true
TARGETS=${*:-frontend backend router config pgml}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
cd fuzz
for t in $TARGETS; do
  mkdir -p "corpus/$t"
  out=$(cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -print_final_stats=1 2>&1) || {
    echo "$out" | tail -40
    echo "fuzz target $t crashed: see fuzz/artifacts/$t/"
    exit 1
  }
  runs=$(echo "$out" | awk '/stat::number_of_executed_units/ {print $NF}')
  echo "$t: $runs executions in $SECONDS_PER_TARGET s, no crash; corpus $(ls "corpus/$t" | wc -l) inputs"
done
