#!/usr/bin/env bash
# One command: install, then run the embedded quickstart suite (offline) and render its leaderboard.
set -euo pipefail
cd "$(dirname "$0")"
./install.sh
exec .venv/bin/harness run suites/quickstart.yaml --out runs/quickstart "$@"
