"""Benchmark: verify and build the leaderboard of the public speedrun's real tree, on one core.

    python bench/bench_tools.py                       # clones ../shared/public-speedrun/*.bundle into a temp folder
    python bench/bench_tools.py --repo modded-nanogpt # or any clone of github.com/KellerJordan/modded-nanogpt

Each measurement runs the command as a user would (``python -m tools verify RECORDS --json`` and
``python -m tools leaderboard --records RECORDS --out TMP``) in a fresh process pinned to one CPU, and reads
the child's CPU time (user + system) and peak memory (max RSS) from the kernel:

- cold: an empty tools cache (tools/common/cache.py), so every log is parsed and every code section read;
- warm: the cache the cold run filled, as on a maintainer's machine, where verify, leaderboard and check
  follow each other.

Prints each run and the median of --repeat per case, against the targets (issue 19): verify <= 5 s and
leaderboard <= 20 s of CPU on one core warm, peak memory <= 1 GB; exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLES = REPO_ROOT.parent / "shared" / "public-speedrun"
TARGETS_S = {"verify": 5.0, "leaderboard": 20.0}
TARGET_RSS_MB = 1000.0


def clone_bundle(into: Path) -> Path:
    bundles = sorted(BUNDLES.glob("*.bundle")) if BUNDLES.is_dir() else []
    if not bundles:
        raise SystemExit(
            f"error: no --repo given and no bundle at {BUNDLES}: clone github.com/KellerJordan/modded-nanogpt and "
            "pass --repo PATH"
        )
    dest = into / "modded-nanogpt"
    subprocess.run(["git", "clone", "-q", str(bundles[-1]), str(dest)], check=True)
    return dest


def measure(argv: list[str], cache_dir: Path) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MB) of one run of ``python -m tools ARGV`` on one CPU."""
    env = {**os.environ, "SPEEDRUN_CACHE": str(cache_dir), "PYTHONPATH": str(REPO_ROOT)}

    def one_cpu() -> None:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [sys.executable, "-m", "tools", *argv],
        cwd=REPO_ROOT,
        env=env,
        preexec_fn=one_cpu,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):  # verify exits 1 when a record is not valid: that is a verdict, not an error
        raise SystemExit(f"error: python -m tools {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, after.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux: the largest child so far


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, help="a clone of the public speedrun (default: its bundle, cloned)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp_text:
        tmp = Path(tmp_text)
        repo = args.repo if args.repo is not None else clone_bundle(tmp)
        records = repo / "records"
        if not records.is_dir():
            print(f"error: {records} is not a folder: --repo names a clone of the public speedrun", file=sys.stderr)
            return 2
        commands = {
            "verify": ["verify", str(records), "--json"],
            "leaderboard": ["leaderboard", "--records", str(records), "--out", str(tmp / "lb")],
        }
        results: dict[tuple[str, str], list[float]] = {}
        peak = 0.0
        for name, argv in commands.items():
            for i in range(args.repeat):
                cache = tmp / f"cache-{name}-{i}"
                for state in ("cold", "warm"):  # warm: the same cache, just filled by the cold run
                    cpu, rss = measure(argv, cache)
                    peak = max(peak, rss)
                    results.setdefault((name, state), []).append(cpu)
                    print(f"{name:<12} {state}  run {i + 1}: {cpu:6.2f} s CPU, peak {rss:6.0f} MB")
                shutil.rmtree(cache, ignore_errors=True)
        print()
        ok = peak <= TARGET_RSS_MB
        for (name, state), times in results.items():
            median = statistics.median(times)
            target = TARGETS_S[name]
            verdict = (
                f"(target <= {target:.0f} s: {'OK' if median <= target else 'TOO SLOW'})" if state == "warm" else ""
            )
            ok = ok and (state == "cold" or median <= target)
            print(f"{name:<12} {state}: median {median:6.2f} s of CPU on one core {verdict}")
        print(
            f"peak memory {peak:.0f} MB (target <= {TARGET_RSS_MB:.0f} MB: {'OK' if peak <= TARGET_RSS_MB else 'TOO MUCH'})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
