#!/usr/bin/env bash
# Install what the browser tests (tests/test_report_browser.py) need:
#   Debian's chromium + chromium-driver (apt), and selenium in the project's Python.
# Idempotent: does nothing that is already there. Run as root or with passwordless sudo.
#   scripts/install-browser.sh            # pip: $VIRTUAL_ENV's python, else .venv/bin/python, else python3
#   PYTHON=/path/to/python scripts/install-browser.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -n "${VIRTUAL_ENV:-}" ]; then PYTHON="$VIRTUAL_ENV/bin/python"
  elif [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python
  else PYTHON=python3; fi
fi

have_browser() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }

if have_browser; then
  echo "install-browser: chromium and chromedriver already installed"
else
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: apt-get not found; install chromium and chromium-driver yourself" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
      echo "install-browser: need root (or sudo) to apt-get install chromium chromium-driver" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q chromium chromium-driver
  have_browser || { echo "install-browser: chromium/chromedriver still missing" >&2; exit 1; }
fi
echo "install-browser: $(chromium --version 2>/dev/null | head -n1)"

if "$PYTHON" -c "import selenium" >/dev/null 2>&1; then
  echo "install-browser: selenium $("$PYTHON" -c 'import selenium; print(selenium.__version__)')"
else
  "$PYTHON" -m pip install -q "selenium>=4.10"
fi
