#!/usr/bin/env bash
# Installs the client drivers the driver tests use: asyncpg and psycopg 3 (PyPI), node-postgres (npm, into
# tests/drivers/node), pgjdbc (Debian's libpostgresql-jdbc-java); and the reference libraries the inference
# fidelity tests compare with: scikit-learn, XGBoost (the CPU-only wheel) and LangChain's text splitters from PyPI;
# and prometheus-client, whose parser checks the metrics exposition; Debian's Chromium and ChromeDriver with
# Playwright's playwright-core (npm, into tests/browser) for the dashboard's browser test.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import asyncpg, psycopg" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore asyncpg "psycopg[binary]"
python3 -c "import sklearn, xgboost, langchain_text_splitters, prometheus_client" 2>/dev/null || python3 -m pip install -q --root-user-action=ignore scikit-learn xgboost-cpu langchain-text-splitters prometheus-client
[ -d tests/drivers/node/node_modules/pg ] || (cd tests/drivers/node && npm install --silent --no-audit --no-fund pg@8 >/dev/null)
[ -d tests/browser/node_modules/playwright-core ] || (cd tests/browser && npm install --silent --no-audit --no-fund >/dev/null)
if [ ! -f /usr/share/java/postgresql.jar ] || ! command -v javac >/dev/null || [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpostgresql-jdbc-java default-jdk-headless chromium chromium-driver >/dev/null
fi
