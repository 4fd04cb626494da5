#!/usr/bin/env bash
# Runs PgCat's Ruby specs against the Ocelot binary, one spec file at a time (an example that fails after `ALTER
# USER ... PASSWORD` would leave the password changed for every later file), and prints each file's summary.
# Usage: run.sh <pgcat checkout> <ocelot binary> [spec files]. Needs setup.sh first, and Debian's ruby, ruby-pg,
# ruby-rspec, ruby-toml, ruby-activerecord, and pip's tomli-w. See docs/peer-suites.md.
set -uo pipefail
repo=$(cd "${1:?usage: run.sh <pgcat checkout> <ocelot binary> [specs]}" && pwd)
bin=$(realpath "${2:?ocelot binary}")
shift 2
here=$(cd "$(dirname "$0")" && pwd)
# The specs start $CARGO_TARGET_DIR/debug/pgcat.
target=$(mktemp -d)
mkdir -p "$target/debug" && ln -s "$bin" "$target/debug/pgcat"
export CARGO_TARGET_DIR=$target RUBYLIB=$here PATH="$here:$PATH"
cd "$repo/tests/ruby"
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(*_spec.rb)
for spec in "${specs[@]}"; do
  PGPASSWORD=postgres psql -q -h 127.0.0.1 -p 5432 -U postgres -c "ALTER USER sharding_user PASSWORD 'sharding_user'" >/dev/null
  out=$(timeout 900 rspec "$spec" 2>&1 | tr -d '\0')
  echo "$spec: $(grep -E '^[0-9]+ examples?' <<<"$out" | tail -1)"
  grep -E '^rspec ./' <<<"$out" | sed 's/^/  /'
done
rm -rf "$target"
