"""``python -m tools compare A B``: two records side by side, with Welch's t-test on time and on final loss.

A and B are record folders or single logs (a log is a record of one run). The t-tests need at least
two runs on each side; with fewer they are reported as not computable, never guessed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tools import stats
from tools.text import printable
from tools.tracks import TRACKS
from tools.verify import Verdict, verify_paths


def compare(a: Verdict, b: Verdict) -> dict[str, Any]:
    """The comparison as plain data (what ``--json`` prints)."""
    t = stats.welch(a.times_ms, b.times_ms)
    loss = stats.welch(a.finals, b.finals)

    def side(v: Verdict) -> dict[str, Any]:
        return {
            "record": str(v.record.path),
            "track": v.record.track.name,
            "hardware": v.hardware.label if v.hardware else None,
            "valid": v.valid,
            "runs": len(v.runs),
            "mean_train_time_ms": stats.mean(v.times_ms),
            "std_train_time_ms": stats.std(v.times_ms),
            "mean_val_loss": stats.mean(v.finals),
            "std_val_loss": stats.std(v.finals),
        }

    def test(r: stats.WelchResult | None) -> dict[str, Any] | None:
        # Both numbers are of B - A: welch(a, b) is scipy's ttest_ind(a, b), whose t is of A - B, and
        # Welch's t is antisymmetric (swapping the samples flips its sign, the two-sided p stays).
        return (
            None
            if r is None
            else {
                "t": stats.finite_or_none(-r.statistic),
                "p_value": stats.finite_or_none(r.p_value),
                "difference": r.mean_b - r.mean_a,
            }
        )

    warnings = []
    if a.hardware != b.hardware:
        warnings.append("different hardware classes: times are not comparable")
    if a.record.track != b.record.track:
        warnings.append("different tracks")
    return {"a": side(a), "b": side(b), "welch_time": test(t), "welch_val_loss": test(loss), "warnings": warnings}


def format_text(result: dict[str, Any]) -> str:
    a, b = result["a"], result["b"]

    def num(x: float | None, spec: str, scale: float = 1.0) -> str:
        return "—" if x is None else f"{x / scale:{spec}}"

    rows = [
        ("record", a["record"], b["record"]),
        ("hardware", a["hardware"] or "—", b["hardware"] or "—"),
        ("valid", "yes" if a["valid"] else "no", "yes" if b["valid"] else "no"),
        ("runs", str(a["runs"]), str(b["runs"])),
        ("mean time (s)", num(a["mean_train_time_ms"], ".3f", 1000), num(b["mean_train_time_ms"], ".3f", 1000)),
        ("std time (s)", num(a["std_train_time_ms"], ".3f", 1000), num(b["std_train_time_ms"], ".3f", 1000)),
        ("mean val loss", num(a["mean_val_loss"], ".4f"), num(b["mean_val_loss"], ".4f")),
        ("std val loss", num(a["std_val_loss"], ".4f"), num(b["std_val_loss"], ".4f")),
    ]
    width = max(len(r[1]) for r in rows) + 2
    lines = [f"{name:<15} {va:<{width}} {vb}" for name, va, vb in rows]
    for label, key, scale, unit in (
        ("time", "welch_time", 1000.0, " s"),
        ("final val loss", "welch_val_loss", 1.0, ""),
    ):
        r = result[key]
        if r is None:
            lines.append(f"Welch's t-test on {label}: not computable (needs at least 2 runs on each side)")
        else:
            lines.append(
                f"Welch's t-test on {label}: B - A = {r['difference'] / scale:+.4f}{unit}, "
                f"t(B - A) = {num(r['t'], '+.3f')}, two-sided p = {num(r['p_value'], '.3g')}"
            )
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
