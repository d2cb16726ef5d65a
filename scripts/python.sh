# Sourced by scripts/install.sh and the benchmarks' peer set-ups (bench/*peers.sh): how the project finds
# a Python >= 3.12 (pygeoapi 0.24 needs it), in one place.

python_ok() {  # a Python >= 3.12 that can build a venv with pip
  "$1" -c 'import sys, venv, ensurepip; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

find_python() {
  local c
  shopt -s nullglob
  # 3.12 first: the pinned stack was measured on it (../shared/STACK-NOTES.md)
  for c in "${CIM_PYTHON:-}" python3.12 /usr/local/bin/python3.12 \
           "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python /root/.pyenv/versions/3.12*/bin/python \
           python3 python3.13 python3.14 /usr/local/bin/python3.1[3-9] /usr/bin/python3.1[2-9] \
           "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[3-9]*/bin/python; do
    [ -n "$c" ] || continue
    if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then command -v "$c"; return 0; fi
  done
  return 1
}
