#!/usr/bin/env bash
# Installs the client drivers the driver tests use: asyncpg and psycopg 3 (PyPI), node-postgres (npm, into
# tests/drivers/node), pgjdbc (Debian's libpostgresql-jdbc-java); and the reference libraries the inference
# fidelity tests compare with: scikit-learn and XGBoost (the CPU-only wheel) from PyPI. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import asyncpg, psycopg" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore asyncpg "psycopg[binary]"
python3 -c "import sklearn, xgboost" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore scikit-learn xgboost-cpu
[ -d tests/drivers/node/node_modules/pg ] || (cd tests/drivers/node && npm install --silent --no-audit --no-fund pg@8 >/dev/null)
if [ ! -f /usr/share/java/postgresql.jar ] || ! command -v javac >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpostgresql-jdbc-java default-jdk-headless >/dev/null
fi
