"""Which logs of a public record folder are its runs, which are baseline runs, and which are neither.

The public speedrun files a record as a folder of logs whose names were never chosen for a machine:
runs sit in the folder or in a subfolder (``runs/``, ``record/``, ``this_pr/``, ``combined/``, ``pr233/``),
beside runs of the previous record made on the same node (``baseline/``, ``prior/``, ``12-29-baseline/``,
or mixed into the same folder), ablations, experiments on one GPU, and runs that stopped early. So the
roles are decided from the logs themselves, in this order, each with its reason on the record page:

1. a file that is no log of a run (no metric lines, unreadable) is *not a run log*;
2. a run whose last val_loss line is not at its final step *stopped*: it is not a run of the record;
3. a file byte for byte equal to a run or baseline run of a record earlier in the ledger is a *copy*: a run
   counts for one record, the first to land with it;
4. a run on another hardware class than most of the folder's runs is an experiment on *other hardware*;
5. the rest are grouped by code (the sha256 of the code they ran). A group whose code is the code of a
   record earlier in the ledger is *baseline runs* of that record (the public rules since 2025-12-02 ask a
   record to be faster "when baselined on the same hardware"), and so is a group whose every file is named
   like a baseline (``baseline``, ``prior``, ``comparison``, ...), unless it is the folder's only group;
6. of the other groups, the record's runs are the group holding the log the maintainers' table links
   (tools/judge/upstream.py), else the only one, else the fastest group that meets the target under the rules
   of the record's date (the others are *variants*: ablations and earlier attempts), else the largest.

Of several baseline groups, the same-node comparison uses the one whose code is that of the most recent
earlier record (by the ledger), else the one with the most runs; the others are variants.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.judge import stats
from tools.judge.parse import ParsedLog
from tools.judge.records import (
    ROLE_BASELINE,
    ROLE_COPY,
    ROLE_NOT_A_RUN,
    ROLE_OTHER_HARDWARE,
    ROLE_RUN,
    ROLE_STOPPED,
    ROLE_VARIANT,
    Record,
    Role,
)
from tools.judge.tracks import HardwareClass

# What a submitter names runs of another code made to compare against; "extra" marks left-overs (variants).
BASELINE_NAME_RE = re.compile(r"baseline|comparison|before|prior|master|original|retime|reference", re.I)
EXTRA_NAME_RE = re.compile(r"extra|ablation|old", re.I)


@dataclass
class Earlier:
    """What the records before one in the ledger's order hold: their runs' code and files (one track)."""

    code_owner: dict[str, str] = field(default_factory=dict)  # code sha256 -> the latest record whose runs ran it
    code_order: dict[str, int] = field(default_factory=dict)  # code sha256 -> that record's index in the order
    file_owner: dict[str, str] = field(default_factory=dict)  # file sha256 -> the first record holding it as a run
    count: int = 0
    latest_code: str = ""  # the code of the latest record's runs: what an unnamed baseline should be nearest to

    def add(self, name: str, runs: Sequence[ParsedLog], baseline: Sequence[ParsedLog]) -> None:
        for log in runs:
            if log.code_sha256:
                self.code_owner[log.code_sha256] = name
                self.code_order[log.code_sha256] = self.count
        if runs and (code := code_text(runs[0])):
            self.latest_code = code
        for log in [*runs, *baseline]:
            if log.file_sha256:
                self.file_owner.setdefault(log.file_sha256, name)
        self.count += 1


@dataclass(frozen=True)
class Group:
    code: str  # the code sha256 ("" where the log carries no code)
    paths: tuple[Path, ...]


@dataclass
class Decision:
    """What the roles of a public record rest on, for the verdict and the record page."""

    hardware: HardwareClass | None = None  # the class most of its logs ran on
    baseline_of: str | None = None  # the earlier record whose code the baseline runs ran (None: named only)
    baseline_code: str | None = None
    run_code: str | None = None
    how: str = ""  # how the run group was chosen, in words


def hardware_of(log: ParsedLog, canonical: Callable[[str], str | None]) -> HardwareClass | None:
    names = [canonical(n) for n in log.gpu_names]
    if not names or any(n is None for n in names):
        return None
    models = sorted({n for n in names if n is not None})
    return HardwareClass(len(names), models[0] if len(models) == 1 else "mixed: " + ", ".join(models))


def _named_like(path: Path, folder: Path, pattern: re.Pattern[str]) -> bool:
    rel = path.relative_to(folder)
    return any(pattern.search(part) for part in [*rel.parts[:-1], rel.stem])


def _meets_target(logs: Sequence[ParsedLog], target: float | None, p_required: bool) -> bool:
    finals = [f for log in logs if (f := log.final_val_loss) is not None and math.isfinite(f)]
    if target is None or not finals:
        return False
    mean = stats.mean(finals)
    if mean is None or mean > target:
        return False
    if not p_required:
        return True
    p = stats.p_below_target(finals, target)
    return p is not None and not math.isnan(p) and p < 0.01


def _mean_time(logs: Sequence[ParsedLog]) -> float:
    times = [t for log in logs if (t := log.train_time_ms) is not None and math.isfinite(t)]
    return sum(times) / len(times) if times else math.inf


def assign(
    record: Record,
    logs: dict[Path, ParsedLog],
    earlier: Earlier,
    linked: set[Path],
    official: HardwareClass | None,
    canonical: Callable[[str], str | None],
    target: float | None,
    p_required: bool,
) -> Decision:
    """Give every candidate log of the public ``record`` its role (``record.roles``) and fill ``record.logs``
    (runs), ``record.baseline_runs`` and ``record.supporting`` (the rest); return what it rested on."""
    folder = record.path
    roles: dict[Path, Role] = {}
    remaining: list[Path] = []
    for path in record.candidates:
        log = logs[path]
        if path.is_symlink() or not len(log.metrics) or not log.val_curve:
            why = log.structure_issues[0] if log.structure_issues else "no val_loss line"
            roles[path] = Role(path, ROLE_NOT_A_RUN, f"not the log of a training run: {why}")
        elif log.total_steps is not None and log.final_step != log.total_steps:
            roles[path] = Role(
                path,
                ROLE_STOPPED,
                f"its last val_loss line is at step {log.final_step} of {log.total_steps}: the run stopped before its "
                "last step, so it is no run of the record",
            )
        elif (owner := earlier.file_owner.get(log.file_sha256)) is not None:
            roles[path] = Role(
                path, ROLE_COPY, f"byte for byte a log of {owner}, which landed before this record or with it"
            )
        else:
            remaining.append(path)
    decision = Decision()
    classes = Counter(hc for p in remaining if (hc := hardware_of(logs[p], canonical)) is not None)
    if classes:
        decision.hardware = max(classes, key=lambda hc: (classes[hc], hc == official, hc.label))
    runs_here: list[Path] = []
    for path in remaining:
        hc = hardware_of(logs[path], canonical)
        if decision.hardware is not None and hc is not None and hc != decision.hardware:
            roles[path] = Role(
                path,
                ROLE_OTHER_HARDWARE,
                f"ran on {hc.label}, not on {decision.hardware.label} as most of the folder's runs: an experiment",
            )
        else:
            runs_here.append(path)
    by_code: dict[str, list[Path]] = defaultdict(list)
    for path in runs_here:
        by_code[logs[path].code_sha256 or ""].append(path)
    groups = [Group(code, tuple(paths)) for code, paths in sorted(by_code.items(), key=lambda kv: str(kv[1][0]))]
    linked_groups = [g for g in groups if linked & set(g.paths)]
    baseline_groups: list[Group] = []
    candidates: list[Group] = []
    for g in groups:
        of_earlier = g.code and g.code in earlier.code_owner
        named = all(_named_like(p, folder, BASELINE_NAME_RE) for p in g.paths)
        if g not in linked_groups and len(groups) > 1 and (of_earlier or named):
            baseline_groups.append(g)
        else:
            candidates.append(g)
    chosen, decision.how = _choose(candidates, linked_groups, folder, logs, target, p_required)
    if chosen is not None:
        decision.run_code = chosen.code or None
        why = decision.how
        for p in chosen.paths:
            roles[p] = Role(p, ROLE_RUN, why)
    for g in candidates:
        if g is chosen:
            continue
        for p in g.paths:
            roles[p] = Role(
                p,
                ROLE_VARIANT,
                f"a run of other code ({_short(g.code)}) than the record's ({_short(decision.run_code)}): "
                "an ablation or an earlier attempt, shown, not judged",
            )
    base = _choose_baseline(baseline_groups, earlier, logs)
    if base is not None:
        decision.baseline_code = base.code or None
        decision.baseline_of = earlier.code_owner.get(base.code) if base.code else None
        why = (
            f"the code of {decision.baseline_of}, an earlier record: a baseline run of it"
            if decision.baseline_of
            else "named like a baseline, in a folder with the record's runs of other code: a baseline run "
            "(its code is no earlier record's, byte for byte)"
        )
        for p in base.paths:
            roles[p] = Role(p, ROLE_BASELINE, why)
    for g in baseline_groups:
        if g is base:
            continue
        owner = earlier.code_owner.get(g.code) if g.code else None
        for p in g.paths:
            roles[p] = Role(
                p,
                ROLE_VARIANT,
                (f"the code of {owner}, an earlier record" if owner else "named like a baseline")
                + f"; the same-node comparison uses the baseline runs of {_short(decision.baseline_code)} instead",
            )
    record.roles = [roles[p] for p in record.candidates]
    record.logs = [r.path for r in record.roles if r.kind == ROLE_RUN]
    record.baseline_runs = [r.path for r in record.roles if r.kind == ROLE_BASELINE]
    record.supporting = [r.path for r in record.roles if r.kind not in (ROLE_RUN, ROLE_BASELINE)]
    return decision


def _short(code: str | None) -> str:
    return f"code {code[:12]}…" if code else "no code"


def _choose(
    groups: Sequence[Group],
    linked: Sequence[Group],
    folder: Path,
    logs: dict[Path, ParsedLog],
    target: float | None,
    p_required: bool,
) -> tuple[Group | None, str]:
    if not groups:
        return None, ""
    if linked:
        g = max(linked, key=lambda g: len(g.paths))
        return g, "the maintainers' table links a log of this code: the record's runs"
    if len(groups) == 1:
        g = groups[0]
        if len(g.paths) == 1:
            return g, "the folder's only run"
        return g, "the folder's runs, all of one code"
    plain = [g for g in groups if not all(_named_like(p, folder, EXTRA_NAME_RE) for p in g.paths)] or list(groups)
    meeting = [g for g in plain if _meets_target([logs[p] for p in g.paths], target, p_required)]
    if meeting:
        g = min(meeting, key=lambda g: (_mean_time([logs[p] for p in g.paths]), -len(g.paths), g.code))
        return g, (
            f"of {len(groups)} groups of runs of different code, the fastest that meets the target under the rules "
            "of the record's date: the record's runs (the others are variants)"
        )
    g = max(plain, key=lambda g: (len(g.paths), -_mean_time([logs[p] for p in g.paths]), g.code))
    return g, (
        f"of {len(groups)} groups of runs of different code, none meets the target: the largest is taken as the "
        "record's runs"
    )


def _choose_baseline(groups: Sequence[Group], earlier: Earlier, logs: dict[Path, ParsedLog]) -> Group | None:
    if not groups:
        return None
    known = [g for g in groups if g.code and g.code in earlier.code_order]
    if known:
        return max(known, key=lambda g: (earlier.code_order[g.code], len(g.paths)))
    if len(groups) > 1 and earlier.latest_code:
        # Named like baselines, of no earlier record's code: the one whose code differs least from the latest record's
        # (a baseline is that record's code, give or take its logging; an earlier attempt of the PR named "prior" is not).
        latest = Counter(earlier.latest_code.splitlines())
        return min(
            groups,
            key=lambda g: (_lines_apart(latest, code_text(logs[g.paths[0]])), -len(g.paths), g.code),
        )
    return max(groups, key=lambda g: (len(g.paths), g.code))


def code_text(log: ParsedLog) -> str:
    """The code a log carries, its files one after the other."""
    return "\n".join(f.text for f in log.code_files if f.text)


def _lines_apart(a: Counter[str], text: str) -> int:
    """How many lines two codes do not share (as multisets of lines): a cheap measure of a diff's size."""
    b = Counter(text.splitlines())
    return sum(((a - b) + (b - a)).values())
