"""train_scale.py as a job that its scheduler preempts once: tests/test_scale_runs.py runs it under
`torchrun --max-restarts=1`.

    PREEMPT_AT_STEP=N PREEMPT_AFTER=M SPEEDRUN_RESUME=latest TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 \
        torchrun --max-restarts=1 ... tests/scale_preempt.py

On the first attempt (TORCHELASTIC_RESTART_COUNT=0) rank 0 kills itself with SIGKILL, as a preemption does, when it
is about to train step N, once the checkpoint of step M is complete (its config.json, written when the background
write ends, in <SPEEDRUN_CHECKPOINT_DIR>/<the rendezvous id, the run id>/step_<M>/). torchrun then stops the other ranks and starts them all again; the restart is train_scale.py
untouched. The log's code is train_scale.py's, as in any run.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train_gpt as tg  # noqa: E402
import train_scale as ts  # noqa: E402


def main() -> int:
    first = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
    if first and os.environ.get("RANK", "0") == "0":
        at, saved = int(os.environ["PREEMPT_AT_STEP"]), int(os.environ["PREEMPT_AFTER"])
        run = Path(os.environ["SPEEDRUN_CHECKPOINT_DIR"]) / os.environ["TORCHELASTIC_RUN_ID"]
        after = run / f"step_{saved:06d}"
        train_step = tg.train_step

        def preempted(step: int, *args, **kwargs):
            if step == at and kwargs.get("dummy") is None:  # a timed step, not a warm-up one
                deadline = time.monotonic() + 120
                while not (after / "config.json").is_file() and time.monotonic() < deadline:
                    time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGKILL)
            return train_step(step, *args, **kwargs)

        tg.train_step = preempted
    return ts.main()


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
