"""Benchmark: the tools on hostile logs of the largest legal size (64 MiB), one shape per attack.

    python bench/bench_hostile.py               # every shape, 64 MiB each
    python bench/bench_hostile.py --mib 8       # smaller, quicker
    python bench/bench_hostile.py --shape smi-spaces

Each shape is written to a temporary file and judged by `python -m tools verify --json` in a fresh
process; the table gives its wall time, CPU time (imports included) and peak memory (the child's max
RSS). The bound the tools promise for any file under the 64 MiB limit: <= 10 CPU seconds and <= 1 GB
(CPU time, not wall time, so that a busy machine does not move it; tests/adversarial/test_bounds.py checks
the costliest shape and small copies of the rest). Shapes: metric lines just under the line cap and
over it, val lines, malformed step lines, llm.c lines, an nvidia-smi row of spaces, millions of
nvidia-smi rows, one line with no newline, separator lines only, a code section at the rule's size
cap (dense calls), `compile(` repeated on one line, a 1 MiB config line, all of these at once, text
with a non-BMP character (4 bytes per character in memory).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tools.judge.parse import MAX_JSON_LINE_CHARS, MAX_METRIC_LINES, SEPARATOR  # noqa: E402
from tools.judge.sourcecheck import MAX_CODE_CHARS  # noqa: E402

LIMIT_S = 10.0
LIMIT_MB = 1024
ENV = (
    "Running Python 3.11.7 (main) [GCC]\nRunning PyTorch 2.13.0+cu130 compiled for CUDA 13.0\n"
    "Sat Jan 10 23:36:12 2026\n|   0  NVIDIA H100 80GB HBM3          On  |   00000000:18:00.0 Off |\n"
)


def _log(code: str, env_extra: str, metrics: str, size: int, filler: str = "\n") -> bytes:
    head = f"{code}{SEPARATOR}\n{ENV}{env_extra}{SEPARATOR}\n{metrics}".encode()
    pad = size - len(head)
    unit = filler.encode()
    return head + unit * (max(pad, 0) // len(unit))


def _lines(line: str, size: int, count: int | None = None) -> str:
    n = size // (len(line) + 1) if count is None else count
    return (line + "\n") * n


SHAPES: dict[str, Callable[[int], bytes]] = {
    "metric-lines-at-cap": lambda size: _log(
        "", "", _lines("step:1/9 train_loss:3.1 train_time:1ms step_avg:1.00ms", size, MAX_METRIC_LINES - 1), size
    ),
    "metric-lines-over-cap": lambda size: _log("", "", _lines("step:1/1 train_time:1ms", size), size),
    "val-lines-at-cap": lambda size: _log(
        "", "", _lines("step:1/9 val_loss:3.1 train_time:1ms", size, MAX_METRIC_LINES - 1), size
    ),
    "malformed-step-lines": lambda size: _log("", "", _lines("step:", size, MAX_METRIC_LINES - 1), size),
    "llmc-lines": lambda size: _log("", "", _lines("s:1 trl:3.1", size), size),
    "smi-spaces": lambda size: _log("", "|   0  " + " " * (size - 8192) + "\n", "", size),
    "smi-rows": lambda size: _log("", _lines("|  0 x On |", size - 4096), "", size),
    "one-line": lambda size: b"x" * size,
    "separators": lambda size: (SEPARATOR + "\n").encode() * (size // 101),
    "code-at-cap-dense": lambda size: _log("f(1)\n" * (MAX_CODE_CHARS // 5), "", "", size),
    "compile-repeated": lambda size: _log("x = " + "compile(" * (size // 8 - 64) + "\n", "", "", size),
    "config-line-at-cap": lambda size: _log(
        "", "config: [" + "1.5," * (MAX_JSON_LINE_CHARS // 4 - 2) + "1]\n", "", size
    ),
    "everything-at-once": lambda size: _log(
        "# \U0001f600\n" + "f(1)\n" * (MAX_CODE_CHARS // 5 - 4),
        "|   0  " + " " * (size // 2) + "\n" + _lines("|  0 x On |", 0, 20_000),
        _lines("step:1/9 val_loss:3.1 train_time:1ms step_avg:1.00ms", 0, MAX_METRIC_LINES - 1),
        size,
    ),
    "non-bmp-text": lambda size: _log(
        "# \U0001f600\n", "", _lines("step:1/9 val_loss:3.1 train_time:1ms", size // 2, 200_000), size
    ),
}


# The child reports its own peak RSS: RUSAGE_CHILDREN would give the largest of all children so far.
_CHILD = (
    "import resource, sys\n"
    "from tools.cli import main\n"
    "code = main(['verify', '--json', '--track', 'track_1_short', sys.argv[1]])\n"
    "r = resource.getrusage(resource.RUSAGE_SELF)\n"
    "sys.stderr.write(f'\\npeak-rss-kb {r.ru_maxrss} cpu-s {r.ru_utime + r.ru_stime}\\n')\n"
    "sys.exit(code)\n"
)


@dataclass
class Cost:
    wall_s: float
    cpu_s: float
    peak_mb: float
    exit_code: int  # 124: outlasted the timeout; -9 etc.: killed by a limit


def measure(
    path: Path, timeout_s: float = 600.0, limit_as_bytes: int | None = None, limit_cpu_s: int | None = None
) -> Cost:
    """What `python -m tools verify --json` costs on the log at ``path``, in a fresh process, optionally under
    resource limits (address space, CPU seconds): a child that exceeds one is killed, not waited for."""

    def limits() -> None:
        if limit_as_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as_bytes, limit_as_bytes))
        if limit_cpu_s is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (limit_cpu_s, limit_cpu_s))

    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path)],
            cwd=REPO_ROOT,
            capture_output=True,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            timeout=timeout_s,
            preexec_fn=limits,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Cost(time.perf_counter() - t0, float("inf"), float("inf"), 124)
    wall = time.perf_counter() - t0
    err = proc.stderr.decode(errors="replace")
    report = [line.split() for line in err.splitlines() if line.startswith("peak-rss-kb ")]
    if proc.returncode not in (0, 1) or not report:
        sys.stderr.write(err[-2000:])
        return Cost(wall, float("inf"), float("inf"), proc.returncode)
    return Cost(wall, float(report[-1][3]), int(report[-1][1]) / 1024, proc.returncode)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=float, default=64.0, help="size of each hostile log (default 64)")
    ap.add_argument("--shape", choices=sorted(SHAPES), action="append", help="only these shapes")
    args = ap.parse_args()
    size = int(args.mib * 1024 * 1024) - 4096
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'shape':<24} {'MiB':>6} {'wall s':>7} {'cpu s':>6} {'peak MB':>8}  exit")
        for name in args.shape or sorted(SHAPES, key=lambda n: list(SHAPES).index(n)):
            raw = SHAPES[name](size)
            path = Path(tmp) / "hostile.txt"
            path.write_bytes(raw)
            c = measure(path)
            bad = c.cpu_s > LIMIT_S or c.peak_mb > LIMIT_MB or c.exit_code not in (0, 1)
            ok = ok and not bad
            print(
                f"{name:<24} {len(raw) / 2**20:>6.1f} {c.wall_s:>7.2f} {c.cpu_s:>6.2f} {c.peak_mb:>8.0f}  "
                f"{c.exit_code}{'  OVER' if bad else ''}"
            )
    print(f"bound: <= {LIMIT_S:.0f} CPU s and <= {LIMIT_MB} MB per log: {'OK' if ok else 'EXCEEDED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
