#!/usr/bin/env bash
# The peers of bench/features_bench.py, each in its own virtual environment (they must not share our
# .venv: different servers, different pins), and the load generator, idempotently:
#   - wrk (the Debian package), the HTTP load generator every window uses;
#   - bench/.venv-pygeoapi: stock pygeoapi 0.24 with what its `PostgreSQL` feature provider imports
#     (SQLAlchemy + GeoAlchemy2 + pygeofilter, and the psycopg2 driver it hard-codes: postgresql+psycopg2),
#     served by gunicorn (WSGI, pygeoapi.flask_app:APP);
#   - bench/.venv-tipg: tipg 1.x served by uvicorn with uvloop + httptools (uvicorn[standard]).
# Versions pinned exactly; a venv is rebuilt only when its pin list below changes.
# Environment: CIM_PYTHON (interpreter to use, Python >= 3.12, as for scripts/install.sh).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[peers] %s\n' "$*" >&2; }
die() { printf '[peers] error: %s\n' "$*" >&2; exit 1; }

# wrk (the load generator) and nginx (tiles_bench.py --cached: the same tile files served from disk):
# Debian packages, installed only when missing (as scripts/install.sh installs its Debian packages)
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=()
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "${missing[*]} missing: run as root, or install sudo, or install them"
    SUDO=(sudo)
  fi
  command -v apt-get >/dev/null 2>&1 || die "${missing[*]} missing and apt-get was not found: install by hand"
  log "installing the Debian packages ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
log "wrk: $(wrk --version 2>&1 | head -1)"

# pygeoapi 0.24 is the release we build on; the SQL stack matches our pyproject.toml pins.
PYGEOAPI_PINS=(
  "pygeoapi==0.24.0"
  "gunicorn==27.0.1"
  "psycopg2-binary==2.9.13"
  "SQLAlchemy==2.1.9"
  "GeoAlchemy2==0.20.0"
  "pygeofilter==0.4.0"
)
# tipg: the latest 1.x at the time of writing; uvicorn[standard] brings uvloop + httptools
# (the plain asyncio loop with --workers adds ~40 ms per request, ../shared/PERF-NOTES.md).
TIPG_PINS=(
  "tipg==1.6.1"
  "uvicorn[standard]==0.54.0"
)

# python_ok, find_python: the same search as scripts/install.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/python.sh"

# make_venv DIR IMPORT_CHECK PIN...: (re)creates DIR unless its stamp matches the pins and the check imports.
make_venv() {
  local venv="$1" check="$2"
  shift 2
  local want stamp="$venv/.peers-stamp"
  want="$(printf '%s\n' "$@" | sha256sum | cut -d' ' -f1)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
     && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    log "ready: $venv"
    return 0
  fi
  local py
  py="$(find_python)" || die "no Python >= 3.12 with venv found (pygeoapi 0.24 needs it); set CIM_PYTHON"
  log "creating $venv with $py ($("$py" -V 2>&1)): $*"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
  "$venv/bin/python" -c "$check" || die "$venv: '$check' failed after installing"
  echo "$want" > "$stamp"
  log "ready: $venv"
}

make_venv "$BENCH/.venv-pygeoapi" \
  "import pygeoapi.provider.sql, psycopg2, gunicorn" "${PYGEOAPI_PINS[@]}"
make_venv "$BENCH/.venv-tipg" "import tipg.main, uvloop, httptools" "${TIPG_PINS[@]}"
