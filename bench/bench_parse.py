"""Benchmark: parse every log of the public speedrun's records, cold (cache off) and warm (from the cache).

    python bench/bench_parse.py                        # $SPEEDRUN_PUBLIC_RECORDS, else /tmp/scratch/modded-nanogpt
    python bench/bench_parse.py --records ~/src/modded-nanogpt/records --repeat 5

The records are a clone of ../shared/public-speedrun's bundle (its README says how). Each measurement
is a fresh process that parses every *.txt and *.log under the folder with tools.judge.parse.parse_log,
keeping the results as `verify` does, and reports the CPU seconds of that loop (imports excluded)
and the process's peak RSS:
- cold: SPEEDRUN_CACHE=off, every log parsed;
- fill: an empty temporary cache, every log parsed and its entry written (once);
- warm: that cache, every log read from it.
cold and warm print the median of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECORDS = Path(os.environ.get("SPEEDRUN_PUBLIC_RECORDS", "/tmp/scratch/modded-nanogpt"))


def _logs(records: Path) -> list[Path]:
    return sorted(p for p in records.rglob("*") if p.suffix in (".txt", ".log") and p.is_file() and not p.is_symlink())


def _child(records: Path) -> None:
    """One measurement, in this process: parse every log, print CPU seconds and peak RSS as JSON."""
    sys.path.insert(0, str(REPO_ROOT))
    from tools.judge.parse import parse_log

    paths = _logs(records)
    t0 = time.process_time()
    logs = [parse_log(p) for p in paths]
    cpu = time.process_time() - t0
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    size = sum(log.size_bytes for log in logs)
    print(json.dumps({"cpu_s": cpu, "rss_mib": rss_mib, "logs": len(logs), "bytes": size}))


def _measure(records: Path, cache: str) -> dict[str, float]:
    env = dict(os.environ, SPEEDRUN_CACHE=cache)
    out = subprocess.run(
        [sys.executable, __file__, "--records", str(records), "--child"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--records",
        type=Path,
        default=DEFAULT_RECORDS,
        help="the public speedrun's clone or its records/ folder (default: $SPEEDRUN_PUBLIC_RECORDS, else %(default)s)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs of cold and of warm; the median is printed")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    records: Path = args.records / "records" if (args.records / "records").is_dir() else args.records
    if not records.is_dir() or not _logs(records):
        print(
            f"error: {args.records}: no folder of record logs there. Clone the public records first:\n"
            "  git clone -q ../shared/public-speedrun/modded-nanogpt-records-2026-04-18.bundle "
            "/tmp/scratch/modded-nanogpt\n"
            "or give --records PATH (or set SPEEDRUN_PUBLIC_RECORDS)",
            file=sys.stderr,
        )
        return 2
    if args.child:
        _child(records)
        return 0
    if args.repeat < 1:
        print(f"error: --repeat {args.repeat}: give a number of runs >= 1", file=sys.stderr)
        return 2

    def line(label: str, runs: list[dict[str, float]]) -> None:
        cpu = statistics.median(r["cpu_s"] for r in runs)
        rss = max(r["rss_mib"] for r in runs)
        each = ", ".join(f"{r['cpu_s']:.2f}" for r in runs)
        print(f"{label:<5} {cpu:6.2f} CPU s (median of {len(runs)}: {each})   peak RSS {rss:5.0f} MiB", flush=True)

    first = _measure(records, "off")
    print(f"{records}: {first['logs']:.0f} logs, {first['bytes'] / 1e6:.0f} MB")
    line("cold", [first] + [_measure(records, "off") for _ in range(args.repeat - 1)])
    with tempfile.TemporaryDirectory(prefix="bench-parse-cache-") as cache:
        line("fill", [_measure(records, cache)])
        line("warm", [_measure(records, cache) for _ in range(args.repeat)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
