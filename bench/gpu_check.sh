#!/usr/bin/env bash
# The record recipe on one H100/H200 in one command, under 8 minutes: versions, measured bf16 matmul rate, compile
# time, step time, tokens/s, MFU and peak memory with the FP8 head off and on, and, with FineWeb shards in DATA_PATH
# (default data/fineweb10B), the val loss next to the 2025-01-16 record's curve. Details: bench/gpu_check.py.
#   bench/gpu_check.sh [--budget-s 450] [--json FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python bench/gpu_check.py "$@"
