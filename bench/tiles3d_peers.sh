#!/usr/bin/env bash
# The peer of bench/tiles3d_bench.py in its own virtual environment, idempotently:
#   - bench/.venv-py3dtiles: py3dtiles (Oslandia; `py3dtiles export -D ... -t TABLE -c COLUMN` builds a
#     tileset of b3dm tiles from a PostGIS table of 3D polygons) with every dependency pinned exactly. It
#     must not share our .venv: it pins psycopg2, numba/llvmlite and mapbox_earcut 1.0, where we use
#     psycopg 3 and mapbox-earcut 2.1.
# The venv is rebuilt only when the pin list below changes.
# Environment: CIM_PYTHON (interpreter to use; the same search as scripts/install.sh).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH/.venv-py3dtiles"

log() { printf '[tiles3d-peers] %s\n' "$*" >&2; }
die() { printf '[tiles3d-peers] error: %s\n' "$*" >&2; exit 1; }

# py3dtiles 12.1.1 with its postgres extra is the latest release at the time of writing; the rest is what
# pip resolved for it on Python 3.12 (2026-12-05), pinned so that reruns compare the same peer.
PY3DTILES_PINS=(
  "py3dtiles[postgres]==12.1.1"
  "certifi==2026.10.19.post1"
  "dataclasses-json==0.6.7"
  "Deprecated==3.0.1"
  "llvmlite==0.46.0"
  "lz4==4.4.5"
  "mapbox_earcut==1.0.3"
  "marshmallow==3.26.2"
  "mypy_extensions==1.2.0"
  "numba==0.63.1"
  "numpy==2.3.5"
  "packaging==26.4"
  "psutil==7.2.2"
  "psycopg2-binary==2.9.13"
  "pygltflib==1.16.5"
  "pyproj==3.8.0"
  "pyzmq==27.3.0"
  "typing-inspect==0.9.0"
  "typing_extensions==4.16.0"
  "wrapt==2.5.2"
)

# python_ok, find_python: the same search as scripts/install.sh
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/python.sh"

STAMP="$VENV/.pins"
WANT="$(printf '%s\n' "${PY3DTILES_PINS[@]}")"
if [ -x "$VENV/bin/py3dtiles" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  log "py3dtiles: $("$VENV/bin/python" -c 'import py3dtiles; print(py3dtiles.__version__)') (up to date in $VENV)"
  exit 0
fi
PY="$(find_python)" || die "no Python >= 3.12 with venv found; set CIM_PYTHON"
log "building $VENV with $PY ($("$PY" --version 2>&1))"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY3DTILES_PINS[@]}"
"$VENV/bin/python" -m pip check >&2 || die "pip check failed in $VENV"
printf '%s\n' "${PY3DTILES_PINS[@]}" > "$STAMP"
log "py3dtiles: $("$VENV/bin/python" -c 'import py3dtiles; print(py3dtiles.__version__)')"
