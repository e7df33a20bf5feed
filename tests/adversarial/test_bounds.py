"""Every log under the 64 MiB limit is judged in bounded time and memory, however it was written.

The shapes are bench/bench_hostile.py's (which prints the full table): each attacks one cost the tools
once had, a regex that backtracks quadratically on a line of spaces or on `compile(` repeated, findall
tuples of millions of metric lines (~1 GB per 64 MiB), a syntax tree of megabytes of code. A small copy
of every shape must be judged in seconds (a quadratic one takes hours at 2 MiB); the costliest, at the
full 64 MiB, runs in a child process under resource limits: <= 10 CPU seconds, <= 1 GB resident.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from tools.judge.parse import parse_bytes
from tools.judge.records import Record
from tools.judge.tracks import TRACKS
from tools.judge.verify import judge, rank

sys.path.insert(0, str(REPO_ROOT / "bench"))
import bench_hostile  # noqa: E402

SMALL = 2 * 1024 * 1024


@pytest.mark.timeout(300)
@pytest.mark.parametrize("shape", list(bench_hostile.SHAPES))
def test_a_small_copy_of_every_hostile_shape_is_judged_quickly(shape: str) -> None:
    raw = bench_hostile.SHAPES[shape](SMALL)
    t0 = time.process_time()  # CPU time: the bound holds however busy the machine is
    log = parse_bytes(raw, "hostile.txt")
    rec = Record(Path("hostile.txt"), "hostile.txt", TRACKS["track_1_short"], [Path("hostile.txt")], "log")
    v = judge(rec, {Path("hostile.txt"): log}, {})
    rank([v])
    assert not v.valid
    assert time.process_time() - t0 < 10, f"{shape}: {time.process_time() - t0:.1f} s of CPU"


@pytest.mark.timeout(300)
def test_the_largest_legal_log_within_10_cpu_seconds_and_1_gb(tmp_path: Path) -> None:
    """Every costly shape at once, at the full size: CPU time (not wall time: CI's machine is shared) and
    peak memory of `python -m tools verify` in a child that the kernel stops past 4 GB or 20 CPU seconds."""
    raw = bench_hostile.SHAPES["everything-at-once"](64 * 1024 * 1024 - 4096)
    path = tmp_path / "hostile.txt"
    path.write_bytes(raw)
    cost = bench_hostile.measure(path, timeout_s=240, limit_as_bytes=4 << 30, limit_cpu_s=20)
    assert cost.exit_code == 1, cost  # judged (invalid), neither killed nor crashed
    assert cost.cpu_s <= bench_hostile.LIMIT_S and cost.peak_mb <= bench_hostile.LIMIT_MB, cost
