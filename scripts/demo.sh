#!/usr/bin/env bash
# The main job on a fresh machine: install everything, create the embedded SpatiaLite CIM database,
# generate the Benxi demo city into it (skipped when the same demo is already there), and serve the
# OGC API at http://127.0.0.1:5000 (Ctrl-C stops it). Extra arguments go to `cim serve`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh"
cd "$ROOT"
CIM="$ROOT/.venv/bin/cim"
"$CIM" db init
"$CIM" db upgrade
"$CIM" demo --skip-if-present
exec "$CIM" serve "$@"
