"""Benchmark: parse and verify the whole community corpus (../shared/anchors/modded-nanogpt/).

    python bench/bench_tools.py                 # all cores (the target: <= 10 s on 2 cores)
    python bench/bench_tools.py --workers 1     # one process, for comparison

Prints the wall-clock time of discovery + parsing every log + every rule on every record, best of
--repeat (the supporting baseline logs are parsed too, though no record claims them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tools.records import discover  # noqa: E402
from tools.verify import judge, parse_many, rank  # noqa: E402

TARGET_S = 10.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--anchors", type=Path, default=REPO_ROOT.parent / "shared" / "anchors" / "modded-nanogpt")
    ap.add_argument("--workers", type=int, default=None, help="parsing processes (default: all cores)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not args.anchors.is_dir():
        print(f"error: {args.anchors} not found: the benchmark needs the community logs", file=sys.stderr)
        return 2
    workers = args.workers or os.cpu_count() or 1
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        records = discover(args.anchors)
        # every log of the corpus, the baselines/ablations that no record claims included
        logs = parse_many(sorted(args.anchors.rglob("*.txt")), workers=workers)
        t1 = time.perf_counter()
        verdicts = [judge(r, logs, {}) for r in records]
        rank(verdicts)
        t2 = time.perf_counter()
        best = min(best, t2 - t0)
        lines = sum(len(log.metrics) for log in logs.values())
        mb = sum(log.size_bytes for log in logs.values()) / 1e6
        print(
            f"{len(logs)} logs ({mb:.0f} MB, {lines:,} metric lines), {len(records)} records: "
            f"parse {t1 - t0:.2f} s + verify {t2 - t1:.2f} s = {t2 - t0:.2f} s on {workers} process(es)"
        )
    print(f"best: {best:.2f} s (target <= {TARGET_S:.0f} s on 2 cores): {'OK' if best <= TARGET_S else 'TOO SLOW'}")
    return 0 if best <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
