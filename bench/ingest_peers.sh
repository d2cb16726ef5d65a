#!/usr/bin/env bash
# The peer of bench/ingest_bench.py in its own virtual environment, idempotently:
#   - bench/.venv-cjdb: cjdb (TU Delft's CityJSONSeq → PostgreSQL importer, `cjdb import`) with every
#     dependency pinned exactly. It must not share our .venv: it pins numpy < 2, GeoAlchemy2 < 0.14,
#     cjio < 0.10 and psycopg2, where we use numpy 2, GeoAlchemy2 0.20 and psycopg 3.
# The venv is rebuilt only when the pin list below changes.
# Environment: CIM_PYTHON (interpreter to use, Python >= 3.10; the same search as scripts/install.sh).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH/.venv-cjdb"

log() { printf '[ingest-peers] %s\n' "$*" >&2; }
die() { printf '[ingest-peers] error: %s\n' "$*" >&2; exit 1; }

# cjdb 2.3.0 is the latest release at the time of writing; the rest is what pip resolved for it on
# Python 3.12 (2026-12-05), pinned so that reruns compare the same peer, except SQLAlchemy: cjdb builds
# its engine from a plain postgresql:// URL and installs only psycopg2, but SQLAlchemy 2.1 (which pip picks,
# cjdb sets no upper bound) maps postgresql:// to psycopg 3, so `cjdb import` fails at once with
# "No module named 'psycopg'". SQLAlchemy 2.0 still maps it to psycopg2.
CJDB_PINS=(
  "cjdb==2.3.0"
  "cjio==0.9.0"
  "GeoAlchemy2==0.13.3"
  "SQLAlchemy==2.0.58"
  "numpy==1.26.4"
  "psycopg2-binary==2.9.13"
  "pyproj==3.8.0"
  "shapely==2.2.0"
  "greenlet==3.5.6"
  "typing_extensions==4.16.0"
  "click==8.5.1"
  "requests==2.34.2"
)

# python_ok, find_python: the same search as scripts/install.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/python.sh"

STAMP="$VENV/.pins"
WANT="$(printf '%s\n' "${CJDB_PINS[@]}")"
if [ -x "$VENV/bin/cjdb" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "cjdb: $("$VENV/bin/cjdb" --version) (up to date in $VENV)"
  exit 0
fi
PY="$(find_python)" || die "no Python >= 3.12 with venv found; set CIM_PYTHON"
log "building $VENV with $PY ($("$PY" --version 2>&1))"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${CJDB_PINS[@]}"
"$VENV/bin/python" -m pip check >&2 || die "pip check failed in $VENV"
printf '%s\n' "${CJDB_PINS[@]}" > "$STAMP"
log "cjdb: $("$VENV/bin/cjdb" --version)"
