"""``python -m tools check``: what CI runs on every pull request that touches records/.

1. Verify every record under ``records/``: each record submitted here (a README.md with front matter) must pass
   every rule, and a folder without front matter fails unless it landed before (a public record, judged by the
   rules of its date and shown as such); anything else under ``records/`` (an unknown track folder, a stray
   file) fails: it would be skipped, not judged.
2. Records that landed (in the ledger's history) are the files that landed: a file of one edited,
   removed or added fails (``tools.judge.ledger.landed_changes``).
3. Regenerate the leaderboard in memory and compare it, byte for byte, with ``leaderboard/``:
   a record added without regenerating, or a hand edit, fails with the command that fixes it.

Records are ordered by the ledger (tools/judge/ledger.py): the git history of the repository the records
folder is in, or of ``--ledger-repo`` (CI: the base branch's checkout, whose records landed; the pull
request's records are pending and come after them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools.common.text import printable
from tools.judge import ledger as ledger_mod
from tools.judge.ledger import Ledger
from tools.judge.records import files_under, scan
from tools.judge.verify import add_ledger_argument, format_text, ledger_from_args, verify_records
from tools.site import leaderboard


def check(records_root: Path, leaderboard_dir: Path, ledger: Ledger | None = None) -> tuple[bool, list[str]]:
    """(passed, report lines); ``ledger``: the order of the records (default: their git repository's).

    Each record is verified once: the verdicts printed here are the ones the regenerated leaderboard shows."""
    lines: list[str] = []
    tree = scan(records_root)
    if ledger is None:
        ledger = ledger_mod.for_records(tree.records, strict=True)
    verdicts = verify_records(tree.records, ledger=ledger)
    stray = [*tree.other_tracks, *tree.misplaced]  # in this repository, a folder of another track is misplaced too
    ok = not stray
    for v in verdicts:
        if v.record.layout != "harness" and v.ledger.entry(v.record) is None:
            ok = False
            lines.append(
                f"FAIL structure      {v.record.path}: no README.md with front matter: a record submitted here says "
                "what it claims there (see records/README.md)"
            )
    harness = [v for v in verdicts if v.record.layout == "harness"]
    if harness or stray:
        lines.extend(format_text(harness, stray).rstrip("\n").split("\n"))
    ok = ok and all(v.valid for v in harness)
    for path, why in ledger_mod.landed_changes(ledger, records_root):
        ok = False
        lines.append(f"FAIL landed        {path}: {why}; a maintainer changes a landed record by a commit of its own")
    lines.append(f"verified {len(harness)} record(s) under {records_root}")
    expected = leaderboard.build(records_root, leaderboard_dir, ledger=ledger, verdicts=verdicts)
    actual = (
        {p.relative_to(leaderboard_dir).as_posix(): p for p in files_under(leaderboard_dir)}
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
    add_ledger_argument(p)


def run(args: argparse.Namespace) -> int:
    ok, lines = check(args.records, args.leaderboard, ledger_from_args(args))
    sys.stdout.write("\n".join(printable(line) for line in lines) + "\n")  # paths come from input
    return 0 if ok else 1
