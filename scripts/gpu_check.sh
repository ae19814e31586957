#!/usr/bin/env bash
# GPU check of tokbench, in one go, offline (no weights, no data set: built-in photos, random
# LPIPS and tokenizer weights -- every step measures speed, not quality), in under 6 minutes:
#   1. build the CUDA extension for this GPU's own architecture (tokbench build-ext --cuda-only)
#   2. pytest -m cuda (tests/test_cuda_ext.py)
#   3. the nearest-codeword grid N in {65536, 262144}, K in {4096, 16384}, D in {8, 32, 256}, fp32 and bf16
#   4. a short vq_small training run at 256 px (batch 16), with and without the extension:
#      images/s, model FLOPs and MFU, the search's share of the step time
#   5. GPT-B (LlamaGen-B size): bf16 train step (MFU), CFG-2 sampling at batch 64 (first and warm
#      batch, images/s), eager and compiled (torch.compile; CUDA graphs for the decode step)
#   6. release-size public tokenizers (random weights): encode/decode images/s, fp32 and bf16
# Step deadlines add up to 340 s, so the whole check ends within 6 minutes even when a step hangs;
# a step past its deadline is a failure. Logs go to one folder ($OUT when set, else
# runs/gpu_check-<date>); at the end one Markdown summary (summary.md: every step's tables) is
# printed. Without a GPU it says so in one line and exits 2 (before doing anything else).
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

# Offline training inputs: a random LPIPS backbone and the built-in photos listed often enough
# for batch 16 over the 13 steps.
TRAIN_OVERRIDES="--model.perceptual_random_backbone true --data.root builtin:photos --data.repeats 32"
SUMMARY="$OUT/summary.md"
STATUS=0
step() {  # step NAME TIMEOUT_S COMMAND...: run with a deadline, log to $OUT/NAME.log, add its tables to the summary
    local name=$1 limit=$2; shift 2
    local start=$SECONDS
    echo "== $name: $*" >&2
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    {
        echo "## $name (rc=$rc, $((SECONDS - start)) s)"
        echo
        echo "\`$*\`"
        echo
        grep -E '^\|' "$OUT/$name.log" || echo "(no table; see $OUT/$name.log)"
        echo
    } >>"$SUMMARY"
    [ $rc -eq 0 ] || STATUS=1
    return $rc
}

{
    "$PYTHON" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
    nvidia-smi || true
} >"$OUT/machine.txt" 2>&1
{
    echo "# tokbench gpu_check, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo
    echo "$(head -n 1 "$OUT/machine.txt")"
    echo
} >"$SUMMARY"

# Build only for this GPU (the default arch list is the current device): fast, and what users get.
step build 75 "$PYTHON" -m tokbench build-ext --cuda-only --verbose || {
    echo "gpu_check: the CUDA extension failed to build; see $OUT/build.log" >&2
    cat "$SUMMARY"
    exit 1
}
step pytest_cuda 45 "$PYTHON" -m pytest -q -m cuda tests/test_cuda_ext.py -rs
step bench 60 "$PYTHON" benchmarks/nearest_codeword.py --gpu-grid --repeats 3 --paths fused,dispatch,chunked,chunked_bf16,expanded
# The search's share of a training step: the same run with the extension, and without it.
step train_ext 30 "$PYTHON" benchmarks/train_throughput.py --configs vq_small --accelerator gpu \
    --image-size 256 --steps 10 --warmup 3 --profile-search $TRAIN_OVERRIDES
step train_no_ext 30 env TOKBENCH_DISABLE_CUDA_EXT=1 "$PYTHON" benchmarks/train_throughput.py --configs vq_small \
    --accelerator gpu --image-size 256 --steps 10 --warmup 3 --profile-search $TRAIN_OVERRIDES
step generator 60 "$PYTHON" benchmarks/generator_throughput.py --device cuda --preset B --vocab 16384 --grid 16 \
    --batch 64 --steps 10 --warmup 3 --sample-batch 64 --sample-repeats 2 --cfg 2 --bf16 --compile
step tokenizers 40 "$PYTHON" benchmarks/tokenizer_throughput.py --device cuda --batch 32 --image-size 256

echo "status $STATUS; logs in $OUT" >>"$SUMMARY"
cat "$SUMMARY"
exit $STATUS
