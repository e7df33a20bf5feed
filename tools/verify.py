"""Verify records: parse their logs, apply every rule, decide which valid records are new records.

``faster`` (RULES.md) compares a record with the records before it, so a record is always judged
with the other records of its track folder. "Before" is the ledger's order (tools/ledger.py): when
each record entered the main branch, by git history, records not in it yet (a pull request) last;
(date, name) only where there is no git history. The previous record of the same track and
hardware class is the fastest *valid* one before it. The same order decides which record owns a
run that two records carry, which baselines are earlier, and which record's val shard is the track's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools import ledger as ledger_mod
from tools import stats
from tools.known_shards import load_known_shards
from tools.ledger import Ledger
from tools.parse import ParsedLog, parse_log
from tools.records import README, Record, discover, is_records_folder, load_records, misplaced
from tools.rules import (
    NOT_APPLICABLE,
    RULES,
    Context,
    Failure,
    Run,
    claimed_hardware,
    curve_mismatch,
    curve_print,
    near_duplicates,
    plausible_finals,
    val_shards,
)
from tools.text import printable
from tools.tracks import TRACKS, HardwareClass

# Parsing is the expensive part; below this many logs a process pool costs more than it saves.
_PARALLEL_MIN_LOGS = 24


@dataclass
class Verdict:
    record: Record
    runs: list[Run]
    failures: list[Failure]
    not_applicable: list[str]
    hardware: HardwareClass | None
    is_new_record: bool = False
    previous: Verdict | None = field(default=None, repr=False)
    ledger: Ledger = field(default_factory=lambda: ledger_mod.by_date("records ordered by (date, name)"), repr=False)

    @property
    def order_key(self) -> tuple[int, int, str, str]:
        return self.ledger.key(self.record)

    @property
    def valid(self) -> bool:
        return not self.failures

    @property
    def is_smoke(self) -> bool:
        return not self.record.track.is_record_track

    @property
    def finals(self) -> list[float]:
        return [f for r in self.runs if (f := r.log.final_val_loss) is not None]

    @property
    def times_ms(self) -> list[float]:
        return [t for r in self.runs if (t := r.log.train_time_ms) is not None and math.isfinite(t)]

    @property
    def mean_val_loss(self) -> float | None:
        return stats.mean(self.finals)

    @property
    def mean_train_time_ms(self) -> float | None:
        return stats.mean(self.times_ms)

    @property
    def p_value(self) -> float | None:
        target = self.record.track.target_val_loss
        if target is None or not plausible_finals(self.finals, self.record.track.min_val_loss):
            return None
        p = stats.p_below_target(self.finals, target)
        return None if p is None or math.isnan(p) else p

    @property
    def failed_rules(self) -> list[str]:
        return sorted({f.rule for f in self.failures}, key=_rule_order)

    def to_json(self) -> dict[str, Any]:
        return {
            "record": str(self.record.path),
            "name": self.record.name,
            "track": self.record.track.name,
            "date": self.record.date,
            "title": self.record.title,
            "hardware": self.hardware.label if self.hardware else None,
            "valid": self.valid,
            "is_new_record": self.is_new_record,
            "previous_record": self.previous.record.name if self.previous else None,
            "ledger": self.ledger.describe(self.record),
            "runs": len(self.runs),
            "mean_val_loss": stats.finite_or_none(self.mean_val_loss),
            "p_value": stats.finite_or_none(self.p_value),
            "mean_train_time_ms": stats.finite_or_none(self.mean_train_time_ms),
            "failures": [f.to_json() for f in self.failures],
            "not_applicable": self.not_applicable,
            "logs": [r.file for r in self.runs],
        }


def _rule_order(rule: str) -> int:
    ids = [r for r, _ in RULES] + ["faster"]
    return ids.index(rule) if rule in ids else len(ids)


def _parse_or_fail(path: Path) -> ParsedLog:
    """Parse a log; a path that cannot be read becomes a log with a structure issue, never a crash."""
    try:
        return parse_log(path)
    except ValueError as e:
        log = ParsedLog(path=str(path), size_bytes=0, file_sha256="")
        log.structure_issues.append(str(e))
        return log


def parse_many(paths: Sequence[Path], workers: int | None = None) -> dict[Path, ParsedLog]:
    """Parse logs, on every core when there are many (the order of the result follows ``paths``)."""
    unique = list(dict.fromkeys(paths))
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n <= 1 or len(unique) < _PARALLEL_MIN_LOGS:
        return {p: _parse_or_fail(p) for p in unique}
    with ProcessPoolExecutor(max_workers=n) as pool:
        return dict(zip(unique, pool.map(_parse_or_fail, unique, chunksize=8), strict=True))


def judge(record: Record, logs: dict[Path, ParsedLog], known_shards: dict[str, str]) -> Verdict:
    """Apply every rule but ``faster`` to one record."""
    runs = [Run(p, logs[p]) for p in record.logs]
    ctx = Context(record, runs, known_shards)
    failures: list[Failure] = []
    not_applicable: list[str] = []
    for rule_id, rule in RULES:
        result = rule(ctx)
        if result is NOT_APPLICABLE:
            not_applicable.append(rule_id)
        else:
            assert isinstance(result, list)
            failures.extend(result)
    if ctx.is_smoke:
        not_applicable.append("faster")
    hardware = None if ctx.is_smoke else claimed_hardware(ctx)
    return Verdict(record, runs, failures, not_applicable, hardware)


def _is_harness_record(v: Verdict) -> bool:
    return not v.is_smoke and Context(v.record, v.runs).harness_format


def flag_reused_runs(verdicts: Iterable[Verdict]) -> None:
    """``distinct-runs`` across records: a run counts for one record only, the first in the ledger's order;
    a later record that carries it again fails. A run is known by its run_id, its bytes, and its losses
    (``tools.rules.near_duplicates``: a copy with a new run_id and a digit nudged is the same run).
    Community logs have no run_id, and the public corpus itself files some logs under two records, so
    only records of this harness are compared."""
    ordered = sorted((v for v in verdicts if _is_harness_record(v)), key=lambda v: (v.record.track.name, v.order_key))
    owner: dict[tuple[str, str], tuple[Verdict, Run]] = {}
    flagged: set[int] = set()
    for v in ordered:
        for run in v.runs:
            run_id = (run.log.config or {}).get("run_id")
            keys = [("bytes", run.log.file_sha256)] if run.log.file_sha256 else []
            keys += [("run_id", run_id)] if isinstance(run_id, str) and run_id else []
            hits = [(k, owner[k]) for k in keys if k in owner and owner[k][0] is not v]
            if not hits:
                for k in keys:
                    owner.setdefault(k, (v, run))
                continue
            (kind, value), (first, first_run) = hits[0]
            what = "byte for byte the same file as" if kind == "bytes" else f"run_id {value} is also the run_id of"
            evidence = (
                f"{what} {first_run.file} of the earlier record {first.record.name}: a run counts for one record "
                "only; submit new runs"
            )
            v.failures.append(Failure("distinct-runs", run.file, evidence))
            flagged.add(id(run))
    for track in {v.record.track.name for v in ordered}:
        runs = [(v, r) for v in ordered if v.record.track.name == track for r in v.runs if id(r) not in flagged]
        owners = [id(v) for v, _ in runs]
        pairs = near_duplicates([curve_print(r.log) for _, r in runs], owners)
        for (i, j), why in sorted(pairs.items()):
            (first, first_run), (later, run) = runs[i], runs[j]  # `ordered`: i's record is the earlier
            if id(run) in flagged:
                continue
            later.failures.append(
                Failure(
                    "distinct-runs",
                    run.file,
                    f"the same run as {first_run.file} of the earlier record {first.record.name}: {why}; a run counts "
                    "for one record only",
                )
            )
            flagged.add(id(run))


def check_val_shards(verdicts: Iterable[Verdict]) -> None:
    """``data`` across records: every record of a track validates on the val shard (sha256) of the first
    record in the ledger's order whose runs agree on one. Validation never changes; without a table of
    known hashes (tools/known_shards.json) this is what keeps a record from validating on other data."""
    ordered = sorted((v for v in verdicts if _is_harness_record(v)), key=lambda v: (v.record.track.name, v.order_key))
    reference: dict[str, tuple[frozenset[str], Verdict]] = {}
    for v in ordered:
        sets = {val_shards(r.log) for r in v.runs}
        if len(sets) != 1 or not (mine := sets.pop()):
            continue  # no runs, or runs that disagree: the record's own `data` rule says so
        track = v.record.track.name
        if track not in reference:
            reference[track] = (mine, v)
            continue
        theirs, first = reference[track]
        if mine != theirs:
            v.failures.append(
                Failure(
                    "data",
                    Context(v.record, v.runs).record_file,
                    f"validates on val shard {sorted(mine)[0][:16]}…, but {first.record.name}, the first record of "
                    f"{track}, on {sorted(theirs)[0][:16]}…: every record validates on the same data",
                )
            )


def _baseline_of(v: Verdict, by_path: dict[Path, Verdict]) -> Verdict | None:
    meta = v.record.meta
    if meta is None or not meta.baseline:
        return None
    return by_path.get(v.record.path.parent / meta.baseline)


def check_baselines(verdicts: Sequence[Verdict]) -> None:
    """A ``baseline`` is strictly earlier in the ledger (a record cannot improve on one that came after it,
    and two records cannot name each other); a systems_only record shows its baseline's val curve
    within run-to-run noise (``tools.rules.curve_mismatch``), which is what makes its math the baseline's."""
    by_path = {v.record.path: v for v in verdicts}
    for v in verdicts:
        base = _baseline_of(v, by_path)
        if base is None:
            continue  # no baseline, or no such record: `structure` says so
        readme = str(v.record.path / README)
        if not base.order_key < v.order_key:
            v.failures.append(
                Failure(
                    "structure",
                    readme,
                    f"baseline {base.record.name} is not earlier in the ledger ({base.ledger.describe(base.record)}; "
                    f"this record: {v.ledger.describe(v.record)}): a record improves on one that landed before it",
                )
            )
            continue
        meta = v.record.meta
        if meta is not None and meta.systems_only and v.runs and base.runs:
            problem = curve_mismatch(v.runs, base.runs)
            if problem:
                v.failures.append(
                    Failure(
                        "target",
                        readme,
                        f"systems_only: true claims the math of {base.record.name}, but {problem}",
                    )
                )


def require_valid_baselines(verdicts: Sequence[Verdict]) -> None:
    """``systems_only: true`` waives the p-value because the math is the baseline's: that baseline must
    itself be a valid record (a ``target`` failure otherwise). Repeated until nothing changes, so that an
    invalid record invalidates a chain of systems-only records built on it."""
    by_path = {v.record.path: v for v in verdicts}
    flagged: set[Path] = set()
    changed = True
    while changed:
        changed = False
        for v in verdicts:
            meta = v.record.meta
            if meta is None or not meta.systems_only or v.record.path in flagged:
                continue
            base = _baseline_of(v, by_path)
            if base is None or base.valid:
                continue  # no such folder: `structure` already says so
            assert meta.baseline is not None
            evidence = (
                f"systems_only: true waives the p-value only against a valid baseline; {meta.baseline} failed "
                f"{', '.join(base.failed_rules)}"
            )
            v.failures.append(Failure("target", str(v.record.path / README), evidence))
            flagged.add(v.record.path)
            changed = True


def rank(verdicts: Iterable[Verdict]) -> None:
    """Set ``is_new_record`` and ``previous``: per (track, hardware class), in the ledger's order."""
    best: dict[tuple[str, HardwareClass | None], Verdict] = {}
    for v in sorted(verdicts, key=lambda v: (v.record.track.name, v.order_key)):
        if v.is_smoke:
            continue
        key = (v.record.track.name, v.hardware)
        prev = best.get(key)
        v.previous = prev
        t = v.mean_train_time_ms
        if not v.valid or t is None:
            continue
        prev_t = prev.mean_train_time_ms if prev else None
        v.is_new_record = prev_t is None or t < prev_t
        if v.is_new_record:
            best[key] = v


def verify_records(
    records: Sequence[Record], known_shards: dict[str, str] | None = None, ledger: Ledger | None = None
) -> list[Verdict]:
    """Judge and rank ``records`` together (they should be all the records of their tracks).

    ``ledger``: the order of the records (default: the git history of the repository they sit in).
    """
    shards = load_known_shards() if known_shards is None else known_shards
    order = ledger if ledger is not None else ledger_mod.for_records(records)
    logs = parse_many([p for r in records for p in r.logs])
    verdicts = [judge(r, logs, shards) for r in records]
    for v in verdicts:
        v.ledger = order
    flag_reused_runs(verdicts)
    check_val_shards(verdicts)
    check_baselines(verdicts)
    require_valid_baselines(verdicts)
    rank(verdicts)
    return verdicts


def _track_folder(record: Record) -> Path | None:
    for parent in [record.path, *record.path.parents]:
        if parent.name in TRACKS and parent.name == record.track.name:
            return parent
    return None


def verify_paths(
    paths: Sequence[Path],
    track: str | None = None,
    known_shards: dict[str, str] | None = None,
    ledger: Ledger | None = None,
) -> list[Verdict]:
    """Verify the records at ``paths`` (folders or log files), each judged among its track folder's records.

    ``ValueError`` for a path that is not a record.
    """
    wanted: list[Record] = []
    for p in paths:
        wanted.extend(load_records(p, track))
    universe: dict[Path, Record] = {}
    for rec in wanted:
        folder = _track_folder(rec) if rec.layout != "log" else None
        if folder is not None:
            for other in discover(folder):
                universe.setdefault(other.path, other)
    for rec in wanted:
        universe[rec.path] = rec  # the caller's --track wins for the records it named
    verdicts = {v.record.path: v for v in verify_records(list(universe.values()), known_shards, ledger)}
    return [verdicts[r.path] for r in wanted]


# --- output ---------------------------------------------------------------------------------


def format_json(verdicts: Sequence[Verdict]) -> str:
    return "".join(json.dumps(v.to_json(), sort_keys=False) + "\n" for v in verdicts)


def _fmt(x: float | None, spec: str, unit: str = "") -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:{spec}}{unit}"


def format_text(verdicts: Sequence[Verdict], stray: Sequence[tuple[Path, str]] = ()) -> str:
    """The verdict table, then one FAIL line per failure; ``stray``: entries of a records folder that are
    not records (``tools.records.misplaced``), which fail too."""
    lines: list[str] = []
    records = [v for v in verdicts if not v.is_smoke]
    if records:
        header = f"{'record':<48} {'track':<14} {'hardware':<26} {'runs':>4} {'mean loss':>9} {'p-value':>8} {'mean time':>10}  verdict"
        lines += [header, "-" * len(header)]
        for v in records:
            if v.valid:
                verdict = (
                    "valid, NEW RECORD"
                    if v.is_new_record
                    else "valid, not faster than " + (v.previous.record.name if v.previous else "the previous record")
                )
            else:
                verdict = "INVALID: " + ", ".join(v.failed_rules)
            lines.append(
                f"{v.record.name[:48]:<48} {v.record.track.name:<14} {(v.hardware.label if v.hardware else '—')[:26]:<26} "
                f"{len(v.runs):>4} {_fmt(v.mean_val_loss, '.4f'):>9} {_fmt(v.p_value, '.2g'):>8} "
                f"{_fmt(None if v.mean_train_time_ms is None else v.mean_train_time_ms / 1000, '.3f', ' s'):>10}  {verdict}"
            )
    for v in verdicts:
        if v.is_smoke:
            lines.append(_smoke_summary(v))
    if records:
        lines.append(records[0].ledger.note)
    failing = [v for v in verdicts if v.failures]
    if failing or stray:
        lines.append("")
        for v in failing:
            for f in v.failures:
                lines.append(f"FAIL {f.rule:<13} {f.file}: {f.evidence}")
        for path, why in stray:
            lines.append(f"FAIL {'structure':<13} {path}: {why}")
    n_bad = len(failing)
    lines.append("")
    lines.append(
        f"{len(verdicts) - n_bad} of {len(verdicts)} valid"
        + (f"; {n_bad} failed (see FAIL lines)" if n_bad else "")
        + (
            f"; {len(stray)} {'entry is' if len(stray) == 1 else 'entries are'} not a record folder (see FAIL lines)"
            if stray
            else ""
        )
    )
    return "\n".join(printable(line) for line in lines) + "\n"  # names and evidence come from input


def _smoke_summary(v: Verdict) -> str:
    """A run of a track without records (smoke, scale): its health, never a record."""
    kind = v.record.track.name
    if not v.valid:
        return f"{kind} run FAILED ({', '.join(v.failed_rules)}): {v.record.path}"
    parts = []
    for r in v.runs:
        c = r.log.val_curve
        t = r.log.train_time_ms
        parts.append(
            f"val loss {c[0].val_loss:.4f} -> {c[-1].val_loss:.4f} in {c[-1].step} steps, "
            f"{_fmt(None if t is None else t / 1000, '.1f', ' s')} timed"
        )
    return f"valid {kind} run (not a record): {v.record.path}: " + "; ".join(parts)


# --- command line: python -m tools verify ---------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        nargs="+",
        metavar="RECORD",
        type=Path,
        help="record folders (records/<track>/<date>_<name>/), a track or records folder, or single log files",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per record instead of a table")
    p.add_argument(
        "--track",
        choices=sorted(TRACKS),
        help="the track to judge against (default: read from the path, records/<track>/...)",
    )
    add_ledger_argument(p)


def add_ledger_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ledger-repo",
        type=Path,
        metavar="PATH",
        help="a git checkout (full history) of the branch that judges, whose records/ history orders the records "
        "(default: the git repository the records folder is in; (date, name) order where there is none)",
    )


def ledger_from_args(args: argparse.Namespace) -> Ledger | None:
    """The ledger --ledger-repo names (``ValueError`` with the reason if it cannot be read), else None."""
    return ledger_mod.from_git(args.ledger_repo) if args.ledger_repo is not None else None


def run(args: argparse.Namespace) -> int:
    verdicts = verify_paths(args.paths, args.track, ledger=ledger_from_args(args))
    # Entries of a records or track folder that hold no record are reported, never silently skipped.
    stray = [entry for root in args.paths if is_records_folder(root) for entry in misplaced(root)]
    if args.json:
        sys.stdout.write(format_json(verdicts))
        if any(not v.is_smoke for v in verdicts):
            sys.stderr.write(printable(verdicts[0].ledger.note) + "\n")
        sys.stderr.write("".join(printable(f"FAIL {'structure':<13} {p}: {why}") + "\n" for p, why in stray))
    else:
        sys.stdout.write(format_text(verdicts, stray))
    return 0 if all(v.valid for v in verdicts) and not stray else 1
