#!/usr/bin/env bash
# Train and write a log under logs/ (LOG_DIR): train_gpt.py (the record file) for its presets short, medium and
# smoke, train_scale.py (the FSDP2 ladder) for its presets 1.5b ... 175b and tiny.
#
#   ./run.sh                      on a GPU machine: the record recipe (preset short) on every GPU of this node
#   NPROC=2 ./run.sh              a different process count (it must divide 8; the global batch stays the same)
#   SPEEDRUN_PRESET=7b ./run.sh   a ladder preset (python train_scale.py --plan 7b: the memory it needs)
#
# Without CUDA it runs the smoke preset on CPU (synthetic data, made first if missing), then verifies the log.
# SPEEDRUN_PRESET, DATA_PATH, SEED, SPEEDRUN_EXPORT and train_scale.py's checkpoint variables
# (docs/log-format.md) are respected when set. Multi-node: start torchrun yourself on every node with one
# rendezvous (HOST: any node's address; the data and checkpoint folders visible on every node), e.g.
#   torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 --rdzv-id=run1 train_scale.py
set -euo pipefail
cd "$(dirname "$0")"

gpus=$(python -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
log_dir="${LOG_DIR:-logs}"
mkdir -p "$log_dir"
started=$(mktemp)  # logs newer than this file are this run's
errors=$(mktemp)   # a copy of the run's stderr
trap 'rm -f "$started" "$errors"' EXIT

if [ "$gpus" -gt 0 ]; then
    # the record recipe; without FineWeb shards the trainer says which command downloads them
    export SPEEDRUN_PRESET="${SPEEDRUN_PRESET:-short}"
    nproc="${NPROC:-$gpus}"
else
    export SPEEDRUN_PRESET="${SPEEDRUN_PRESET:-smoke}"
    echo "No CUDA device found: running the $SPEEDRUN_PRESET preset on CPU."
    if [ "$SPEEDRUN_PRESET" = smoke ] || [ "$SPEEDRUN_PRESET" = tiny ]; then  # a tiny model on synthetic data
        export DATA_PATH="${DATA_PATH:-data/synthetic}"
        # one fixed seed, so that `./run.sh` and `NPROC=2 ./run.sh` print identical losses (same math on any count)
        export SEED="${SEED:-0}"
    fi
    nproc="${NPROC:-1}"
fi
if ! [[ "$nproc" =~ ^[1-9][0-9]*$ ]]; then
    echo "error: NPROC=$nproc is not a number of processes; give a positive whole number, e.g. NPROC=2 ./run.sh" >&2
    exit 1
fi
if [ "$gpus" -gt 0 ] && [ "$nproc" -gt "$gpus" ]; then
    echo "error: NPROC=$nproc, but this machine shows $gpus GPU(s): one process per GPU; use NPROC=$gpus or fewer." >&2
    exit 1
fi
if [ "$gpus" -eq 0 ] && [[ "$SPEEDRUN_PRESET" =~ ^(smoke|tiny)$ ]] && ! compgen -G "$DATA_PATH/*_val_*.bin" >/dev/null; then
    python data/synthetic.py --out "$DATA_PATH"
fi
# the ladder's presets are train_scale.py's (tests/test_e2e.py keeps this list equal to train_scale.PRESETS)
case "$SPEEDRUN_PRESET" in
    1.5b | 3b | 7b | 13b | 70b | 175b | tiny) trainer=train_scale ;;
    *) trainer=train_gpt ;;
esac
# check the setup in one process first: a mistake then reads as the trainer's message, not torchrun's traceback
python -c "import sys, $trainer; sys.exit($trainer.preflight(int(sys.argv[1])))" "$nproc"
# A failure mid-run ends in torchrun's own report, dozens of lines below the trainer's message: say it again last.
status=0
# (stderr goes through tee into $errors and back to stderr; stdout passes untouched on descriptor 3)
{ torchrun --standalone --nproc_per_node="$nproc" "$trainer.py" 2>&1 1>&3 | tee "$errors" >&2; } 3>&1 || status=$?
if [ "$status" -ne 0 ]; then
    message=$(grep '^error: ' "$errors" | tail -n 1 || true)
    echo >&2
    if [ -n "$message" ]; then
        echo "training stopped: ${message#error: }" >&2
    else
        echo "training stopped: torchrun exited with status $status; the first failure is reported above" >&2
    fi
    exit "$status"
fi

log=$(find "$log_dir" -maxdepth 1 -name '*.txt' -newer "$started" | head -n 1)
if [ -z "$log" ]; then
    echo "error: the run finished but wrote no log in $log_dir" >&2
    exit 1
fi
echo "log: $log"
case "$SPEEDRUN_PRESET" in
    smoke) track=smoke ;;
    tiny) track=scale ;;
    *) exit 0 ;;  # one run of a record track proves nothing alone: verify a record folder with python -m tools verify
esac
if python -m tools verify "$log" --track "$track"; then
    echo "verdict: the log verifies as a $track run ($log)"
else
    echo "verdict: the log does NOT verify as a $track run; see the messages above ($log)" >&2
    exit 1
fi
