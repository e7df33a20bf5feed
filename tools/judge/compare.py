"""``python -m tools compare A B``: two records side by side, with Welch's t-test on time and on final loss.

A and B are record folders or single logs (a log is a record of one run). The numbers are those of
``tools.judge.stats.Comparison`` (B the candidate, A the reference), the object the leaderboard and verify's
same-node rule use. The t-tests need at least two runs on each side; with fewer they are reported as
not computable, never guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from tools.common.text import printable
from tools.judge.tracks import TRACKS
from tools.judge.verify import Verdict, comparison, speed_words, verify_paths


def shown_path(path: Path) -> str:
    """``path`` relative to the current folder, as the user would type it (a record found through its
    track folder is known by its absolute path); absolute where no relative path exists (another drive)."""
    try:
        return os.path.relpath(path.absolute())
    except ValueError:
        return str(path)


def compare(a: Verdict, b: Verdict) -> dict[str, Any]:
    """The comparison as plain data (what ``--json`` prints): B against A, ``comparison`` being
    ``tools.judge.verify.comparison(a, b).to_json()``, the object the leaderboard shows."""

    def side(v: Verdict) -> dict[str, Any]:
        return {
            "record": shown_path(v.record.path),
            "track": v.record.track.name,
            "hardware": v.hardware.label if v.hardware else None,
            "valid": v.valid,
            "runs": len(v.runs),
        }

    warnings = []
    if a.hardware != b.hardware:
        warnings.append("different hardware classes: times are not comparable")
    if a.record.track != b.record.track:
        warnings.append("different tracks")
    return {"a": side(a), "b": side(b), "comparison": comparison(a, b).to_json(), "warnings": warnings}


def format_text(result: dict[str, Any]) -> str:
    a, b, c = result["a"], result["b"], result["comparison"]
    time, loss = c["train_time_ms"], c["val_loss"]

    def num(x: float | None, spec: str, scale: float = 1.0) -> str:
        return "—" if x is None else f"{x / scale:{spec}}"

    rows = [
        ("record", a["record"], b["record"]),
        ("hardware", a["hardware"] or "—", b["hardware"] or "—"),
        ("valid", "yes" if a["valid"] else "no", "yes" if b["valid"] else "no"),
        ("runs", str(a["runs"]), str(b["runs"])),
        ("mean time (s)", num(time["reference"]["mean"], ".3f", 1000), num(time["candidate"]["mean"], ".3f", 1000)),
        ("std time (s)", num(time["reference"]["sd"], ".3f", 1000), num(time["candidate"]["sd"], ".3f", 1000)),
        ("mean val loss", num(loss["reference"]["mean"], ".4f"), num(loss["candidate"]["mean"], ".4f")),
        ("std val loss", num(loss["reference"]["sd"], ".4f"), num(loss["candidate"]["sd"], ".4f")),
    ]
    width = max(len(r[1]) for r in rows) + 2
    lines = [f"{name:<15} {va:<{width}} {vb}" for name, va, vb in rows]
    for label, r, scale, unit in (("time", time, 1000.0, " s"), ("final val loss", loss, 1.0, "")):
        if r["p_two_sided"] is None:
            lines.append(
                f"Welch's t-test on {label}: not computable (needs at least 2 runs on each side, and some variance)"
            )
        else:
            lines.append(
                f"Welch's t-test on {label}: B - A = {r['difference'] / scale:+.4f}{unit}, "
                f"t(B - A) = {num(r['t'], '+.3f')}, df = {num(r['df'], '.1f')}, two-sided p = "
                f"{num(r['p_two_sided'], '.3g')}, one-sided p (B lower) = {num(r['p_lower'], '.3g')}"
            )
    if c["speedup_pct"] is not None:
        lines.append(f"B against A: {speed_words(c['speedup_pct'])} in mean time")
    lines += [f"warning: {w}" for w in result["warnings"]]
    return "\n".join(printable(line) for line in lines) + "\n"  # record paths come from input


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", type=Path, metavar="A", help="a record folder or a log")
    p.add_argument("b", type=Path, metavar="B", help="another record folder or log")
    p.add_argument("--track", choices=sorted(TRACKS), help="the track, when the paths do not tell it")
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON object")


def run(args: argparse.Namespace) -> int:
    sides = []
    for path in (args.a, args.b):
        verdicts = verify_paths([path], args.track)
        if len(verdicts) != 1:
            names = ", ".join(v.record.name for v in verdicts)
            raise ValueError(f"{path} holds {len(verdicts)} records ({names}); name one of them")
        sides.append(verdicts[0])
    result = compare(sides[0], sides[1])
    sys.stdout.write(json.dumps(result) + "\n" if args.json else format_text(result))
    return 0
