#!/usr/bin/env bash
# Installs everything the Benxi CIM service needs on a Debian/Ubuntu machine, idempotently:
#   - Debian packages: PostgreSQL + PostGIS (production database, and the tests' throwaway servers),
#     SpatiaLite (the embedded default database);
#   - a virtual environment on Python >= 3.12 (pygeoapi 0.24 needs it) with this project and its pinned
#     dependencies, reinstalled only when pyproject.toml changes.
# Used by scripts/demo.sh, scripts/test.sh and the Dockerfile alike.
# Environment: CIM_PYTHON (interpreter to use), CIM_VENV (default .venv), CIM_EXTRAS (default "test"),
# CIM_WITH_POSTGRES_SERVER (default 1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CIM_VENV:-$ROOT/.venv}"
EXTRAS="${CIM_EXTRAS-test}"

log() { printf '[install] %s\n' "$*" >&2; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || die "run as root, or install sudo, to install Debian packages"
  SUDO=(sudo)
fi

apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${missing[*]} by hand"
  log "installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# postgresql-postgis follows the distribution's default PostgreSQL major version (15 on Debian 12).
# CIM_WITH_POSTGRES_SERVER=0 (the Docker image, where PostGIS is another service) skips the server.
PACKAGES=(libsqlite3-mod-spatialite ca-certificates)
# npm installs the web pages' JavaScript (MapLibre GL JS for /map, CesiumJS for /3d) from cim/web/package-lock.json; a Node.js
# installed otherwise (e.g. NodeSource's, which bundles npm and conflicts with Debian's npm) is kept
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)
[ "${CIM_WITH_POSTGRES_SERVER:-1}" = 0 ] || PACKAGES+=(postgresql postgresql-postgis)
# the tests drive the HTML pages in a real (headless) browser and query the API with GDAL's OAPIF driver
# ... and put the service under load with wrk (tests/test_load.py, issue 9), and run the nginx front of
# `cim deploy nginx` before it (tests/test_tiles_front.py)
case ",$EXTRAS," in *,test,*) PACKAGES+=(chromium gdal-bin wrk nginx) ;; esac
apt_install "${PACKAGES[@]}"

# python_ok, find_python
# shellcheck source=scripts/python.sh
. "$ROOT/scripts/python.sh"

if [ -x "$VENV/bin/python" ] && python_ok "$VENV/bin/python"; then
  :
else
  PY="$(find_python || true)"
  if [ -z "$PY" ] && command -v python3 >/dev/null 2>&1 \
     && python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
    apt_install python3-venv  # Ubuntu 24.04, Debian 13: python3 is new enough but ships without venv
    PY="$(find_python || true)"
  fi
  [ -n "$PY" ] || die "no Python >= 3.12 with venv found (pygeoapi 0.24 needs it). Install one (Debian 13 and
Ubuntu 24.04 ship it as python3; elsewhere e.g. pyenv) or point CIM_PYTHON at it."
  log "creating virtual environment $VENV with $PY ($("$PY" -V 2>&1))"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

STAMP="$VENV/.cim-install-stamp"
WANT="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1) extras=$EXTRAS root=$ROOT"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ] || ! "$VENV/bin/python" -c 'import cim' >/dev/null 2>&1; then
  log "installing Python dependencies into $VENV (about a minute the first time)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  spec="$ROOT"
  [ -n "$EXTRAS" ] && spec="$ROOT[$EXTRAS]"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$spec"
  echo "$WANT" > "$STAMP"
fi

# --- Web assets (always: the /map and /3d pages are part of the service) ------------------------------------
# cim/web pins MapLibre GL JS, CesiumJS and Chart.js (/dashboard); the service serves them from cim/web/node_modules (nothing from a CDN).
# Reinstalled (npm ci, from the lock file) only when cim/web/package-lock.json changes.
WEB="$ROOT/cim/web"
WEB_STAMP="$WEB/node_modules/.cim-install-stamp"
WEB_WANT="$(sha256sum "$WEB/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$WEB_STAMP" 2>/dev/null)" != "$WEB_WANT" ]; then
  command -v npm >/dev/null 2>&1 || die "npm not found (Debian package npm): the /map and /3d pages need it to install MapLibre GL JS and CesiumJS"
  log "installing the web pages' JavaScript into $WEB/node_modules"
  (cd "$WEB" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$WEB_WANT" > "$WEB_STAMP"
fi

# --- Node tools for the tests (test extras only) ---------------------------------------------------------
# tests/js pins the Khronos glTF validator that tests/test_3dtiles.py runs over every 3D Tiles GLB.
# Reinstalled (npm ci, from the lock file) only when tests/js/package-lock.json changes; skipped without npm.
case ",$EXTRAS," in
  *,test,*)
    JS="$ROOT/tests/js"
    if ! command -v npm >/dev/null 2>&1; then
      log "npm not found: skipping $JS (the 3D Tiles tests need node >= 18 and npm for the glTF validator)"
    else
      JS_STAMP="$JS/node_modules/.cim-install-stamp"
      JS_WANT="$(sha256sum "$JS/package-lock.json" | cut -d' ' -f1)"
      if [ "$(cat "$JS_STAMP" 2>/dev/null)" != "$JS_WANT" ]; then
        log "installing the tests' node tools into $JS/node_modules"
        (cd "$JS" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        echo "$JS_WANT" > "$JS_STAMP"
      fi
    fi
    ;;
esac
log "ready: $VENV ($("$VENV/bin/python" -V 2>&1))"
