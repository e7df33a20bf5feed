"""Benchmark: the compile-flags rule on the public speedrun's distinct codes, cold and warm.

    python bench/bench_sourcecheck.py                       # $SPEEDRUN_PUBLIC_RECORDS, else a clone of the bundle
    python bench/bench_sourcecheck.py --records PATH --repeat 3

Reads every log of the public repository's records/track_1_short and records/track_2_medium (--records, else
$SPEEDRUN_PUBLIC_RECORDS, else a temporary clone of ../shared/public-speedrun/*.bundle), keeps the distinct inputs of
find_compile_flags as rule_compile_flags makes them (a code section, the Python its log names, the files
appended to it), and prints the CPU seconds (time.process_time) of judging all of them once:

- cold: in a fresh process with the cache off (SPEEDRUN_CACHE=off): every input parsed and read;
- warm: in a fresh process whose on-disk cache already holds every entry (a first process filled it);

each the median of --repeat processes, and, for scale, what ast.parse alone takes on the same codes. Reading
the logs is not timed, nor is starting Python.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TRACKS = ("track_1_short", "track_2_medium")


def distinct_inputs(records: Path) -> tuple[int, int, list[tuple[str, str | None, list[str]]]]:
    """(logs read, distinct code sections per log, the distinct (code, python_version, local modules))."""
    sys.path.insert(0, str(REPO_ROOT))
    from tools.judge.parse import parse_log

    paths = sorted(p for t in TRACKS for p in (records / t).rglob("*") if p.suffix in (".txt", ".log") and p.is_file())
    sections: set[tuple[str, str]] = set()
    inputs: dict[tuple[str, str | None, tuple[str, ...]], None] = {}
    for path in paths:
        log = parse_log(path)
        if (log.source_text + log.extra_code).strip():
            sections.add((log.source_text, log.extra_code))
        local = tuple(sorted({Path(name).stem for name in log.appended_files}))
        for code in (log.source_text, log.extra_code):  # as rule_compile_flags calls it
            if code.strip():
                inputs.setdefault((code, log.python_version, local), None)
    return len(paths), len(sections), [(c, v, list(m)) for c, v, m in inputs]


def child(inputs_file: Path, parse_too: bool) -> None:
    """Judge every input once in this process; print the CPU seconds as JSON."""
    sys.path.insert(0, str(REPO_ROOT))
    from tools.judge.sourcecheck import find_compile_flags

    inputs = json.loads(inputs_file.read_text(encoding="utf-8"))
    t0 = time.process_time()
    findings = sum(len(find_compile_flags(code, version, local)) for code, version, local in inputs)
    result = {"cpu_s": time.process_time() - t0, "findings": findings}
    if parse_too:
        t0 = time.process_time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for code, _, _ in inputs:
                try:
                    ast.parse(code)
                except (SyntaxError, ValueError):
                    pass
        result["parse_s"] = time.process_time() - t0
    print(json.dumps(result))


def run_child(inputs_file: Path, cache: str, parse_too: bool = False) -> dict[str, float]:
    env = {**os.environ, "SPEEDRUN_CACHE": cache}
    cmd = [sys.executable, __file__, "--child", str(inputs_file)] + (["--parse-too"] if parse_too else [])
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.environ.get("SPEEDRUN_PUBLIC_RECORDS")
    ap.add_argument(
        "--records",
        type=Path,
        default=Path(default) if default else None,
        help="the public records folder (default: $SPEEDRUN_PUBLIC_RECORDS, else a clone of the shared bundle)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="processes per measurement; the median is printed")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--parse-too", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.parse_too)
        return 0
    if args.records is None:
        with tempfile.TemporaryDirectory(prefix="bench-sourcecheck-clone-") as tmp:
            sys.path.insert(0, str(REPO_ROOT))
            from bench.bench_tools import clone_bundle

            args.records = clone_bundle(Path(tmp)) / "records"
            return measure(args)
    return measure(args)


def measure(args: argparse.Namespace) -> int:
    if not all((args.records / t).is_dir() for t in TRACKS):
        print(
            f"error: {args.records} has no {' and '.join(TRACKS)}: the benchmark needs the public records",
            file=sys.stderr,
        )
        return 2
    logs, sections, inputs = distinct_inputs(args.records)
    print(
        f"{logs} logs, {sections} distinct code sections, {len(inputs)} distinct inputs "
        f"({len({c for c, _, _ in inputs})} distinct texts) to find_compile_flags"
    )
    with tempfile.TemporaryDirectory(prefix="bench-sourcecheck-") as tmp:
        inputs_file = Path(tmp) / "inputs.json"
        inputs_file.write_text(json.dumps(inputs), encoding="utf-8")
        cold = [run_child(inputs_file, "off", parse_too=True) for _ in range(args.repeat)]
        cache = str(Path(tmp) / "cache")
        filled = run_child(inputs_file, cache)  # fills the on-disk cache
        warm = [run_child(inputs_file, cache) for _ in range(args.repeat)]
    if len({r["findings"] for r in [*cold, filled, *warm]}) != 1:
        print("error: cold and warm runs disagree on the number of findings", file=sys.stderr)
        return 1
    parse_s = statistics.median(r["parse_s"] for r in cold)
    cold_s = statistics.median(r["cpu_s"] for r in cold)
    warm_s = statistics.median(r["cpu_s"] for r in warm)
    print(f"cold (SPEEDRUN_CACHE=off): {cold_s:.2f} s CPU, median of {args.repeat} (ast.parse alone: {parse_s:.2f} s)")
    print(f"warm (on-disk cache filled): {warm_s:.2f} s CPU, median of {args.repeat}")
    print(f"findings: {int(cold[0]['findings'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
