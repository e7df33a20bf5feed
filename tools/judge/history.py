"""``python -m tools history``: the judge's verdicts beside the maintainers' record tables, row by row.

The public speedrun keeps its history by hand, in its README's tables (tools/judge/upstream.py). This command
puts each row of those tables beside what the judge says of the record folder the row links (tools/judge/verify.py),
and says whether they agree:

- a row of a new record agrees when the judge finds the record holds its class (a new record: valid, or
  accepted upstream with incomplete evidence, marked);
- a row that re-times a record ("21st record with new timing") agrees unless the judge makes it a new
  record that beats the holder;
- a row without a log in the repository, or whose log is in a folder another row's record owns, has no
  evidence to agree with: it is listed as such;
- every other row disagrees, with the judge's evidence (the failed rules' lines, or why it is not faster);
- a record the judge makes a new record that no row lists disagrees too.

The same rows make a page of the leaderboard's site (``history.html``); ``--json`` prints one object per row.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.common.text import printable
from tools.judge.records import scan
from tools.judge.upstream import Resolved
from tools.judge.verify import DECIDED_RETIMING, Verdict, upstream_rows, verdict_words, verify_records

AGREE = "agree"
DISAGREE = "disagree"
NO_EVIDENCE = "no evidence"
MAX_EVIDENCE = 4


@dataclass
class HistoryRow:
    """One row of the maintainers' table (or a record the judge crowns that no row lists), and the judge's word."""

    track: str
    number: str  # the row's "#" ("" for a record no row lists)
    upstream: str  # the row in a few words: time, date, description
    record: str | None  # the record folder the row links (its name), None when it links none in the tree
    ours: str  # the judge's verdict in words
    outcome: str  # AGREE, DISAGREE or NO_EVIDENCE
    evidence: list[str] = field(default_factory=list)
    verdict: Verdict | None = field(default=None, repr=False)
    row: Resolved | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "track": self.track,
            "number": self.number,
            "upstream": self.upstream,
            "record": self.record,
            "ours": self.ours,
            "outcome": self.outcome,
            "evidence": self.evidence,
        }


def _row_words(r: Resolved) -> str:
    row = r.row
    return " · ".join(x for x in (row.time_text, row.date or "no date", row.description) if x)


def compare_with_table(verdicts: Sequence[Verdict], rows: Sequence[Resolved]) -> list[HistoryRow]:
    """Every row of the maintainers' tables beside the judge's verdict, in the tables' order, then the records the
    judge crowns that no row lists."""
    by_folder = {v.record.path.resolve(): v for v in verdicts}
    out: list[HistoryRow] = []
    listed: set[int] = set()
    for r in rows:
        row = r.row
        v = by_folder.get(r.folder.resolve()) if r.folder is not None else None
        if v is None:
            why = (
                "the row links no log"
                if not row.log_links
                else "its log links lead to no file of the tree: " + "; ".join(r.how)
                if r.missing
                else "its logs are in several record folders"
            )
            out.append(HistoryRow(row.track, row.number, _row_words(r), None, "—", NO_EVIDENCE, [why], row=r))
            continue
        listed.add(id(v))
        if v.upstream is not r:
            owner = v.upstream.row.number if v.upstream is not None else "?"
            out.append(
                HistoryRow(
                    row.track,
                    row.number,
                    _row_words(r),
                    v.record.name,
                    verdict_words(v),
                    NO_EVIDENCE,
                    [f"its log is in {v.record.name}, whose record is the one of row #{owner}: judged there"],
                    v,
                    r,
                )
            )
            continue
        outcome, evidence = _judge_row(v, r)
        out.append(
            HistoryRow(row.track, row.number, _row_words(r), v.record.name, verdict_words(v), outcome, evidence, v, r)
        )
    for v in sorted(verdicts, key=lambda v: (v.record.track.name, v.order_key)):
        if id(v) in listed or v.is_smoke or not v.is_new_record:
            continue
        why = f"a new record by the judge ({v.decision}), which no row of the maintainers' tables lists"
        out.append(
            HistoryRow(
                v.record.track.name, "", "not in the tables", v.record.name, verdict_words(v), DISAGREE, [why], v
            )
        )
    return out


def _judge_row(v: Verdict, r: Resolved) -> tuple[str, list[str]]:
    if r.row.retiming:
        if v.is_new_record and v.decided_by != DECIDED_RETIMING:
            return DISAGREE, [f"the table re-times an earlier record; the judge makes it a new record: {v.decision}"]
        return AGREE, []
    if v.is_new_record:
        return AGREE, (["evidence incomplete: " + _first(v, incomplete=True)] if v.accepted_upstream else [])
    if v.valid or v.accepted_upstream:
        return DISAGREE, [f"not faster: {v.decision}"]
    return DISAGREE, [_first(v, incomplete=False)] + [
        f"{f.rule}: {f.evidence}" for f in v.failures if not f.incomplete
    ][1:MAX_EVIDENCE]


def _first(v: Verdict, incomplete: bool) -> str:
    picked = [f for f in v.failures if f.incomplete == incomplete] or v.failures
    return f"{picked[0].rule}: {picked[0].evidence}" if picked else ""


def history(records_root: Path) -> list[HistoryRow]:
    """The comparison for a records folder beside its maintainers' README (``ValueError`` without one)."""
    tree = scan(records_root)
    rows = upstream_rows(tree.records)
    if not rows:
        raise ValueError(
            f"{records_root}: no README.md with the maintainers' record tables beside this records folder (the public "
            "speedrun's README.md, next to its records/): there is nothing to compare with"
        )
    verdicts = verify_records(tree.records, table=rows)
    return compare_with_table(verdicts, rows)


def summary(rows: Sequence[HistoryRow]) -> str:
    counts = {k: sum(1 for r in rows if r.outcome == k) for k in (AGREE, DISAGREE, NO_EVIDENCE)}
    return (
        f"{len(rows)} rows: {counts[AGREE]} agree, {counts[DISAGREE]} disagree, {counts[NO_EVIDENCE]} without evidence "
        "in the repository"
    )


def format_text(rows: Sequence[HistoryRow]) -> str:
    lines = []
    for track in dict.fromkeys(r.track for r in rows):
        lines += ["", f"{track}", ""]
        for r in (x for x in rows if x.track == track):
            mark = {AGREE: "  ok ", DISAGREE: "DIFF ", NO_EVIDENCE: "  -- "}[r.outcome]
            lines.append(f"{mark}#{r.number or '—':>3} {r.record or '(no folder)'}: {r.ours}")
            lines.append(f"          table: {r.upstream}")
            lines += [f"          {e}" for e in r.evidence[:MAX_EVIDENCE]]
    lines += ["", summary(rows)]
    return "\n".join(printable(line) for line in lines).lstrip("\n") + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--records",
        type=Path,
        default=Path("records"),
        help="a records folder beside a README.md with the maintainers' tables (default records/)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per row instead of text")


def run(args: argparse.Namespace) -> int:
    rows = history(args.records)
    if args.json:
        sys.stdout.write("".join(json.dumps(r.to_json()) + "\n" for r in rows))
    else:
        sys.stdout.write(format_text(rows))
    return 0
