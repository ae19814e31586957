#!/usr/bin/env bash
# GPU verification of the fused nearest-codeword CUDA extension, in one go (< 8 minutes):
#   1. build the extension for this GPU's own architecture (tokbench build-ext --cuda-only)
#   2. pytest -m cuda (tests/test_cuda_ext.py: agreement with the PyTorch path, ties, the
#      tensor-core kernel, a VQ training step going through the extension)
#   3. the benchmark grid N in {65536, 262144}, K in {4096, 16384}, D in {8, 32, 256}, fp32 and bf16
#   4. a short vq_small training run at 256 px: throughput, and the search's share of step time
# Step deadlines add up to 450 s (build 140, pytest 100, grid 90, two 60 s training runs), so the
# whole check ends within 8 minutes even when a step hangs; a step past its deadline is a failure.
# Every log goes to one folder: $OUT when set, else runs/gpu_check-<date>. Without a GPU it
# says so in one line and exits 2 (before doing anything else).
#
#   scripts/gpu_check.sh            # from the repository root, with the venv at .venv
#   PYTHON=python OUT=/tmp/x scripts/gpu_check.sh
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
OUT=${OUT:-runs/gpu_check-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to torch on $(hostname) -- nothing to verify (logs: $OUT)" | tee "$OUT/no_gpu.txt" >&2
    exit 2
fi

STATUS=0
step() {  # step NAME TIMEOUT_S COMMAND...: run with a deadline, log to $OUT/NAME.log, record the outcome
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    echo "== $name: $*" | tee -a "$OUT/summary.txt"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - start)) s (log: $OUT/$name.log)" | tee -a "$OUT/summary.txt"
    [ $rc -eq 0 ] || STATUS=1
    return $rc
}

{
    "$PYTHON" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
    nvidia-smi || true
} >"$OUT/machine.txt" 2>&1

# Build only for this GPU (the default arch list is the current device): fast, and what users get.
step build 140 "$PYTHON" -m tokbench build-ext --cuda-only --verbose || {
    echo "gpu_check: the CUDA extension failed to build; see $OUT/build.log" >&2
    exit 1
}
step pytest_cuda 100 "$PYTHON" -m pytest -q -m cuda tests/test_cuda_ext.py -rs
step bench 90 "$PYTHON" benchmarks/nearest_codeword.py --gpu-grid --repeats 3 --paths fused,chunked,expanded
# The search's share of a training step: the same run with the extension, and without it.
step train_ext 60 "$PYTHON" benchmarks/train_throughput.py --configs vq_small --accelerator gpu \
    --image-size 256 --steps 10 --warmup 3 --profile-search
step train_no_ext 60 env TOKBENCH_DISABLE_CUDA_EXT=1 "$PYTHON" benchmarks/train_throughput.py --configs vq_small \
    --accelerator gpu --image-size 256 --steps 10 --warmup 3 --profile-search

echo "gpu_check: done, status $STATUS; logs in $OUT" | tee -a "$OUT/summary.txt"
exit $STATUS
