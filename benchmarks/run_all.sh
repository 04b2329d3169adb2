#!/usr/bin/env bash
# Regenerates every figure in docs/benchmarks.md on this machine, in one run.
# Needs ../shared/data and the bench extra: pip install -e '.[bench]'.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
$py benchmarks/eval_speed.py --data-dir ../shared/data/conll2003 --json "$out/eval_speed.json"
$py benchmarks/finetune_speed.py --json "$out/finetune_speed.json"
$py benchmarks/suite_walltime.py --json "$out/suite_walltime.json"
$py benchmarks/latency_cv.py --json "$out/latency_cv.json"
