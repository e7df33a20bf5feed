#!/usr/bin/env bash
# The record recipe on one H100/H200 in one command, under 8 minutes: versions and nvidia-smi, measured bf16 matmul
# rate, the FP8 head op and FlexAttention's block masks against references, then compile time, step time,
# tokens/s, MFU and peak memory with the FP8 head on and off, an eval-mode pass, compiled vs eager, and, with
# FineWeb shards in DATA_PATH (default data/fineweb10B), the val loss next to the 2025-01-16 record's curve.
# Every part prints as it ends; with OUT set, the output goes to $OUT/gpu_check.log and the results so far to
# $OUT/gpu_check.json after every part, so a hard timeout (GPU_CHECK_TIMEOUT_S, default 470 s) keeps them.
# Details: bench/gpu_check.py.
#   bench/gpu_check.sh [--budget-s 400] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
log=/dev/null
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    log="$OUT/gpu_check.log"
fi
{
    echo "gpu_check.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname); python: $(command -v python)"
    python -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' || true
    status=0
    PYTHONUNBUFFERED=1 timeout -k 10 "${GPU_CHECK_TIMEOUT_S:-470}" python bench/gpu_check.py --budget-s 400 "$@" || status=$?
    if [ "$status" -eq 124 ]; then
        echo "error: gpu_check.py ran past ${GPU_CHECK_TIMEOUT_S:-470} s and was stopped; the parts above are what it finished"
    fi
    echo "gpu_check.sh: exit status $status"
    exit "$status"
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
