#!/usr/bin/env bash
# Set up everything the project needs on a fresh Debian/Ubuntu machine with Python 3.11.
#   scripts/setup.sh          runtime: .venv from requirements.txt, the built-in catalogue, embeddings + index
#   scripts/setup.sh --dev    the same plus test tools (requirements-dev.txt) and Debian's chromium for the browser test
# Network is used here, at set-up time only (PyPI, Debian); the app and the tests run offline afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=0
[ "${1:-}" = "--dev" ] && DEV=1

say() { printf '\n== %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1; fi
}

apt_install() {  # apt_install PKG... : install Debian packages if we may; 1 if we cannot
  command -v apt-get >/dev/null || return 1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 && return 0
  as_root apt-get update -q >/dev/null 2>&1 || return 1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3 || true)}"
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 11)' 2>/dev/null; then
  echo "Python 3.11 is required (found: $("$PYTHON" --version 2>&1)). Install it, e.g. sudo apt-get install python3.11 python3.11-venv" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  say "Creating .venv with $("$PYTHON" --version)"
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    VENV_PKG="python3.$("$PYTHON" -c 'import sys; print(sys.version_info[1])')-venv"  # Ubuntu wants the versioned one
    apt_install "$VENV_PKG" || apt_install python3-venv || {
      echo "$PYTHON -m venv is unavailable: run 'sudo apt-get install $VENV_PKG' and retry." >&2; exit 1; }
    "$PYTHON" -m venv .venv
  fi
fi

REQS=requirements.txt
[ "$DEV" = 1 ] && REQS=requirements-dev.txt
say "Installing Python packages from $REQS (torch is large: the first run takes a few minutes)"
# (awk drops the warnings this environment's pip config prints for every package; pipefail keeps pip's status)
.venv/bin/python -m pip install -q --disable-pip-version-check -r "$REQS" 2>&1 | awk '!/is ignored: it is neither a file nor a directory/'
# The project itself, editable (its console script `fashion-search`; the dashboard and data stay in this checkout),
# built with the pinned setuptools of requirements-build.txt rather than one fetched for an isolated build.
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-build.txt 2>&1 \
  | awk '!/is ignored: it is neither a file nor a directory/'
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
  | awk '!/is ignored: it is neither a file nor a directory/'

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  say "Getting the built-in catalogue (Debian package dataset-fashion-mnist)"
  # System-wide when we are root; otherwise unpacked into data/ with apt-get download + dpkg -x (no root).
  apt_install dataset-fashion-mnist || .venv/bin/python -m core prepare --data-only --catalog fashion-mnist
fi

if [ "$DEV" = 1 ] && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  say "Installing Debian chromium + chromium-driver for the browser test"
  apt_install chromium chromium-driver || echo "Could not install chromium (needs root or sudo); the browser test will be skipped." >&2
fi
