"""Measure a preset's training step where it runs: step time, tokens/s and peak memory.

    python bench/bench_scale.py                                # 1.5b with FSDP2 on 1 GPU, 10 steps
    python bench/bench_scale.py --preset 7b --nproc 8          # 7b on 8 GPUs of this node
    python bench/bench_scale.py --preset tiny --nproc 2 --steps 5   # CPU

It launches train_scale.py with torchrun exactly as a run does (compilation and warm-up untimed, the clock
stopped for validation) on synthetic shards of the preset's vocabulary, made in a temporary folder unless
--data names a folder of shards. SPEEDRUN_OVERRIDES shortens the run: num_iterations = --steps, validation
only at the end on one window per process; checkpoints are off. Then it reads the run's log:

    warm-up      the untimed warm-up steps, compilation included (the log's warm-up line)
    step_ms      train_time / steps on the final val_loss line (read after a device sync)
    tokens/s     global_batch_tokens / step_ms, all processes together
    peak memory  the log's line: the CUDA allocator's peak on rank 0 (on CPU, rank 0's peak resident set), next
                 to `python train_scale.py --plan`'s estimate for this preset, process count and micro-step
    terms        then (unless --no-terms) bench/scale_memory.py in fresh processes, the same preset, processes and
                 windows per micro-step: the plan next to the measured memory term by term (parameters, gradients,
                 optimizer, what lies outside the allocator, forward and backward, Muon's round, the peak)

and prints them, with the parameter count and the config that ran, as text and one JSON line (--json FILE
writes it to a file too). Every timed step counts, the first after warm-up included; compile once
(warm-up) and measure 10 or more steps for a steady number.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import train_gpt  # noqa: E402
import train_scale  # noqa: E402

FINAL_VAL = re.compile(r"^step:(\d+)/(\d+) val_loss:\S+ train_time:(\d+)ms step_avg:(\d+\.\d+)ms$")
MEMORY = re.compile(r"^peak memory allocated: (\d+) MiB reserved: (\d+) MiB$")
WARMUP = re.compile(r"^warm-up: \d+ untimed steps \(compilation included\) took (\d+\.\d)s$")


def bench_args(preset: str, overrides: dict, steps: int, nproc: int) -> tuple[train_gpt.Hyperparameters, dict]:
    """The preset as the benchmark runs it, and the SPEEDRUN_OVERRIDES that make it so."""
    presets = train_scale.PRESETS
    env = {"SPEEDRUN_PRESET": preset, "SPEEDRUN_OVERRIDES": json.dumps(overrides)}
    _, base, _ = train_gpt.resolve_config(env, presets)
    short = dict(overrides, num_iterations=steps, val_loss_every=0, val_tokens=base.windows_per_step * base.val_seq_len)
    _, args, _ = train_gpt.resolve_config({"SPEEDRUN_PRESET": preset, "SPEEDRUN_OVERRIDES": json.dumps(short)}, presets)
    if problem := train_scale.cannot_run(args, nproc):
        raise train_gpt.SpeedrunError(problem)
    return args, short


def make_data(folder: Path, args: train_gpt.Hyperparameters) -> None:
    """Synthetic shards holding exactly what the shortened run reads (data/synthetic.py): as in the record's order
    (train_gpt.TrainWindows), each step's batch and its one extra token lie in one shard."""
    batch = args.windows_per_step * args.train_seq_len
    per_shard = min(args.num_iterations, train_gpt.steps_in_shard(100_000_000, batch))
    cmd = [
        sys.executable,
        str(REPO_ROOT / "data" / "synthetic.py"),
        *("--out", str(folder), "--vocab-size", str(args.vocab_size)),
        *("--train-shards", str(-(-args.num_iterations // per_shard)), "--shard-tokens", str(per_shard * batch + 2)),
        *("--val-tokens", str(args.val_tokens + 1)),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def read_log(log: Path) -> dict:
    lines = log.read_text(encoding="utf-8").splitlines()
    config = json.loads(next(ln for ln in lines if ln.startswith("config: "))[len("config: ") :])
    params = json.loads(next(ln for ln in lines if ln.startswith("parameters: "))[len("parameters: ") :])
    step, _, train_ms, _ = next(m for ln in reversed(lines) if (m := FINAL_VAL.match(ln))).groups()
    allocated, reserved = next(m for ln in reversed(lines) if (m := MEMORY.match(ln))).groups()
    warmup_s = float(next(m for ln in lines if (m := WARMUP.match(ln)))[1])
    step_ms = int(train_ms) / int(step)
    return dict(
        preset=config["preset"],
        parallelism=config["parallelism"],
        device=config["device"],
        world_size=config["world_size"],
        parameters=params["total"],
        global_batch_tokens=config["global_batch_tokens"],
        micro_windows=config["run"]["micro_windows"],
        warmup_s=warmup_s,
        steps=int(step),
        step_ms=round(step_ms, 2),
        tokens_per_s=round(config["global_batch_tokens"] / step_ms * 1000),
        peak_allocated_mib=int(allocated),
        peak_reserved_mib=int(reserved),
        log=str(log),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="1.5b", help="a train_scale.py preset (default 1.5b)")
    parser.add_argument("--overrides", default="{}", help="JSON object of Hyperparameters fields to change")
    parser.add_argument("--nproc", type=int, default=1, help="processes (GPUs) on this node (default 1)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    parser.add_argument("--data", type=Path, help="a folder of shards to read instead of synthetic ones")
    parser.add_argument("--log-dir", type=Path, help="where the run's log goes (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    parser.add_argument("--no-terms", action="store_true", help="skip the term-by-term memory measurement")
    opts = parser.parse_args(argv)
    try:
        overrides = json.loads(opts.overrides)
        args, short = bench_args(opts.preset, overrides, opts.steps, opts.nproc)
    except (json.JSONDecodeError, train_gpt.SpeedrunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        data = opts.data or Path(tmp) / "data"
        if opts.data is None:
            print(f"writing synthetic shards for {opts.steps} steps of {opts.preset} to {data} ...", flush=True)
            make_data(data, args)
        log_dir = opts.log_dir or Path(tmp) / "logs"
        env = dict(os.environ, SPEEDRUN_PRESET=opts.preset, DATA_PATH=str(data), LOG_DIR=str(log_dir), SEED="0")
        env.update(SPEEDRUN_OVERRIDES=json.dumps(short), SPEEDRUN_CHECKPOINT_EVERY="-1")
        for key in ("SPEEDRUN_RESUME", "SPEEDRUN_EXPORT"):
            env.pop(key, None)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={opts.nproc}"]
        print(f"running {opts.preset} on {opts.nproc} process(es): {' '.join(cmd)} train_scale.py", flush=True)
        before = set(log_dir.glob("*.txt"))  # --log-dir may hold earlier runs: log names are random uuids
        run = subprocess.run([*cmd, str(REPO_ROOT / "train_scale.py")], cwd=REPO_ROOT, env=env)
        logs = sorted(set(log_dir.glob("*.txt")) - before)
        if run.returncode != 0 or len(logs) != 1:
            print(f"error: the run failed (exit status {run.returncode}); its output is above.", file=sys.stderr)
            return 1
        result = read_log(logs[0])
        device = "cuda" if result["device"] == "cuda" else "cpu"
        recompute = train_scale.PRESET_SETTINGS[opts.preset].get("activation_checkpointing", False)
        plan = train_scale.plan_memory(args, opts.nproc, device, recompute, result["micro_windows"])
        result["planned_mib"] = plan.total // 2**20
        if opts.log_dir is None:
            result["log"] = None  # the temporary folder is gone
        if not opts.no_terms:
            terms = Path(tmp) / "terms.json"
            cmd = [*cmd, str(REPO_ROOT / "bench" / "scale_memory.py"), "--preset", opts.preset]
            cmd += ["--overrides", json.dumps(short), "--micro-windows", str(result["micro_windows"])]
            print(f"measuring memory term by term: {' '.join(cmd)}", flush=True)
            if subprocess.run([*cmd, "--json", str(terms)], cwd=REPO_ROOT, env=env).returncode != 0:
                print("error: the memory measurement failed; its output is above.", file=sys.stderr)
                return 1
            measured = json.loads(terms.read_text())["ranks"][0]
            result["terms"] = dict(plan=dataclasses.asdict(plan) | dict(total=plan.total), measured=measured)
    print(
        f"{result['preset']} ({result['parameters']:,} parameters, {result['parallelism']}) on "
        f"{result['world_size']} x {result['device']}: warm-up (compilation) {result['warmup_s']:.1f} s, "
        f"{result['step_ms']:.1f} ms/step, "
        f"{result['tokens_per_s']:,} tokens/s, peak memory {result['peak_allocated_mib']:,} MiB allocated / "
        f"{result['peak_reserved_mib']:,} MiB reserved (rank 0; planned {result['planned_mib']:,} MiB)"
    )
    print(json.dumps(result))
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
