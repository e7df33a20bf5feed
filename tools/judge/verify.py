"""Verify records: parse their logs, apply every rule, decide which valid records are new records.

``faster`` (RULES.md) compares a record with the records before it, so a record is always judged
with the other records of its track folder. "Before" is the ledger's order (tools/judge/ledger.py): when
each record entered the main branch, by git history, records not in it yet (a pull request) last;
(date, name) only where there is no git history. The previous record of the same track and
hardware class is the fastest *valid* one before it. The same order decides which record owns a
run that two records carry, which baselines are earlier, and which record's val shard is the track's.

Which rule decides "new record" (``Verdict.decided_by``): a record that carries same-node baseline runs
(``baseline/``, tools/judge/samenode.py) whose named ``baseline`` is that previous record is a new record when
its runs are faster than the baseline runs on the same node, by a one-sided Welch t-test with p < 0.01
(DECIDED_SAME_NODE); its mean time may then be above the previous record's, measured on another node.
Every other valid record is compared by mean train_time with the previous record (DECIDED_ABSOLUTE),
also one whose baseline runs name an older record than the previous one: its measured speed-up is
against a record that no longer holds the class, so it cannot say that it beats the one that does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.common.progress import progress, usable_cpus
from tools.common.text import printable
from tools.judge import layout as layout_mod
from tools.judge import ledger as ledger_mod
from tools.judge import samenode, stats
from tools.judge import upstream as upstream_mod
from tools.judge.known_shards import load_known_shards
from tools.judge.layout import Decision, Earlier
from tools.judge.ledger import Ledger
from tools.judge.parse import ParsedLog, parse_log
from tools.judge.records import README, Record, discover, files_under, is_records_folder, load_records, scan
from tools.judge.reproduced import Reproduced, read_reproduced
from tools.judge.rulebook import Rulebook, rulebook_for
from tools.judge.rules import (
    NOT_APPLICABLE,
    P_VALUE_THRESHOLD,
    RULE_IDS,
    RULES,
    RUN_DATE_SLACK,
    RUN_IDENTITY_KEYS,
    Context,
    Failure,
    Run,
    claimed_hardware,
    curve_mismatch,
    curve_print,
    near_duplicates,
    plausible_finals,
    shard_list,
    val_shards,
)
from tools.judge.tracks import TRACKS, HardwareClass, canonical_gpu_name
from tools.judge.upstream import Resolved

# Parsing is the expensive part; below this many logs a process pool costs more than it saves.
_PARALLEL_MIN_LOGS = 24
# Which rule decided whether a valid record is a new record (``Verdict.decided_by``).
DECIDED_SAME_NODE = "same-node baseline"
DECIDED_ABSOLUTE = "absolute time"
DECIDED_RETIMING = "timing rules changed"
DECIDED_UPSTREAM = "maintainers' table"  # faster not shown on one node, but listed as a record upstream
# What a record's row says of it (``Verdict.status_kind``).
STATUS_NEW = "new"  # valid and holds its class: a new record
STATUS_VALID = "valid"  # valid, not faster
STATUS_ACCEPTED = "accepted"  # accepted upstream (the maintainers' table lists it); evidence incomplete
STATUS_INCOMPLETE = "incomplete"  # a public record whose evidence is incomplete, which the table does not list
STATUS_FAILED = "failed"


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
    baseline_runs: list[Run] = field(default_factory=list)  # baseline/*.txt: the same-node baseline runs
    # The record's runs against its baseline runs (reference) on the same node; None without baseline runs.
    same_node: stats.Comparison | None = None
    decided_by: str | None = None  # DECIDED_SAME_NODE or DECIDED_ABSOLUTE for a valid record, else None
    decision: str = ""  # how "new record" was decided, in words
    reproduced: Reproduced | None = None  # the record's reproduced.json, when it has a valid one
    reproduced_problem: str | None = None  # why the record is not shown as reproduced, when it has the file
    # The rules of the record's date that judged it (tools/judge/rulebook.py): today's for a pending record.
    rulebook: Rulebook = field(default_factory=lambda: rulebook_for("track_1_short", None, True), repr=False)
    # What this harness's stricter checks found that the record's rules do not ask (a public record): shown, never
    # a verdict. A harness record has none: every check binds it.
    notes: list[Failure] = field(default_factory=list)
    upstream: Resolved | None = field(default=None, repr=False)  # its row of the maintainers' table
    layout: Decision | None = field(default=None, repr=False)  # how a public folder's roles were decided

    @property
    def is_reproduced(self) -> bool:
        """A maintainer reproduced every run of the record as it is now (the leaderboard's mark)."""
        return self.reproduced is not None and self.reproduced.all_reproduced

    @property
    def order_key(self) -> tuple[int, float, int, str, str]:
        return self.ledger.key(self.record)

    @property
    def valid(self) -> bool:
        return not self.failures

    @property
    def incomplete(self) -> bool:
        """A public record whose every failure says evidence is missing (too few runs, no time, no nvidia-smi)."""
        return bool(self.failures) and all(f.incomplete for f in self.failures)

    @property
    def accepted_upstream(self) -> bool:
        """The maintainers' table lists it and its evidence is incomplete (the rules' evidence, or that it is faster
        on the same hardware): on the staircase, marked."""
        return self.upstream is not None and (self.incomplete or self.decided_by == DECIDED_UPSTREAM)

    @property
    def status_kind(self) -> str:
        if self.accepted_upstream:
            return STATUS_ACCEPTED
        if self.valid:
            return STATUS_NEW if self.is_new_record else STATUS_VALID
        return STATUS_INCOMPLETE if self.incomplete else STATUS_FAILED

    @property
    def ranks(self) -> bool:
        """Takes part in "faster": a valid record, or one the maintainers accepted whose evidence is incomplete."""
        return self.valid or self.accepted_upstream

    @property
    def time_ms(self) -> float | None:
        """The time "faster" compares: the mean of its runs', else (a record accepted upstream whose logs carry
        no time) the maintainers' table's."""
        t = self.mean_train_time_ms
        if t is None and self.accepted_upstream and self.upstream is not None and self.upstream.row.time_s:
            return self.upstream.row.time_s * 1000
        return t

    @property
    def is_smoke(self) -> bool:
        return not self.record.track.is_record_track

    @property
    def finals(self) -> list[float]:
        return [f for r in self.runs if (f := r.log.final_val_loss) is not None]

    @property
    def times_ms(self) -> list[float]:
        return _times_ms(self.runs)

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
            "decided_by": self.decided_by,
            "decision": self.decision,
            "same_node": self.same_node.to_json() if self.same_node else None,
            "reproduced": self._reproduced_json(),
            "failures": [f.to_json() for f in self.failures],
            "not_applicable": self.not_applicable,
            "logs": [r.file for r in self.runs],
            "baseline_logs": [r.file for r in self.baseline_runs],
            "status": self.status_kind,
            "rulebook": self.rulebook.name,
            "notes": [f.to_json() for f in self.notes],
            "roles": [{"file": str(r.path), "role": r.kind, "why": r.why} for r in self.record.roles],
            "upstream": (
                {
                    "number": self.upstream.row.number,
                    "time": self.upstream.row.time_text,
                    "pr": self.upstream.row.pr_url,
                }
                if self.upstream is not None
                else None
            ),
        }

    def _reproduced_json(self) -> dict[str, Any] | None:
        if self.reproduced is None and self.reproduced_problem is None:
            return None
        rep = self.reproduced
        return {
            "reproduced": self.is_reproduced,
            "date": rep.date if rep else None,
            "machine": rep.machine if rep else None,
            "problem": self.reproduced_problem,
        }


def comparison(reference: Verdict, candidate: Verdict) -> stats.Comparison:
    """Two records' runs, ``candidate`` against ``reference``: what compare prints and the leaderboard shows."""
    return stats.compare(
        reference.times_ms,
        candidate.times_ms,
        reference.finals,
        candidate.finals,
        reference=reference.record.name,
        candidate=candidate.record.name,
    )


def _rule_order(rule: str) -> int:
    return RULE_IDS.index(rule) if rule in RULE_IDS else len(RULE_IDS)


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
    n = workers if workers is not None else usable_cpus()
    if n <= 1 or len(unique) < _PARALLEL_MIN_LOGS:
        return {p: _parse_or_fail(p) for p in progress(unique, "parsing logs", "logs")}
    with ProcessPoolExecutor(max_workers=n) as pool:
        parsed = progress(pool.map(_parse_or_fail, unique, chunksize=8), "parsing logs", "logs", len(unique))
        return dict(zip(unique, parsed, strict=True))


def judge(
    record: Record,
    logs: dict[Path, ParsedLog],
    known_shards: dict[str, str],
    rulebook: Rulebook | None = None,
    decision: Decision | None = None,
) -> Verdict:
    """Apply every rule but ``faster`` to one record, by ``rulebook`` (default: today's rules). What a rule of
    this harness finds that the rulebook does not ask becomes a note (a public record), not a failure."""
    runs = [Run(p, logs[p]) for p in record.logs]
    ctx = Context(record, runs, known_shards, rulebook=rulebook)
    rules = ctx.rules
    found: list[Failure] = []
    not_applicable: list[str] = []
    for rule_id, rule in RULES:
        result = rule(ctx)
        if result is NOT_APPLICABLE:
            not_applicable.append(rule_id)
        else:
            assert isinstance(result, list)
            found.extend(result)
    baseline = [Run(p, logs[p]) for p in record.baseline_runs]
    baseline_found = samenode.judge_baseline_runs(ctx, baseline)
    if ctx.is_public:
        # A public record's baseline runs are the submitter's comparison, not its evidence: what is wrong with them
        # (no host line, a stopped run) makes the same-node comparison unusable, never the record invalid.
        notes = [_as_note(f, "same-node") for f in baseline_found]
        found_binding = [f for f in found if rules.binding(f.rule, f.kind)]
        notes = [f for f in found if not rules.binding(f.rule, f.kind)] + notes
        failures = found_binding
    else:
        failures, notes = [*found, *baseline_found], []
    if ctx.is_smoke or not baseline:
        not_applicable.append(samenode.RULE)
    if ctx.is_smoke:
        not_applicable.append("faster")
    hardware = None if ctx.is_smoke else claimed_hardware(ctx)
    v = Verdict(record, runs, failures, not_applicable, hardware, baseline_runs=baseline, rulebook=rules, notes=notes)
    v.layout = decision
    usable = not ctx.is_public or not any(_blocks_same_node(f) for f in baseline_found)
    if baseline and not ctx.is_smoke and usable:
        v.same_node = stats.compare(
            _times_ms(baseline),
            v.times_ms,
            [f for r in baseline if (f := r.log.final_val_loss) is not None],
            v.finals,
            reference=f"baseline runs of {_named_baseline(v)} on the same node",
            candidate=record.name,
            basis=stats.BASIS_SAME_NODE,
        )
    if record.layout == "harness":
        v.reproduced, v.reproduced_problem = _reproduced_state(record)
    return v


def _as_note(f: Failure, rule: str) -> Failure:
    return Failure(rule, f.file, f"{f.rule}: {f.evidence}" if f.rule != rule else f.evidence, f.kind)


def _blocks_same_node(f: Failure) -> bool:
    """A finding about a public record's baseline runs that makes them no fair comparison: a run that is not a
    whole, honest run (the host line that public logs never carry does not count)."""
    return f.rule in samenode.BASELINE_RULES


def _times_ms(runs: Sequence[Run]) -> list[float]:
    return [t for r in runs if (t := r.log.train_time_ms) is not None and math.isfinite(t)]


def _reproduced_state(record: Record) -> tuple[Reproduced | None, str | None]:
    """(the valid reproduced.json, why the record is not shown as reproduced): never a failure of the record,
    which does not vouch for that file (only maintainers add it; the records workflow refuses it in a PR)."""
    try:
        rep = read_reproduced(record.path)
    except ValueError as e:
        return None, str(e)
    except OSError as e:  # a log it covers that cannot be read (permissions): the file cannot be checked
        return None, f"{record.path}: a log cannot be read to check reproduced.json ({e.strerror})"
    if rep is None:
        return None, None
    why = [*rep.stale, *(f"{m}: a log of the record that no reproduction covers" for m in rep.missing)]
    why += [f"{r.log}: {r.verdict}" for r in rep.runs if not r.reproduced]
    return rep, ("; ".join(why) if why else None)


def _is_harness_record(v: Verdict) -> bool:
    return not v.is_smoke and Context(v.record, v.runs).harness_format


def flag_reused_runs(verdicts: Iterable[Verdict]) -> None:
    """``distinct-runs`` across records: a run counts for one record only, the first in the ledger's order;
    a later record that carries it again fails. A run is known by its run_id, its bytes, and its losses
    (``tools.judge.rules.near_duplicates``: a copy with a new run_id and a digit nudged is the same run).
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
    known hashes (tools/judge/known_shards.json) this is what keeps a record from validating on other data."""
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
    within run-to-run noise (``tools.judge.rules.curve_mismatch``), which is what makes its math the baseline's."""
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


def check_same_node(verdicts: Sequence[Verdict]) -> None:
    """``same-node`` against the named baseline record (tools/judge/samenode.py): the baseline runs ran its code,
    byte for byte, with its config and its data, none of them is a run of a record, and their mean time is its runs'
    within the spread between nodes (a public record's baseline runs: a note, ``_check_baseline_times``)."""
    by_path = {v.record.path: v for v in verdicts}
    for v in verdicts:
        if not v.baseline_runs or v.is_smoke:
            continue
        meta = v.record.meta
        readme = str(v.record.path / README)
        if meta is not None and meta.baseline is None:
            v.failures.append(
                Failure(
                    samenode.RULE,
                    readme,
                    f"baseline/ holds {len(v.baseline_runs)} baseline run(s), but the front matter names no "
                    "'baseline': name the record whose code they ran",
                )
            )
        base = _baseline_of(v, by_path)
        if base is not None:
            v.failures.extend(_against_baseline_record(v, base))
        reused = _baseline_runs_of_records(v, verdicts)
        if v.rulebook.binding(samenode.RULE):
            v.failures.extend(reused)
        elif reused:  # a public record: a note, and a comparison with runs of a record is no same-node comparison
            v.notes.extend(reused)
            v.same_node = None
        _check_baseline_times(v, by_path)


def _check_baseline_times(v: Verdict, by_path: dict[Path, Verdict]) -> None:
    """``same-node``: the baseline runs' mean time is the baseline record's runs' mean within the spread between
    nodes (samenode.BASELINE_TIME_SPREAD). The baseline record is the named one (harness) or the earlier record whose
    code the runs carry (public); records of another hardware class or timed under other timing rules are not
    compared. For a public record it is a note, and its same-node comparison is no longer used to rank it."""
    name = _baseline_record_of(v)
    base = by_path.get(v.record.path.parent / name) if name else None
    if base is None or base is v or base.hardware != v.hardware or base.rulebook.timing != v.rulebook.timing:
        return
    codes = {r.log.code_sha256 for r in base.runs if r.log.code_sha256}
    problem = samenode.baseline_time_problem(
        _times_ms([r for r in v.baseline_runs if r.log.code_sha256 in codes]), base.times_ms, base.record.name
    )
    if problem is None:
        return
    ctx = Context(v.record, v.runs)
    failure = Failure(samenode.RULE, ctx.record_file, problem)
    if ctx.is_public:
        v.notes.append(failure)
        v.same_node = None  # "faster" is decided as for a record without usable baseline runs
    else:
        v.failures.append(failure)


def _against_baseline_record(v: Verdict, base: Verdict) -> list[Failure]:
    out: list[Failure] = []
    name = base.record.name
    hashes = Counter(r.log.code_sha256 for r in base.runs if r.log.code_sha256)
    if len(hashes) != 1:
        what = "no code hash" if not hashes else f"{len(hashes)} different code hashes"
        return [
            Failure(
                samenode.RULE,
                str(v.record.path / README),
                f"the baseline {name} has {what}: there is no one code for the baseline runs to have run",
            )
        ]
    code = next(iter(hashes))
    cfg0 = next((r.log.config for r in base.runs if r.log.config is not None), None)
    shards0, _ = shard_list(base.runs[0].log)
    for run in v.baseline_runs:
        log = run.log
        if log.code_sha256 != code:
            out.append(
                Failure(
                    samenode.RULE,
                    run.file,
                    f"source sha256 {(log.code_sha256 or 'none')[:16]}… is not {code[:16]}…, the code of the baseline "
                    f"{name}: a baseline run runs the baseline record's code byte for byte (extract it from one of "
                    f"its logs: python -m tools reproduce LOG --extract FILE)",
                )
            )
            continue
        if cfg0 is not None and log.config is None:
            why = log.config_error or "no 'config:' line"
            out.append(Failure(samenode.RULE, run.file, f"{why}: the baseline run cannot show it ran as {name} ran"))
            continue
        if cfg0 is not None and log.config is not None:
            mine, theirs = _without(log.config, RUN_IDENTITY_KEYS), _without(cfg0, RUN_IDENTITY_KEYS)
            if mine != theirs:
                keys = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                out.append(
                    Failure(
                        samenode.RULE,
                        run.file,
                        f"config differs from the baseline {name}'s in {', '.join(keys[:8])}: a baseline run runs "
                        "the baseline record as it ran (no SPEEDRUN_OVERRIDES, the same preset)",
                    )
                )
                continue
        shards, problem = shard_list(log)
        if shards0 and shards != shards0:
            what = f"{problem}, so it cannot show that it read" if problem else "reads other shards (name, sha256) than"
            out.append(
                Failure(
                    samenode.RULE,
                    run.file,
                    f"{what} the baseline {name}'s shards: a baseline run reads the baseline record's data",
                )
            )
    return out


def _without(d: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: x for k, x in d.items() if k not in keys}


def _baseline_runs_of_records(v: Verdict, verdicts: Sequence[Verdict]) -> list[Failure]:
    """A baseline run is made for this comparison: not a run of any record of the track (its file or
    run_id), nor, by its losses, a run of the named baseline record (its own logs, copied and edited)."""
    owners: dict[tuple[str, str], tuple[Verdict, Run]] = {}
    for other in verdicts:
        if other.record.track != v.record.track:
            continue
        for run in other.runs:
            rid = (run.log.config or {}).get("run_id")
            for key in (("bytes", run.log.file_sha256), ("run_id", rid if isinstance(rid, str) else "")):
                if key[1]:
                    owners.setdefault(key, (other, run))
    out: list[Failure] = []
    flagged: set[int] = set()
    for b in v.baseline_runs:
        rid = (b.log.config or {}).get("run_id")
        for kind, value in (("bytes", b.log.file_sha256), ("run_id", rid if isinstance(rid, str) else "")):
            hit = owners.get((kind, value)) if value else None
            if hit is None or hit[0] is v:
                continue  # the record's own runs: tools.judge.samenode says so
            what = "byte for byte the same file as" if kind == "bytes" else f"run_id {value} is also the run_id of"
            out.append(
                Failure(
                    samenode.RULE,
                    b.file,
                    f"{what} {hit[1].file} of the record {hit[0].record.name}: a baseline run is run anew, on the "
                    "node of the record's runs",
                )
            )
            flagged.add(id(b))
            break
    base = _baseline_of(v, {x.record.path: x for x in verdicts})
    if base is not None and base.runs:
        rest = [b for b in v.baseline_runs if id(b) not in flagged]
        prints = [curve_print(r.log) for r in [*base.runs, *rest]]
        owner = [0] * len(base.runs) + [1] * len(rest)
        seen: set[int] = set()
        for (i, j), why in sorted(near_duplicates(prints, owner).items()):
            run = rest[j - len(base.runs)]
            if id(run) in seen:
                continue
            seen.add(id(run))
            out.append(
                Failure(
                    samenode.RULE,
                    run.file,
                    f"the same run as {base.runs[i].file} of the baseline {base.record.name}: {why}; a baseline "
                    "run is run anew, on the node of the record's runs",
                )
            )
    return out


def rank(verdicts: Iterable[Verdict]) -> None:
    """Set ``is_new_record``, ``previous``, ``decided_by`` and ``decision``: per (track, hardware class), in the
    ledger's order. The previous record of a class is its latest new record (the one that holds it). A record
    the maintainers accepted whose evidence is incomplete takes part, marked (``Verdict.ranks``).

    Times are compared only when they were measured under the same timing rules: since 2025-02-02 every step is
    timed, before it the first 10 were not (tools/judge/rulebook.py). The first record of a class that ranks under new
    timing rules holds the class, whatever the older holder's time: it re-times the class."""
    best: dict[tuple[str, HardwareClass | None], Verdict] = {}
    for v in sorted(verdicts, key=lambda v: (v.record.track.name, v.order_key)):
        if v.is_smoke:
            continue
        key = (v.record.track.name, v.hardware)
        prev = best.get(key)
        v.previous = prev
        t = v.time_ms
        if not v.ranks or t is None:
            continue
        v.is_new_record, v.decided_by, v.decision = _decide(v, prev, t)
        if v.is_new_record:
            best[key] = v


def speed_words(speedup_pct: float | None) -> str:
    """``4.81 % faster`` / ``1.20 % slower`` for a Comparison's speedup_pct (the share of time saved)."""
    if speedup_pct is None or not math.isfinite(speedup_pct):
        return "no time measured"
    return f"{abs(speedup_pct):.2f} % {'faster' if speedup_pct >= 0 else 'slower'}"


def _decide(v: Verdict, prev: Verdict | None, t: float) -> tuple[bool, str, str]:
    """(new record?, the rule that decided, why) for a record ``v`` that ranks, with time ``t``."""
    if prev is None:
        return True, DECIDED_ABSOLUTE, "the first valid record of its track and hardware class"
    if prev.rulebook.timing != v.rulebook.timing:
        return (
            True,
            DECIDED_RETIMING,
            f"the first record of its class timed under the timing rules of its date (every step timed, since "
            f"2025-02-02): {prev.record.name}'s time was measured with its first 10 steps untimed, so this record "
            "re-times the class",
        )
    prev_t = prev.time_ms
    assert prev_t is not None  # a previous record ranks with a time
    sn = v.same_node if v.same_node is not None and v.same_node.time.computable else None
    of = _baseline_record_of(v)
    if sn is not None and v.rulebook.same_hardware_baseline and (of is None or of == prev.record.name):
        named = of or prev.record.name
        p = sn.time.p_lower
        speed = speed_words(sn.speedup_pct)
        assumed = "" if of is not None else " (baseline runs named so; their code is no earlier record's)"
        if p is not None and p < P_VALUE_THRESHOLD:
            return (
                True,
                DECIDED_SAME_NODE,
                f"faster than {named} on the same node{assumed}: {speed}, one-sided p = {p:.2g}",
            )
        p_text = "undefined" if p is None else f"{p:.2g}"
        return (
            False,
            DECIDED_SAME_NODE,
            f"not faster than {named} on the same node{assumed} at p < {P_VALUE_THRESHOLD}: {speed}, one-sided p = "
            f"{p_text}",
        )
    if t >= prev_t and v.upstream is not None and v.rulebook.same_hardware_baseline and not v.rulebook.harness:
        # The rules of its date ask it to be faster on the prior record's hardware, and it brings no comparison made
        # there: times of two nodes differ by several percent, so neither "faster" nor "not faster" is shown. The
        # maintainers' table lists it as a record: it holds the class, marked.
        return (
            True,
            DECIDED_UPSTREAM,
            f"the rules of its date ask it to be faster than {prev.record.name} on the same hardware; it brings no "
            f"same-node baseline runs to show it{'' if sn is None else ' that can be used'}, and across nodes its mean "
            f"time ({t / 1000:.3f} s) is not below {prev.record.name}'s ({prev_t / 1000:.3f} s): accepted as the "
            "maintainers' table lists it, evidence incomplete",
        )
    why = ""
    if v.same_node is not None and sn is None:
        why = "; its same-node comparison cannot be computed (it needs at least 2 runs on each side), so mean times decide"
    elif sn is not None and not v.rulebook.same_hardware_baseline:
        why = "; the rules of its date compare mean times (same-node baselines decide since 2025-12-02)"
    elif sn is not None:
        why = (
            f"; its baseline runs are of {of}, not of {prev.record.name}, the record that holds its class, "
            "so mean times decide"
        )
    source = " (the maintainers' table's time: its logs carry none)" if v.mean_train_time_ms is None else ""
    if t < prev_t:
        return True, DECIDED_ABSOLUTE, f"mean time below {prev.record.name}'s{source}{why}"
    return False, DECIDED_ABSOLUTE, f"mean time not below {prev.record.name}'s{source}{why}"


def _baseline_record_of(v: Verdict) -> str | None:
    """The record whose code a record's baseline runs ran: the named baseline (harness), or the earlier record
    whose code they carry byte for byte (public); None for public baseline runs named so but of no known code."""
    meta = v.record.meta
    if meta is not None:
        return meta.baseline
    return v.layout.baseline_of if v.layout is not None else None


def verify_records(
    records: Sequence[Record],
    known_shards: dict[str, str] | None = None,
    ledger: Ledger | None = None,
    table: Sequence[Resolved] | None = None,
) -> list[Verdict]:
    """Judge and rank ``records`` together (they should be all the records of their tracks).

    ``ledger``: the order of the records (default: the git history of the repository they sit in).
    ``table``: the maintainers' table's rows, resolved to the records' files (default: the table of the
    README beside the records folder, tools/judge/upstream.py; none for this repository's own records/).
    """
    shards = load_known_shards() if known_shards is None else known_shards
    order = ledger if ledger is not None else ledger_mod.for_records(records)
    logs = parse_many([p for r in records for p in [*r.logs, *r.baseline_runs, *r.candidates]])
    rows = list(table) if table is not None else upstream_rows(records)
    row_of = _rows_by_record(records, rows)
    keys = dict(zip((id(r) for r in rows), ledger_mod.row_keys([r.row for r in rows]), strict=True))
    order.settle(
        records,
        _all_logs,
        lambda r: dated_before_runs(r, logs),
        lambda r: keys.get(id(row_of[r.path])) if r.path in row_of else None,
        lambda r: _undated_row_date(r, logs, row_of.get(r.path)),
    )
    decisions = assign_roles(records, logs, order, row_of)
    verdicts = []
    for r in records:
        when = order.when(r) if order.from_history else _folder_time(r)
        book = rulebook_for(r.track.name, when, r.layout != "public")
        verdicts.append(judge(r, logs, shards, book, decisions.get(r.path)))
    for v in verdicts:
        v.ledger = order
        v.upstream = row_of.get(v.record.path)
    flag_reused_runs(verdicts)
    check_val_shards(verdicts)
    check_baselines(verdicts)
    check_same_node(verdicts)
    require_valid_baselines(verdicts)
    waive_for_systems_changes(verdicts)
    rank(verdicts)
    return verdicts


def _all_logs(record: Record) -> list[Path]:
    """Every log of a record folder (its content, which the ledger dates), or its other files when it has none."""
    found = [*record.logs, *record.baseline_runs, *record.candidates, *record.supporting]
    if found or record.layout == "log" or not record.path.is_dir():
        return found
    return files_under(record.path)


def dated_before_runs(record: Record, logs: dict[Path, ParsedLog]) -> str | None:
    """Why a record folder's date cannot be its runs' (it precedes every run's nvidia-smi date by more than a day),
    or None: the evidence that settles records landed by one commit (a copy re-dated months early)."""
    if record.date is None:
        return None
    dates = sorted(d for p in [*record.logs, *record.candidates] if p in logs and (d := logs[p].run_date) is not None)
    if not dates:
        return None
    claimed = dt.date.fromisoformat(record.date)
    first = dt.date.fromisoformat(dates[0])
    if first - claimed > RUN_DATE_SLACK:
        return f"the folder is dated {record.date}, but nvidia-smi dates its first run {dates[0]}"
    return None


def _undated_row_date(record: Record, logs: dict[Path, ParsedLog], row: Resolved | None) -> str | None:
    """The maintainers' table's date of a record whose logs carry neither a time nor an nvidia-smi date (llm.c's
    logs): the only date there is of it (``Ledger.settle`` places it there)."""
    if row is None or row.row.date is None or record.layout != "public" or not record.candidates:
        return None
    for p in record.candidates:
        log = logs.get(p)
        if log is None or log.run_date is not None or log.train_time_ms is not None:
            return None
    return row.row.date


def _folder_time(record: Record) -> dt.datetime | None:
    """Without a ledger, a public record is judged by the rules of its folder's date (the end of that day)."""
    if record.layout != "public" or record.date is None:
        return None
    return dt.datetime.fromisoformat(record.date).replace(hour=23, minute=59, tzinfo=dt.UTC)


def upstream_rows(records: Sequence[Record]) -> list[Resolved]:
    """The maintainers' table beside the records' records folder, resolved to their files ([] without one)."""
    roots = {d.parent for r in records if (d := _track_folder(r)) is not None}
    out: list[Resolved] = []
    for root in sorted(roots):
        readme = upstream_mod.find_readme(root)
        if readme is not None:
            out.extend(upstream_mod.resolve(upstream_mod.read_tables(readme), root))
    return out


def _rows_by_record(records: Sequence[Record], rows: Sequence[Resolved]) -> dict[Path, Resolved]:
    """The table's row of each record folder (the row whose links lead into it; the first such row of its track)."""
    folders = {r.path.resolve(): r for r in records}
    out: dict[Path, Resolved] = {}
    for row in rows:
        if row.folder is None:
            continue
        record = folders.get(row.folder.resolve())
        if record is not None and record.track.name == row.row.track:
            out[record.path] = row  # of two rows into one folder, the later one (the earlier is shown by itself)
    return out


def assign_roles(
    records: Sequence[Record], logs: dict[Path, ParsedLog], order: Ledger, row_of: dict[Path, Resolved]
) -> dict[Path, Decision]:
    """The roles of each public record's logs (tools/judge/layout.py), decided in the ledger's order, so that a
    folder's baseline runs and copies are told by the records before it."""
    decisions: dict[Path, Decision] = {}
    earlier: dict[str, Earlier] = {}
    for r in sorted(records, key=lambda r: (r.track.name, order.key(r))):
        seen = earlier.setdefault(r.track.name, Earlier())
        if r.layout == "public":
            when = order.when(r) if order.from_history else _folder_time(r)
            book = rulebook_for(r.track.name, when, False)
            row = row_of.get(r.path)
            linked = {p.resolve() for p in row.files} if row is not None else set()
            decisions[r.path] = layout_mod.assign(
                r,
                logs,
                seen,
                {p for p in r.candidates if p.resolve() in linked},
                r.track.official_hardware,
                canonical_gpu_name,
                r.track.target_val_loss,
                book.p_value_required,
            )
        seen.add(r.name, [logs[p] for p in r.logs], [logs[p] for p in r.baseline_runs])
    return decisions


def waive_for_systems_changes(verdicts: Sequence[Verdict]) -> None:
    """The public rules waive the p-value, since 2025-05-25, for "submissions which improve speed by optimizing
    the systems performance, without touching the ML". A public record says so nowhere a machine can read, so the
    evidence decides: a record whose only failures are the p-value's (too few runs, p not below 0.01; the mean at or
    below the target) and whose val curve is the previous valid record's within run-to-run noise
    (``tools.judge.rules.curve_mismatch``) did not touch the ML: the waiver applies, and a note says why."""
    ordered = sorted(verdicts, key=lambda v: (v.record.track.name, v.order_key))
    for i, v in enumerate(ordered):
        if v.valid or v.is_smoke or not v.rulebook.systems_waiver or v.rulebook.harness:
            continue
        if not all(f.rule == "target" and f.incomplete for f in v.failures) or not v.runs:
            continue
        base = next(
            (
                w
                for w in reversed(ordered[:i])
                if w.record.track == v.record.track
                and w.hardware == v.hardware
                and (w.valid or w.accepted_upstream)
                and w.runs
            ),
            None,
        )
        if base is None or curve_mismatch(v.runs, base.runs) is not None:
            continue
        waived = v.failures
        v.failures = []
        v.notes.append(
            Failure(
                "target",
                waived[0].file,
                f"p-value waived (public rules since 2025-05-25): its val curve is {base.record.name}'s within "
                f"run-to-run noise, so it is a systems change; waived: {waived[0].evidence}",
            )
        )


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
    folders = {f for rec in wanted if rec.layout != "log" and (f := _track_folder(rec)) is not None}
    for folder in sorted(folders):  # each track folder once: a whole records folder names all its records
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


def verdict_words(v: Verdict) -> str:
    """A record's verdict in a few words, as the verify table and the history comparison say it."""
    decided = f" ({v.decided_by})" if v.decided_by else ""
    if v.accepted_upstream:
        missing = f"evidence incomplete: {', '.join(v.failed_rules)}" if v.failures else "faster not shown on one node"
        holds = "holds its class" if v.is_new_record else "not faster"
        return f"accepted upstream ({missing}); {holds}{decided}"
    if v.valid:
        if v.is_new_record:
            return "valid, NEW RECORD" + decided
        return "valid, not faster than " + (v.previous.record.name if v.previous else "the previous record") + decided
    if v.incomplete:
        return "evidence incomplete: " + ", ".join(v.failed_rules)
    return "INVALID: " + ", ".join(v.failed_rules)


def format_text(
    verdicts: Sequence[Verdict],
    stray: Sequence[tuple[Path, str]] = (),
    other: Sequence[tuple[Path, str]] = (),
) -> str:
    """The verdict table, then one FAIL line per failure; ``stray``: entries of a records folder that are
    not records (``tools.judge.records.scan``), which fail too; ``other``: folders of tracks this harness does not
    judge, listed."""
    lines: list[str] = []
    records = [v for v in verdicts if not v.is_smoke]
    if records:
        header = f"{'record':<48} {'track':<14} {'hardware':<26} {'runs':>4} {'mean loss':>9} {'p-value':>8} {'mean time':>10}  verdict"
        lines += [header, "-" * len(header)]
        for v in records:
            verdict = verdict_words(v)
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
    lines += [line for v in records for line in _notes(v)]
    lines += [f"NOTE not judged: {path}: {why}" for path, why in other]
    failing = [v for v in verdicts if v.failures]
    if failing or stray:
        lines.append("")
        for v in failing:
            for f in v.failures:
                what = "MISSING" if f.incomplete else "FAIL"
                lines.append(f"{what} {f.rule:<13} {f.file}: {f.evidence}")
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


def _notes(v: Verdict) -> list[str]:
    """What the table cannot say about one record: the same-node comparison and the rule that decided, and
    whether maintainers reproduced it (a reproduced.json that does not hold is a note, never a failure)."""
    out = []
    sn = v.same_node
    if sn is not None:
        t = sn.time
        ref, cand = t.reference, t.candidate
        out.append(
            f"same node: {v.record.name}: {cand.n} run(s), mean {_fmt(_s(cand.mean), '.3f', ' s')}, against "
            f"{ref.n} baseline run(s) of {_named_baseline(v)}, mean {_fmt(_s(ref.mean), '.3f', ' s')}: "
            f"{speed_words(sn.speedup_pct)}, one-sided Welch p = {_fmt(t.p_lower, '.2g')}"
        )
    if sn is not None and v.decided_by is not None and v.decision:  # the table names the rule; here, why
        out.append(f"decided by {v.decided_by}: {v.record.name}: {v.decision}")
    if v.is_reproduced:
        assert v.reproduced is not None
        out.append(
            f"reproduced: {v.record.name}: by the maintainers on {v.reproduced.date} ({reproduction_machine(v.reproduced)})"
        )
    elif v.reproduced_problem:
        out.append(f"NOTE {v.record.name}: not shown as reproduced: {v.reproduced_problem}")
    return out


def _named_baseline(v: Verdict) -> str:
    meta = v.record.meta
    if meta is not None and meta.baseline:
        return meta.baseline
    if v.layout is not None and v.record.baseline_runs:
        return v.layout.baseline_of or "the previous record (by their name: their code is no earlier record's)"
    return "no named baseline"


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def reproduction_machine(rep: Reproduced) -> str:
    """The machine of a reproduction in a few words: ``8× NVIDIA H100 80GB HBM3, docker``."""
    gpus = Counter(str(g) for g in rep.machine.get("gpus", []))
    parts = [f"{n}× {name}" for name, n in sorted(gpus.items())] or ["no GPU"]
    return ", ".join([*parts, f"sandbox {rep.machine.get('sandbox')}"])


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
    trees = [scan(root) for root in args.paths if is_records_folder(root)]
    stray = [entry for tree in trees for entry in tree.misplaced]
    other = [entry for tree in trees for entry in tree.other_tracks]
    if args.json:
        sys.stdout.write(format_json(verdicts))
        if any(not v.is_smoke for v in verdicts):
            sys.stderr.write(printable(verdicts[0].ledger.note) + "\n")
        sys.stderr.write("".join(printable(f"FAIL {'structure':<13} {p}: {why}") + "\n" for p, why in stray))
    else:
        sys.stdout.write(format_text(verdicts, stray, other))
    return 0 if all(v.valid for v in verdicts) and not stray else 1
