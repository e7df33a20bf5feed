"""Benchmark: reproducing an honest smoke log in the bubblewrap sandbox vs unsandboxed (--sandbox none).

    python bench/bench_sandbox.py                        # a 50-step smoke log, 3 reproductions per mode
    python bench/bench_sandbox.py --steps 200 --repeat 5 # the smoke preset's own length
    python bench/bench_sandbox.py --probe                # also: the trainer unprobed, to price the probe itself

Makes synthetic shards and one claimed smoke log (a run of train_gpt.py, one thread per process), then runs
`python -m tools reproduce LOG --sandbox none|bwrap --json` alternately, each in a fresh --out folder, so that the
load of a shared machine falls on both alike. For each mode it prints the median of: the wall time of the whole
command (imports, the probe's reference process, the sandbox, the trainer, the judgement) and the trainer's
own `train_time` from the reproduction's log; then the sandbox's overhead over none. Every reproduction must be
`reproduced` with a clean probe report, or the benchmark stops. The probe runs in both modes (it is not
optional); --probe adds the trainer run by torchrun directly, without the probe, beside the probed one.

Target (issue 20): the sandbox within 10 % of --sandbox none.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tools.judge.parse import parse_log  # noqa: E402

PROBE = str(REPO_ROOT / "tools" / "reproduce" / "probe.py")


def env_for(steps: int, data: Path, logs: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHINDUCTOR_", "SPEEDRUN_"))}
    env.update(
        SEED="1234",
        SPEEDRUN_PRESET="smoke",
        SPEEDRUN_OVERRIDES=json.dumps({"num_iterations": steps, "val_loss_every": max(steps // 4, 1)}),
        DATA_PATH=str(data),
        LOG_DIR=str(logs),
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
    )
    return env


def train(entry: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, train_time seconds) of one run of the trainer through ``entry``."""
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", *entry],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"the trainer failed:\n{out.stderr[-3000:]}")
    log = max(Path(env["LOG_DIR"]).glob("*.txt"), key=lambda p: p.stat().st_mtime)
    final = parse_log(log).final
    return wall, (final.train_time_ms or 0) / 1000 if final else float("nan")


def reproduce(log: Path, data: Path, out: Path, mode: str) -> tuple[float, float]:
    """(wall seconds, train_time seconds) of one `python -m tools reproduce`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHINDUCTOR_")}
    env["OMP_NUM_THREADS"] = "1"
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "tools", "reproduce", str(log), "--sandbox", mode, "--data", str(data)]
        + ["--out", str(out), "--json"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    verdicts = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    if run.returncode != 0 or len(verdicts) != 1 or not verdicts[0]["probe"]["clean"]:
        sys.exit(f"--sandbox {mode}: not reproduced ({run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    new = parse_log(Path(verdicts[0]["reproduction"])).final
    return wall, (new.train_time_ms or 0) / 1000 if new else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50, help="training steps of the smoke log (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="reproductions per mode (default: %(default)s)")
    p.add_argument("--probe", action="store_true", help="also time the trainer with and without the probe")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)  # a root caller's sandbox reads the data as uid 65534
        data = tmp / "data"
        subprocess.run(
            [sys.executable, "data/synthetic.py", "--out", str(data), "--train-shards", "1"],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
        print(f"claimed run: {args.steps} smoke steps, one thread ...", flush=True)
        train(["train_gpt.py"], env_for(args.steps, data, tmp / "claimed"))
        [log] = list((tmp / "claimed").glob("*.txt"))
        times: dict[str, list[tuple[float, float]]] = {"none": [], "bwrap": []}
        for i in range(args.repeat):
            for mode in ("none", "bwrap") if i % 2 == 0 else ("bwrap", "none"):
                times[mode].append(reproduce(log, data, tmp / f"out-{mode}-{i}", mode))
                print(
                    f"  {mode:5}  wall {times[mode][-1][0]:7.1f} s  train_time {times[mode][-1][1]:7.1f} s", flush=True
                )
        medians = {
            m: (statistics.median(w for w, _ in t), statistics.median(x for _, x in t)) for m, t in times.items()
        }
        print(f"\nreproduce, median of {args.repeat} (wall s, train_time s):")
        for mode, (wall, trained) in medians.items():
            print(f"  --sandbox {mode:5}  {wall:7.1f}  {trained:7.1f}")
        over_wall = 100 * (medians["bwrap"][0] / medians["none"][0] - 1)
        over_train = 100 * (medians["bwrap"][1] / medians["none"][1] - 1)
        print(f"bwrap over none: {over_wall:+.1f} % wall, {over_train:+.1f} % train_time (target: within 10 %)")
        if args.probe:
            probed, plain = [], []
            for i in range(args.repeat):
                env = env_for(args.steps, data, tmp / f"direct-{i}")
                plain.append(train(["train_gpt.py"], env))
                probed.append(train([PROBE, "run", "--report", os.devnull, "train_gpt.py"], env))
            wall_plain, wall_probed = statistics.median(w for w, _ in plain), statistics.median(w for w, _ in probed)
            print(
                f"trainer unprobed {wall_plain:.1f} s, probed {wall_probed:.1f} s: {100 * (wall_probed / wall_plain - 1):+.1f} %"
            )


if __name__ == "__main__":
    main()
