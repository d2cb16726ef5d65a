#!/usr/bin/env bash
# Runs the whole test suite: installs what it needs first (idempotent), then pytest. The tests start
# their own throwaway PostgreSQL + PostGIS server and their own HTTP servers. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
