"""``python -m tools check``: what CI runs on every pull request that touches records/.

1. Verify every record under ``records/`` (each must have its README.md and pass every rule); anything
   else under ``records/`` (an unknown track folder, a stray file) fails: it would be skipped, not judged.
2. Regenerate the leaderboard in memory and compare it, byte for byte, with ``leaderboard/``:
   a record added without regenerating, or a hand edit, fails with the command that fixes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools import leaderboard
from tools.records import discover, misplaced
from tools.text import printable
from tools.verify import format_text, verify_records


def check(records_root: Path, leaderboard_dir: Path) -> tuple[bool, list[str]]:
    """(passed, report lines)."""
    lines: list[str] = []
    ok = True
    records = discover(records_root)
    stray = misplaced(records_root)
    for rec in records:
        if rec.layout != "harness":
            ok = False
            lines.append(f"FAIL structure      {rec.path}: no README.md with front matter (see records/README.md)")
    verdicts = verify_records([r for r in records if r.layout == "harness"])
    if verdicts or stray:
        lines.extend(format_text(verdicts, stray).rstrip("\n").split("\n"))
    ok = ok and all(v.valid for v in verdicts) and not stray
    lines.append(f"verified {len(verdicts)} record(s) under {records_root}")
    expected = leaderboard.build(records_root, leaderboard_dir)
    actual = (
        {p.relative_to(leaderboard_dir).as_posix(): p for p in leaderboard_dir.rglob("*") if p.is_file()}
        if leaderboard_dir.is_dir()
        else {}
    )
    stale = sorted(k for k in expected if k not in actual or actual[k].read_bytes() != expected[k])
    extra = sorted(k for k in actual if k not in expected)
    if stale or extra:
        ok = False
        for k in stale:
            lines.append(
                f"FAIL leaderboard   {leaderboard_dir / k}: {'missing' if k not in actual else 'differs from a fresh regeneration'}"
            )
        for k in extra:
            lines.append(f"FAIL leaderboard   {leaderboard_dir / k}: not generated from the records (remove it)")
        lines.append(
            f"fix: run `python -m tools leaderboard --records {records_root} --out {leaderboard_dir}` and commit the result"
        )
    else:
        lines.append(f"{leaderboard_dir} is up to date ({len(expected)} files)")
    lines.append("check passed" if ok else "check FAILED")
    return ok, lines


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=Path, default=Path("records"), help="the records folder (default records/)")
    p.add_argument(
        "--leaderboard", type=Path, default=Path("leaderboard"), help="the leaderboard folder (default leaderboard/)"
    )


def run(args: argparse.Namespace) -> int:
    ok, lines = check(args.records, args.leaderboard)
    sys.stdout.write("\n".join(printable(line) for line in lines) + "\n")  # paths come from input
    return 0 if ok else 1
