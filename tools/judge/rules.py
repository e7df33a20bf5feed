"""The rules of records/README.md, one function each, applied to the parsed runs of one record.

Each rule returns the list of its failures (empty: passed) or ``NOT_APPLICABLE``. A failure names the
rule, the file (a log, or the record's README/folder) and the evidence (the line or the number).
``faster`` needs the other records of the track, so it lives in tools/judge/verify.py; ``same-node`` (a record's
``baseline/`` runs: tools/judge/samenode.py) applies the rules of this module to the baseline runs and checks
them against the named baseline record there.

Choices this module makes where RULES.md leaves room (also in records/README.md):
- ``structure`` also checks dates: no run of a record with a README may be dated (nvidia-smi's
  timestamp) more than RUN_DATE_SLACK after it, no date may be after today (UTC, RUN_DATE_SLACK),
  and a record-track log of this harness must carry a valid timestamp. Dates no longer order
  records: the ledger does (tools/judge/ledger.py, tools/judge/verify.py).
- ``complete``: a record-track run is a whole run: val at step 0 and at the end, a train line at
  every step 1..total (every log of the public corpus has them), and in this harness's logs the
  total equals ``num_iterations`` and is the same in every run of the record.
- ``plausible`` (not in RULES.md): losses finite and non-negative, the final val loss not below the
  track's floor, train_time above zero and, where the config gives the tokens per step, above the
  hardware's physical floor (tools/judge/tracks.py). Statistics are computed on plausible numbers only.
- ``distinct-runs``: besides seeds (compared as numbers), run ids and files, runs whose printed
  losses match are one run (``near_duplicates``; thresholds measured on the public corpus).
- ``monotonic``: k (untimed warm-up steps) is a claim of the log, so it is bounded. This repository's
  logs on a record track must have k = 0, as train_gpt.py writes (``config.step_avg_excluded_steps``);
  elsewhere k is that key when the log has it, else inferred from the second half of the run as
  ``round(step - train_time / step_avg)``; either way 0 <= k < total (a larger k would leave no line
  to check). ``train_time`` must never decrease on any line, but for one drop from step <= k to
  step k+1 (the 2024 trainer restarted its clock there); ``step_avg`` is checked on the lines at
  ``step > k``, and must equal ``train_time / (step - k)`` within the printing precision:
  0.005 ms for step_avg plus 0.5 ms / (step - k) for the rounded train_time, plus 0.01% relative.
  ``step_avg:nan`` is accepted only for the first two timed steps, where the 2024 trainer printed it.
- ``target``: a record must have at least 3 runs (MIN_RUNS), systems_only or not. The p-value is
  NaN, a failure, when all final losses are equal (scipy's p = 0 there would pass one run written
  three times). ``systems_only: true`` waives the p-value but not the mean, and only with a
  ``baseline`` that is a valid record of the same track, earlier in the ledger, whose val curve this
  record's runs reproduce within CURVE_TOLERANCE (tools/judge/records.py checks the name, tools/judge/verify.py
  the order, the curve and the baseline's verdict). Community submissions have no README, so no
  claim of systems_only: the p-value applies to them as written.
- ``loss-drop`` (smoke only, in place of ``target``): each run's last val loss must be at least
  LOSS_DROP_FRACTION (5%) below its first one (the step-0 evaluation) and finite. A smoke run is
  short (tens of steps on CPU); 5% is far outside evaluation noise yet reachable by any trainer that
  learns at all, and it catches the failures a smoke run exists for: NaN, divergence, no learning.
- ``data``: always: no train shard has a val shard's sha256, token counts are FineWeb's (at most
  100M per shard, the val shard holds the validated tokens, the train shards the tokens read), one
  val shard per record (and per track: tools/judge/verify.py). Where tools/judge/known_shards.json is filled,
  a record track's shards are matched by sha256, not by name (a name is the run's own word): every
  sha256 must be in the table, the val shard's the val shard's.
- ``config``: the runs of a record must agree on every config key but their identity (seed, run_id),
  where the shards sit (data_path) and when they saved checkpoints (checkpoint_every, checkpoint_keep, checkpoint_dir),
  which changes no number. A resumed run (``resumed_from`` set) is never a record: a record trains
  from step 0 in one go, and its train_time would otherwise include time measured by another run.
- Community logs (no ``config:``/``data:`` lines, no README): ``config`` and ``data`` are not
  applicable, ``distinct-runs`` compares curves and files but not seeds, ``compile-flags`` reads the
  code where the log still has it and is not applicable where the anchor copy omitted it.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeGuard

import numpy as np

from tools.judge import stats
from tools.judge.parse import ParsedLog
from tools.judge.records import README, Record
from tools.judge.rulebook import Rulebook, rulebook_for
from tools.judge.sourcecheck import FLAG, find_compile_flags
from tools.judge.tracks import (
    FINEWEB_SHARD_TOKENS,
    RECORD_VAL_TOKENS,
    HardwareClass,
    canonical_gpu_name,
    first_non_ascii,
)

RULE_IDS: Final = (
    "structure",
    "complete",
    "monotonic",
    "plausible",
    "same-code",
    "distinct-runs",
    "hardware",
    "config",
    "data",
    "target",
    "loss-drop",
    "compile-flags",
    "same-node",
    "faster",
)
MIN_RUNS = 3
# A public record's p-value needs two runs at least (a t-test of one sample has no variance); this harness asks 3.
MIN_RUNS_PUBLIC = 2
MAX_README_SCAN = 64 * 1024
P_VALUE_THRESHOLD = 0.01
LOSS_DROP_FRACTION = 0.05
# Keys docs/log-format.md requires in the config line of this repository's logs.
REQUIRED_CONFIG_KEYS = (
    "preset",
    "track",
    "world_size",
    "grad_accum_steps",
    "global_batch_tokens",
    "seed",
    "run_id",
    "val_tokens",
    "target_val_loss",
    "overrides",
)
# Config keys the runs of one record may disagree on (see `config` above): the seed and run id, and the trainer's
# run settings, which its config line holds under "run"; logs written before that object had them at the top.
RUN_IDENTITY_KEYS = ("seed", "run_id", "run", "data_path", "checkpoint_every", "checkpoint_keep", "checkpoint_dir")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
K_CONFIG_KEY = "step_avg_excluded_steps"
# A val shard of the published FineWeb data by name (fineweb_val_000000.bin, data/README.md).
_VAL_SHARD_RE = re.compile(r"(?:^|_)val_")
# nvidia-smi prints the node's local time; a README date is the submitter's: up to a day apart. The same
# day of slack lets a date be "tomorrow" in UTC (a submitter east of Greenwich), never later.
RUN_DATE_SLACK = dt.timedelta(days=1)
# Near-duplicate runs (`distinct-runs`): losses are compared as printed, to 4 decimals, step by step.
# Two honest runs with different seeds differ from the first few steps on: across the 766 distinct logs
# of the public corpus, no two share their first 20 train losses, no two share more than 1.7% of their
# train losses, and no two share more than 4 of 14 val losses after step 0. A copy with every loss moved
# (all by 0.0001, or all scaled by 1.001) shares none: what it keeps is the difference of the two curves,
# nearly the same from one step to the next. Across the 760 pairs of runs of one submission in the corpus
# (compared at the train steps both print), the median step-to-step change of that difference is never
# below 0.0036; a shifted or scaled copy's is 0 to 0.0001.
DUP_PREFIX_STEPS = 20
# torch.manual_seed takes -2**63 <= seed < 2**64 and seeds its generators with seed modulo 2**64.
TORCH_SEED_SPACE: Final = 2**64
DUP_MAX_DRIFT = 10  # in 1e-4: one run when the difference of two train curves moves less than this, median
DUP_SHARED_FRACTION = 0.5
DUP_MIN_SHARED_VAL = 3
# `target` for systems_only: the largest difference of mean val loss, at one step, between the records'
# runs that run-to-run noise explains, by the fraction of training done at that step (the step / total).
# Measured on the public corpus: for the 47 sets of >= 6 runs of one code with one validation schedule,
# 300 random splits each into two disjoint sets of 3 runs; the largest difference of the two sets' mean
# curves was 0.075 up to half of training, 0.015 to three quarters, 0.011 after that and 0.0105 at the
# final step. The tolerance is 1.5x those, for 3 runs against 3; with n and m runs it shrinks by
# sqrt((1/n + 1/m) / (2/3)) (the standard error of a difference of two means), never grows.
CURVE_TOLERANCE: Final = ((0.5, 0.11), (0.75, 0.025), (0.9999, 0.018), (1.0, 0.016))
_NO_LOSS: Final = np.iinfo(np.int64).min


class _NotApplicable:
    def __repr__(self) -> str:
        return "NOT_APPLICABLE"


NOT_APPLICABLE: Final = _NotApplicable()


@dataclass(frozen=True)
class Failure:
    rule: str
    file: str
    evidence: str
    # `compile-flags`: "flag" (sets a compiler option: what the public rules forbid) or "unreadable" (code this
    # harness cannot read with certainty); "" for the other rules.
    kind: str = ""
    # True when the failure says evidence is missing (too few runs for the p-value, no nvidia-smi, no time), not
    # that the evidence contradicts the rules: a public record the maintainers accepted is then shown as
    # "accepted upstream; evidence incomplete" (tools/judge/verify.py), never as valid.
    incomplete: bool = False

    def to_json(self) -> dict[str, str | bool]:
        out: dict[str, str | bool] = {"rule": self.rule, "file": self.file, "evidence": self.evidence}
        if self.kind:
            out["kind"] = self.kind
        if self.incomplete:
            out["incomplete"] = True
        return out


@dataclass
class Run:
    path: Path
    log: ParsedLog

    @property
    def file(self) -> str:
        return str(self.path)


@dataclass
class Context:
    """What the rules see: the record, its parsed runs, and the table of known shard hashes."""

    record: Record
    runs: list[Run]
    known_shards: dict[str, str] = field(default_factory=dict)
    today: dt.date = field(default_factory=lambda: dt.datetime.now(dt.UTC).date())  # for dates in the future
    rulebook: Rulebook | None = None  # the rules of the record's date (tools/judge/rulebook.py); None: today's

    @property
    def rules(self) -> Rulebook:
        if self.rulebook is not None:
            return self.rulebook
        return rulebook_for(self.record.track.name, None, self.harness_format)

    @property
    def is_public(self) -> bool:
        """A record in the public speedrun's layout and log format: judged by the public rules of its date."""
        return not self.harness_format and self.record.layout != "log"

    @property
    def is_smoke(self) -> bool:
        return not self.record.track.is_record_track

    @property
    def harness_format(self) -> bool:
        """This repository's logs (a README, or config lines): config/data/seeds are required."""
        return self.record.layout == "harness" or any(r.log.uses_harness_format for r in self.runs)

    @property
    def record_file(self) -> str:
        """Where record-level failures point: the README of a record folder, else the record path."""
        return str(self.record.path / README) if self.record.layout == "harness" else str(self.record.path)

    def finals(self) -> list[float]:
        return [f for r in self.runs if (f := r.log.final_val_loss) is not None]

    @property
    def record_logs_of_this_harness(self) -> bool:
        """Record-track logs in this repository's format: the rules that need config lines apply."""
        return self.harness_format and not self.is_smoke


RuleResult = list[Failure] | _NotApplicable
Rule = Callable[[Context], RuleResult]


# --- structure ------------------------------------------------------------------------------


def rule_structure(ctx: Context) -> RuleResult:
    out: list[Failure] = []
    for err in ctx.record.meta_errors:
        out.append(Failure("structure", ctx.record_file, err))
    if ctx.record.layout == "harness" and ctx.record.meta is None and not ctx.record.meta_errors:
        out.append(Failure("structure", ctx.record_file, f"{README} front matter is missing"))
    if ctx.record.layout == "public" and ctx.harness_format:
        out.append(
            Failure(
                "structure",
                str(ctx.record.path / README),
                f"the logs are in this harness's format (config: lines) but the folder has no {README} with front "
                "matter: a record of this harness says what it claims there (records/README.md)",
            )
        )
    if not ctx.runs:
        out.append(_no_runs(ctx))
    out.extend(_backdated_runs(ctx))
    out.extend(_dates_in_the_future(ctx))
    for run in ctx.runs:
        log = run.log
        if ctx.is_public and log.metrics_form == "llm.c":
            # llm.c's own log (main.log: "s:N trl:X" / "s:N tel:X"), the public speedrun's first baselines: a known
            # form that carries no code, no hardware and no time, so it proves a loss and nothing else.
            out.append(
                Failure(
                    "structure",
                    run.file,
                    "an llm.c log (s:N tel:X lines): it carries no code, no nvidia-smi and no train_time, so the "
                    "run's time and hardware rest on the maintainers' word",
                    incomplete=True,
                )
            )
            continue
        for issue in log.structure_issues:
            out.append(Failure("structure", run.file, issue))
        if log.structure_issues:
            continue
        if log.malformed_count:
            out.append(
                Failure(
                    "structure",
                    run.file,
                    f"{log.malformed_count} line(s) start like a metric line but do not match the format, "
                    f"first: {log.malformed_lines[0]!r}",
                )
            )
        if not log.source_omitted and not any(f.text.strip() for f in log.code_files):
            out.append(
                Failure("structure", run.file, "the source section is empty: the log must start with the code that ran")
            )
        elif ctx.harness_format and log.source_omitted:
            out.append(
                Failure(
                    "structure", run.file, "the source was replaced by an 'omitted' line: a record log carries its code"
                )
            )
        if not log.val_curve:
            out.append(Failure("structure", run.file, "no val_loss line"))
    return out


def _no_runs(ctx: Context) -> Failure:
    record = ctx.record
    if record.layout != "public":
        return Failure("structure", str(record.path), "no run logs (*.txt) in the record folder")
    if not record.candidates:
        return Failure(
            "structure",
            str(record.path),
            "the folder holds no log (*.txt, *.log): there is no evidence of a run to judge",
            incomplete=True,
        )
    kinds = Counter(r.kind for r in record.roles)
    what = ", ".join(f"{n} {kind}{'s' if n > 1 else ''}" for kind, n in sorted(kinds.items()))
    copies = [r for r in record.roles if r.kind == "copy"]
    if copies and len(copies) == len(record.roles):
        return Failure("distinct-runs", str(record.path), f"every log is a copy: {copies[0].why}")
    return Failure("structure", str(record.path), f"no log of the folder is a whole run of the record ({what})")


def _backdated_runs(ctx: Context) -> list[Failure]:
    """A record's date orders it against the others (``faster``), so it may not precede its runs.

    Only for records with a README: its date is the submitter's claim. The community folders were
    named for the day the idea was merged, and their logs were often rerun days later: there the
    folder date is history, not a claim to check (9 anchor records have runs dated after it).
    """
    if ctx.record.layout != "harness" or ctx.record.meta is None:
        return []
    claimed = dt.date.fromisoformat(ctx.record.meta.date)
    out = []
    for run in ctx.runs:
        made = run.log.run_date
        if made is not None and dt.date.fromisoformat(made) - claimed > RUN_DATE_SLACK:
            out.append(
                Failure(
                    "structure",
                    run.file,
                    f"nvidia-smi dates this run {made}, after the record's date {ctx.record.meta.date} "
                    f"(allowing {RUN_DATE_SLACK.days} day for time zones): a record is dated no earlier than the day "
                    "its runs were made; rename the folder and the README date",
                )
            )
    return out


def _dates_in_the_future(ctx: Context) -> list[Failure]:
    """No date is after today (UTC, one day of slack), and a record log of this harness is dated.

    The date of a run is the timestamp nvidia-smi prints first; a record log without one (deleted,
    or edited into a day the calendar lacks) cannot show when its run was made.
    """
    latest = ctx.today + RUN_DATE_SLACK
    out = []
    meta = ctx.record.meta
    if ctx.record.layout == "harness" and meta is not None and dt.date.fromisoformat(meta.date) > latest:
        out.append(
            Failure(
                "structure",
                ctx.record_file,
                f"the record is dated {meta.date}, after today ({ctx.today.isoformat()}, UTC): date it the day "
                "its last run was made",
            )
        )
    if not ctx.record_logs_of_this_harness:
        return out
    for run in ctx.runs:
        made = run.log.run_date
        if run.log.structure_issues:
            continue
        if made is None:
            out.append(
                Failure(
                    "structure",
                    run.file,
                    "no nvidia-smi timestamp, or one that is not a date of the calendar (the first line of its "
                    "output, e.g. 'Sat Jan 10 23:36:12 2026'): a record log shows when its run was made",
                )
            )
        elif dt.date.fromisoformat(made) > latest:
            out.append(
                Failure(
                    "structure",
                    run.file,
                    f"nvidia-smi dates this run {made}, after today ({ctx.today.isoformat()}, UTC)",
                )
            )
    return out


# --- complete -------------------------------------------------------------------------------


def rule_complete(ctx: Context) -> RuleResult:
    out: list[Failure] = []
    for run in ctx.runs:
        log = run.log
        final = log.final
        if final is None:
            out.append(Failure("complete", run.file, "no val_loss line: the run never reported a result"))
        elif log.total_steps is None:
            if ctx.is_public and log.metrics_form == "llm.c":
                continue  # llm.c lines state no total: `structure` says what such a log proves
            out.append(
                Failure(
                    "complete", run.file, f"the log never states the total step count (last val at step {final.step})"
                )
            )
        elif final.step != log.total_steps:
            out.append(
                Failure(
                    "complete",
                    run.file,
                    f"the last val_loss line is at step {final.step}, not at the final step {log.total_steps}: the run stopped early",
                )
            )
        else:
            last_step = int(log.metrics.step.max())
            if last_step > log.total_steps:
                out.append(
                    Failure("complete", run.file, f"a line reports step {last_step}, past the total {log.total_steps}")
                )
            elif not ctx.is_smoke:
                out.extend(Failure("complete", run.file, p) for p in _whole_run_problems(log, ctx))
    if ctx.record_logs_of_this_harness:
        out.extend(_same_total(ctx))
    return out


def _whole_run_problems(log: ParsedLog, ctx: Context) -> list[str]:
    """A record's run is the whole run: validated at step 0, a train line at every step 1..total, and (in
    this harness's logs) as many steps as its config's ``num_iterations``.

    A log that starts mid-run (a run continued from a checkpoint, ``resumed_from`` deleted) or that
    skips steps shows a train_time that is not the time of the whole run. Every log of the public
    corpus has these lines, so they are required of every record-track log.
    """
    if log.metrics_form != "speedrun" or log.total_steps is None:
        return []
    problems = []
    first = log.val_curve[0].step
    if first != 0:
        problems.append(
            f"the first val_loss line is at step {first}, not at step 0: a record's log starts at the start of its "
            "run (a run continued from a checkpoint is never a record)"
        )
    m = log.metrics
    steps = m.step[~m.is_val]
    total = log.total_steps
    n = min(len(steps), total)
    # steps[i] must be i + 1; `monotonic` reports repeats and disorder, here only what is missing.
    gap = np.flatnonzero(steps[:n] != np.arange(1, n + 1))
    if gap.size or len(steps) != total:
        missing = int(gap[0]) + 1 if gap.size else n + 1
        problems.append(
            f"{len(steps)} train line(s) for {total} steps, first missing: step {missing}: train_gpt.py writes a "
            "train line at every step"
        )
    if ctx.record_logs_of_this_harness:
        iters = (log.config or {}).get("num_iterations")
        if not _is_int(iters):
            problems.append(f"config num_iterations is {str(iters)[:40]}: the log must say how many steps it trains")
        elif iters != total:
            problems.append(f"the metric lines count {total} steps, the config's num_iterations is {iters}")
    return problems


def _same_total(ctx: Context) -> list[Failure]:
    """Every run of one record trains the same number of steps (one recipe: `config` compares the rest)."""
    totals = {run.file: run.log.total_steps for run in ctx.runs if run.log.total_steps is not None}
    if len(set(totals.values())) <= 1:
        return []
    common, count = Counter(totals.values()).most_common(1)[0]
    return [
        Failure("complete", f, f"{t} steps, but {count} run(s) of the record train {common}: one record, one recipe")
        for f, t in totals.items()
        if t != common
    ]


# --- monotonic ------------------------------------------------------------------------------


def infer_k(log: ParsedLog) -> int | None:
    """Untimed warm-up steps k with ``step_avg = train_time / (step - k)``; None if no line tells.

    The config's ``step_avg_excluded_steps`` when it is a step count below the total, else inferred
    from the metric lines. ``rule_monotonic`` decides which k a run is judged with (``_judged_k``).
    """
    k_cfg = (log.config or {}).get(K_CONFIG_KEY)
    if isinstance(k_cfg, int) and not isinstance(k_cfg, bool) and 0 <= k_cfg < _total_of(log):
        return k_cfg
    return _k_from_lines(log)


def _total_of(log: ParsedLog) -> int:
    m = log.metrics
    return log.total_steps if log.total_steps is not None else (int(m.step.max()) if len(m) else 0)


def _k_from_lines(log: ParsedLog) -> int | None:
    m = log.metrics
    if not len(m):
        return None
    # The second half of the run: there step - k is large, so the rounding of the printed numbers
    # moves the estimate of k by far less than one step.
    ok = m.has_step_avg & np.isfinite(m.step_avg_ms) & (m.step_avg_ms > 0) & np.isfinite(m.train_time_ms)
    ok &= m.step >= m.step.max() / 2
    if not ok.any():
        return None
    k_est = m.step[ok] - m.train_time_ms[ok] / m.step_avg_ms[ok]
    return max(0, int(round(float(np.median(k_est)))))


def _judged_k(log: ParsedLog, trainer_k_only: bool) -> tuple[int | None, str | None]:
    """(k, problem): the k a run's ``step_avg`` is checked with, or why no k can be trusted.

    k is a claim of the log, so it is bounded: with ``k >= total`` no timed line would be left to
    check. ``trainer_k_only`` (this repository's logs on a record track): train_gpt.py times every
    step and writes k = 0, so any other k is an edit that would exempt lines from the check.
    """
    total = _total_of(log)
    cfg = log.config or {}
    if K_CONFIG_KEY in cfg:
        k_cfg = cfg[K_CONFIG_KEY]
        if trainer_k_only and not (_is_int(k_cfg) and k_cfg == 0):
            return None, (
                f"config {K_CONFIG_KEY} is {str(k_cfg)[:40]}: train_gpt.py times every step and writes 0; "
                "a record log is the file the trainer wrote"
            )
        if not (_is_int(k_cfg) and 0 <= k_cfg < total):
            return None, (
                f"config {K_CONFIG_KEY} is {str(k_cfg)[:40]}, not a step count in [0, {total}): "
                "it would leave no timed line to check"
            )
        return int(k_cfg), None
    if trainer_k_only:
        return 0, None
    k = _k_from_lines(log)
    if k is None:
        return None, "no usable step_avg value: cannot check train_time against step_avg"
    if k >= total:
        return (
            None,
            f"step_avg implies {k} untimed steps, not fewer than the {total} of the run: no timed line to check",
        )
    return k, None


def rule_monotonic(ctx: Context) -> RuleResult:
    out: list[Failure] = []
    trainer_k_only = ctx.harness_format and not ctx.is_smoke
    limit = ctx.rules.max_untimed_steps
    for run in ctx.runs:
        failure = _monotonic_one(run, trainer_k_only)
        if failure:
            out.append(Failure("monotonic", run.file, failure))
        elif ctx.is_public and not ctx.is_smoke and (k := infer_k(run.log)) is not None and k > limit:
            out.append(
                Failure(
                    "monotonic",
                    run.file,
                    f"step_avg shows {k} untimed training steps; the timing rules of the record's date allow {limit} "
                    f"({'every step timed since 2025-02-02' if limit == 0 else 'the first 10 steps untimed before 2025-02-02'})",
                )
            )
    return out


def _monotonic_one(run: Run, trainer_k_only: bool) -> str | None:
    m = run.log.metrics
    if not len(m):
        return None  # nothing to order; `structure` already reports the missing metric lines
    totals = m.total[m.total >= 0]
    if totals.size and (bad := np.flatnonzero(totals != totals[0])).size:
        return f"the total step count changes from {totals[0]} to {totals[bad[0]]}"
    for label, mask in (("training", ~m.is_val), ("val_loss", m.is_val)):
        idx = np.flatnonzero(mask)
        steps = m.step[idx]
        if (back := np.flatnonzero(np.diff(steps) <= 0)).size:
            row = idx[back[0] + 1]
            return f"{label} step numbers do not increase: step {steps[back[0]]} is followed by {m.describe(row)!r}"
    if (back := np.flatnonzero(np.diff(m.step) < 0)).size:
        return f"step numbers go back: step {m.step[back[0]]} is followed by {m.describe(back[0] + 1)!r}"
    if run.log.metrics_form != "speedrun":
        return None  # llm.c lines carry no time to check
    k, problem = _judged_k(run.log, trainer_k_only)
    if k is None:
        return problem
    # train_time never decreases, over every line. The one exception: the 2024 trainer restarted its
    # clock after the k untimed warm-up steps, so it may drop once, from step <= k to step > k.
    back = np.flatnonzero(np.diff(m.train_time_ms) < 0)
    back = back[~((k > 0) & (m.step[back] <= k) & (m.step[back + 1] > k))]
    if back.size:
        row = int(back[0]) + 1
        return (
            f"train_time decreases (k={k}): {m.train_time_ms[row - 1]:.0f}ms at step {m.step[row - 1]} "
            f"then {m.describe(row)!r}"
        )
    timed = np.flatnonzero(m.step > k)
    missing = timed[~m.has_step_avg[timed]]
    if missing.size:
        return f"{missing.size} timed line(s) have no step_avg, first: {m.describe(missing[0])!r}"
    denom = np.maximum(m.step[timed] - k, 1).astype(np.float64)
    expected = m.train_time_ms[timed] / denom
    got = m.step_avg_ms[timed]
    nan_bad = np.isnan(got) & (m.step[timed] - k > 2)
    if nan_bad.any():
        return f"step_avg is nan on a timed step: {m.describe(timed[np.flatnonzero(nan_bad)[0]])!r}"
    tol = 0.005 + 0.5 / denom + 1e-4 * np.abs(expected)
    with np.errstate(invalid="ignore"):
        off = np.abs(got - expected) > tol
    if off.any():
        i = int(np.flatnonzero(off)[0])
        return (
            f"step_avg disagrees with train_time / (step - {k}): {m.describe(timed[i])!r} "
            f"implies {expected[i]:.2f}ms ({int(off.sum())} line(s) disagree)"
        )
    return None


# --- plausible ------------------------------------------------------------------------------


def rule_plausible(ctx: Context) -> RuleResult:
    """Numbers no run can print: the bounds of tools/judge/tracks.py, checked before any statistic uses them."""
    if ctx.is_smoke:
        return NOT_APPLICABLE  # a smoke run's health is `loss-drop`
    out: list[Failure] = []
    for run in ctx.runs:
        out.extend(Failure("plausible", run.file, p) for p in _implausible(run.log, ctx))
    return out


def _implausible(log: ParsedLog, ctx: Context) -> list[str]:
    m = log.metrics
    if not len(m):
        return []
    track = ctx.record.track
    problems = []
    val = m.loss[m.is_val]
    train = m.loss[~m.is_val]
    # A val line always carries its loss; a train line of the public corpus may have none (NaN here),
    # but train_gpt.py writes one on every line, so in its logs a missing or NaN loss is a problem too.
    bad_val = ~np.isfinite(val) | (val < 0)
    with np.errstate(invalid="ignore"):
        bad_train = np.isinf(train) | (train < 0)
    if log.uses_harness_format:
        bad_train |= np.isnan(train)
    for label, bad, rows in (("val_loss", bad_val, m.is_val), ("train_loss", bad_train, ~m.is_val)):
        if bad.any():
            row = int(np.flatnonzero(rows)[np.flatnonzero(bad)[0]])
            problems.append(
                f"{int(bad.sum())} {label} value(s) are not finite non-negative numbers, first at step {m.step[row]} "
                f"({m.loss[row]}): a run whose loss went NaN or negative never finished"
            )
    final = log.final_val_loss
    if track.min_val_loss is not None and final is not None and math.isfinite(final) and final < track.min_val_loss:
        problems.append(
            f"final val loss {final} is below {track.min_val_loss}, which no model of the {track.name} class "
            "reaches (tools/judge/tracks.py)"
        )
    elif track.min_val_loss is not None:
        # Before the final step too: the curve is what a systems_only record is judged by.
        with np.errstate(invalid="ignore"):
            low = np.flatnonzero(val < track.min_val_loss)
        if len(low):
            row = int(np.flatnonzero(m.is_val)[low[0]])
            problems.append(
                f"{len(low)} val loss(es) below {track.min_val_loss}, first {m.loss[row]} at step {m.step[row]}, "
                f"which no model of the {track.name} class reaches (tools/judge/tracks.py)"
            )
    t = log.train_time_ms
    if t is None:
        return problems  # llm.c lines carry no time
    if not math.isfinite(t) or t <= 0:
        problems.append(f"train_time at the final step is {t:.0f} ms: a run takes time")
        return problems
    floor = _min_train_time_ms(log, track.min_flops_per_token)
    if floor is not None and t < floor[0]:
        problems.append(
            f"train_time {t:.0f} ms for {log.total_steps} steps is less than the {floor[0]:.0f} ms the hardware "
            f"needs at its peak ({floor[1]}; tools/judge/tracks.py)"
        )
    return problems


def _min_train_time_ms(log: ParsedLog, flops_per_token: float | None) -> tuple[float, str] | None:
    """(the least train_time the run's steps can take, how it was computed); None without the numbers.

    Needs the config's tokens per step (``global_batch_tokens``): this harness's logs only.
    """
    cfg = log.config or {}
    gbt, total = cfg.get("global_batch_tokens"), log.total_steps
    # A batch beyond 2**53 tokens is no batch (and no float): `config` is where such a line fails.
    if flops_per_token is None or not _is_int(gbt) or not 1 <= gbt <= 2**53 or total is None or total < 1:
        return None
    hc = run_hardware(log)
    if hc is None:
        ws = cfg.get("world_size")
        hc = HardwareClass(ws if _is_int(ws) and ws >= 1 else 1, "unknown GPU")
    step_ms = hc.min_step_ms(gbt, flops_per_token)
    how = f"{gbt:,} tokens per step x {flops_per_token:.3g} FLOPs per token on {hc.label}: {step_ms:.2f} ms per step"
    return step_ms * total, how


# --- same-code ------------------------------------------------------------------------------


def rule_same_code(ctx: Context) -> RuleResult:
    if ctx.is_smoke:
        return NOT_APPLICABLE  # a smoke check is about one run's health
    hashes = {run.file: run.log.code_sha256 for run in ctx.runs if run.log.code_sha256}
    if len(set(hashes.values())) <= 1:
        return []
    majority, count = Counter(hashes.values()).most_common(1)[0]
    return [
        Failure(
            "same-code",
            f,
            f"source sha256 {h[:16]}… differs from {majority[:16]}… shared by {count} of {len(hashes)} runs",
        )
        for f, h in hashes.items()
        if h != majority
    ]


# --- distinct-runs --------------------------------------------------------------------------


def rule_distinct_runs(ctx: Context) -> RuleResult:
    """Within one record; tools.judge.verify.flag_reused_runs extends the rule across the records judged together."""
    if ctx.is_smoke:
        return NOT_APPLICABLE
    out: list[Failure] = []
    seen_file: dict[str, str] = {}
    seen_seed: dict[object, str] = {}
    seen_id: dict[object, str] = {}
    unique: list[Run] = []
    for run in ctx.runs:
        log = run.log
        if (other := seen_file.get(log.file_sha256)) is not None:
            out.append(Failure("distinct-runs", run.file, f"byte-for-byte the same file as {other}"))
            continue
        seen_file[log.file_sha256] = run.file
        unique.append(run)
        cfg = log.config or {}
        if ctx.harness_format:
            for key, seen in (("seed", seen_seed), ("run_id", seen_id)):
                value = cfg.get(key)
                if value is None:
                    continue  # `config` reports missing keys
                value_key = normal_seed(value) if key == "seed" else repr(value)
                if (other := seen.get(value_key)) is not None:
                    out.append(Failure("distinct-runs", run.file, f"{key} {value!r} is also the {key} of {other}"))
                seen.setdefault(value_key, run.file)
    prints = [curve_print(r.log) for r in unique]
    for (i, j), why in sorted(near_duplicates(prints).items()):
        out.append(
            Failure("distinct-runs", unique[j].file, f"the same run as {unique[i].file}: {why} (one run counted twice)")
        )
    return out


def normal_seed(value: object) -> object:
    """The seed a config value names: ``1``, ``1.0`` and ``"1"`` are one seed (``config`` refuses the last
    two in a log of this harness, which writes an int); so are ``-1`` and ``2**64 - 1``, as torch.manual_seed
    reads a seed modulo 2**64."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return value % TORCH_SEED_SPACE
    if isinstance(value, float) and value.is_integer():
        return int(value) % TORCH_SEED_SPACE
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]{1,30}\s*", value):
        return int(value) % TORCH_SEED_SPACE
    return ("other", repr(value))


@dataclass(frozen=True)
class CurvePrint:
    """A run's losses as printed, to 4 decimals, by step: what near-duplicate detection compares."""

    train_steps: np.ndarray  # int64, the steps of the train lines
    train: np.ndarray  # int64, round(loss * 10^4); _NO_LOSS where the line has no finite loss
    val_steps: np.ndarray  # the steps of the val lines after step 0 (every run of a model validates
    val: np.ndarray  #       the same initial loss at step 0)


def curve_print(log: ParsedLog) -> CurvePrint:
    m = log.metrics

    def column(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loss = m.loss[mask]
        ok = np.isfinite(loss) & (np.abs(loss) < 1e9)
        q = np.full(loss.shape, _NO_LOSS, dtype=np.int64)
        q[ok] = np.rint(loss[ok] * 1e4).astype(np.int64)
        return m.step[mask], q

    train_steps, train = column(~m.is_val)
    val_steps, val = column(m.is_val & (m.step > 0))
    return CurvePrint(train_steps, train, val_steps, val)


def near_duplicates(prints: Sequence[CurvePrint], owners: Sequence[int] | None = None) -> dict[tuple[int, int], str]:
    """``{(i, j): why}`` for the pairs i < j of runs that are one run, by the losses they print.

    Two runs are one run when, at the steps both print (runs are compared when they print train lines,
    or val lines, at the same steps):
    - their first DUP_PREFIX_STEPS train lines carry a loss in both, and the same, or
    - at least DUP_SHARED_FRACTION of their train losses are equal (one digit nudged here and there), or
    - over at least DUP_PREFIX_STEPS train steps, the difference of their train losses moves from one step
      to the next by a median of at most DUP_MAX_DRIFT (a copy with every loss shifted or scaled), or
    - at least DUP_MIN_SHARED_VAL and more than half of their val losses after step 0 are equal.
    Different seeds start from different weights, so their losses part from the first steps on; a
    rerun with the same seed and only the times changed, or a copy with a digit edited, matches.
    With ``owners`` (the record of each run), only pairs of different owners are compared.
    """
    found: dict[tuple[int, int], str] = {}
    for kind in ("train", "val"):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        for i, p in enumerate(prints):
            steps = p.train_steps if kind == "train" else p.val_steps
            if len(steps) >= (DUP_PREFIX_STEPS if kind == "train" else DUP_MIN_SHARED_VAL):
                buckets[steps.tobytes()].append(i)
        for idx in buckets.values():
            if len(idx) < 2:
                continue
            losses = np.stack([prints[i].train if kind == "train" else prints[i].val for i in idx])
            printed = losses != _NO_LOSS
            for a in range(len(idx) - 1):
                both = printed[a] & printed[a + 1 :]
                same = both & (losses[a] == losses[a + 1 :])
                n_both, n_same = both.sum(axis=1), same.sum(axis=1)
                if kind == "train":
                    # The runs of a bucket print train lines at the same steps: the first columns are the
                    # first steps of both.
                    prefix = same[:, :DUP_PREFIX_STEPS].all(axis=1)
                    shared = (n_both >= DUP_PREFIX_STEPS) & (n_same >= DUP_SHARED_FRACTION * n_both)
                    drift = _median_drift(losses[a], losses[a + 1 :], both)
                    moved = (n_both >= DUP_PREFIX_STEPS) & (drift <= DUP_MAX_DRIFT)
                    hits = prefix | shared | moved
                else:
                    hits = (n_same >= DUP_MIN_SHARED_VAL) & (2 * n_same > n_both)
                for b in np.flatnonzero(hits):
                    i, j = idx[a], idx[a + 1 + int(b)]
                    if (owners is not None and owners[i] == owners[j]) or (i, j) in found:
                        continue
                    if kind == "val":
                        why = f"the same val loss at {n_same[b]} of the {n_both[b]} val steps after step 0"
                    elif prefix[b]:
                        why = f"the same train losses at the first {DUP_PREFIX_STEPS} steps"
                    elif shared[b]:
                        why = f"the same train loss at {n_same[b]} of {n_both[b]} steps"
                    else:
                        why = (
                            f"train losses that differ by a nearly constant amount (it moves by a median "
                            f"{drift[b] / 1e4:.4f} from step to step over {n_both[b]} steps; runs with other seeds "
                            f"move by 0.0036 or more): one run with its losses shifted or scaled"
                        )
                    found[(i, j)] = why
    return found


def _median_drift(row: np.ndarray, others: np.ndarray, both: np.ndarray) -> np.ndarray:
    """For each of ``others``, the median of |change from one printed step to the next| of ``row - other``,
    over the consecutive steps both print (in 1e-4); inf where fewer than two such steps."""
    diff = row[None, :] - others
    steps = both[:, 1:] & both[:, :-1]
    moves = np.where(steps, np.abs(np.diff(diff, axis=1)).astype(np.float64), np.nan)
    out = np.full(len(others), np.inf)
    have = steps.any(axis=1)
    if have.any():
        out[have] = np.nanmedian(moves[have], axis=1)
    return out


# --- hardware -------------------------------------------------------------------------------


def run_hardware(log: ParsedLog) -> HardwareClass | None:
    """The class of the GPUs nvidia-smi lists; None when it lists none or a name that is not ASCII after
    NFKC normalisation (a look-alike never makes a class of its own: `hardware` fails the run)."""
    names = [canonical_gpu_name(n) for n in log.gpu_names]
    if not names or None in names:
        return None
    models = sorted({n for n in names if n is not None})
    return HardwareClass(len(names), models[0] if len(models) == 1 else "mixed: " + ", ".join(models))


def claimed_hardware(ctx: Context) -> HardwareClass | None:
    """The class a record claims: its README's ``hardware``, else the track's official class; for a
    community submission (no claim written anywhere) the class most of its runs ran on."""
    if ctx.record.meta and ctx.record.meta.hardware:
        return ctx.record.meta.hardware
    if ctx.record.layout == "public":
        classes = Counter(hc for r in ctx.runs if (hc := run_hardware(r.log)))
        if classes:
            official = ctx.record.track.official_hardware
            return max(classes, key=lambda hc: (classes[hc], hc == official, hc.label))
    return ctx.record.track.official_hardware


def repeated_gpu_uuid(uuids: Sequence[str]) -> tuple[str, int] | None:
    """The GPU UUID a ``host:`` line lists most often, and how often, when it lists one more than once (case aside:
    nvidia-smi prints one spelling); None when each GPU is listed once."""
    counts = Counter(u.lower() for u in uuids)
    uuid, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]), default=("", 0))
    return (next(u for u in uuids if u.lower() == uuid), n) if n > 1 else None


def gpu_uuid_problem(log: ParsedLog, smi_gpus: int) -> str | None:
    """What the ``host:`` line's GPU UUIDs (one per rank: the GPU each rank ran on) say against the rest of the log: a
    UUID listed twice is one GPU, which two ranks shared, so the run used fewer GPUs than it lists; the distinct GPUs
    must be the ``smi_gpus`` nvidia-smi lists (and so world_size, which rule_hardware holds to that count). None
    where they agree, or the log has no such line (the public logs, a CPU run)."""
    uuids = log.gpu_uuids
    if not uuids:
        return None
    distinct = len({u.lower() for u in uuids})
    if repeated := repeated_gpu_uuid(uuids):
        uuid, n = repeated
        return (
            f"the 'host:' line lists {uuid} {n} times ({len(uuids)} UUIDs, {distinct} distinct): a GPU has one "
            f"UUID, so the run used {distinct} GPU(s), not the {len(uuids)} it lists"
        )
    if distinct != smi_gpus:  # world_size against nvidia-smi's count is the check above: one failure for each
        ws = (log.config or {}).get("world_size")
        with_ws = f" (world_size {ws})" if isinstance(ws, int) else ""
        return (
            f"the 'host:' line names {distinct} GPU(s), but nvidia-smi lists {smi_gpus}{with_ws}: the run did not use "
            "the GPUs the log shows"
        )
    return None


def rule_hardware(ctx: Context) -> RuleResult:
    if ctx.is_smoke:
        return NOT_APPLICABLE
    claimed = claimed_hardware(ctx)
    out: list[Failure] = []
    for run in ctx.runs:
        log = run.log
        hc = run_hardware(log)
        spoofed = [n for n in log.gpu_names if canonical_gpu_name(n) is None]
        if spoofed:
            out.append(
                Failure(
                    "hardware",
                    run.file,
                    f"GPU name {spoofed[0]!r} is not ASCII after Unicode NFKC normalisation ({first_non_ascii(spoofed[0])}): "
                    "nvidia-smi prints ASCII names; a look-alike name is an edited log",
                )
            )
            continue
        if hc is None:
            what = "says 'not available'" if log.nvidia_smi == "not available" else "is missing"
            out.append(
                Failure(
                    "hardware",
                    run.file,
                    f"nvidia-smi {what}: the GPUs of the run cannot be read",
                    incomplete=ctx.is_public and log.nvidia_smi == "missing",
                )
            )
            continue
        if claimed is not None and hc != claimed:
            out.append(Failure("hardware", run.file, f"nvidia-smi lists {hc.label}; the record claims {claimed.label}"))
            continue
        cfg = log.config or {}
        ws = cfg.get("world_size")
        if isinstance(ws, int) and ws != hc.count:
            out.append(
                Failure(
                    "hardware",
                    run.file,
                    f"config world_size {ws} but nvidia-smi lists {hc.count} GPUs: the run did not use the hardware it shows",
                )
            )
        if problem := gpu_uuid_problem(log, hc.count):
            out.append(Failure("hardware", run.file, problem))
        if "device" in cfg and cfg["device"] != "cuda":
            out.append(Failure("hardware", run.file, f"config device {cfg['device']!r}: a record runs on cuda"))
    return out


# --- config ---------------------------------------------------------------------------------


def rule_config(ctx: Context) -> RuleResult:
    if not ctx.harness_format:
        return NOT_APPLICABLE  # community logs never had a config line (RULES.md)
    track = ctx.record.track
    out: list[Failure] = []
    for run in ctx.runs:
        for problem in _config_problems(run.log, ctx):
            out.append(Failure("config", run.file, problem))
    if track.is_record_track and ctx.runs and not out:
        # Everything but the per-run identity (and where the shards sit on disk; `data` compares their
        # hashes) must agree: one record, one recipe.
        per_run = {run.file: _without(run.log.config or {}, RUN_IDENTITY_KEYS) for run in ctx.runs}
        first_file, first = next(iter(per_run.items()))
        for f, cfg in per_run.items():
            if cfg != first:
                keys = sorted(k for k in set(cfg) | set(first) if cfg.get(k) != first.get(k))
                out.append(Failure("config", f, f"config differs from {first_file} in {', '.join(keys[:8])}"))
    return out


def _without(d: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _config_problems(log: ParsedLog, ctx: Context) -> list[str]:
    track = ctx.record.track
    if log.config_error:
        return [log.config_error]
    cfg = log.config
    if cfg is None:
        return ["no 'config:' line in the environment block"]
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in cfg]
    if missing:
        return [f"config lacks {', '.join(missing)}"]
    problems = []
    if not _is_int(cfg["seed"]):
        problems.append(
            f"seed {str(cfg['seed'])[:40]!r} is a {type(cfg['seed']).__name__}, not an integer: train_gpt.py writes "
            "the seed it used as an int"
        )
    elif not -(2**63) <= cfg["seed"] < TORCH_SEED_SPACE:
        problems.append(
            f"seed {str(cfg['seed'])[:40]} is outside the seeds torch.manual_seed accepts (-2**63 to 2**64 - 1): "
            "no run used it"
        )
    if cfg["preset"] not in track.presets:
        problems.append(f"preset {cfg['preset']!r}, but track {track.name} runs {' or '.join(track.presets)}")
    if cfg["track"] != track.name:
        problems.append(f"config track {cfg['track']!r}, but the record is in {track.name}")
    ws, ga, gbt = cfg["world_size"], cfg["grad_accum_steps"], cfg["global_batch_tokens"]
    if not (_is_int(ws) and _is_int(ga) and _is_int(gbt) and ws >= 1 and ga >= 1 and gbt >= 1):
        problems.append(
            f"world_size {ws!r}, grad_accum_steps {ga!r}, global_batch_tokens {gbt!r} must be positive integers"
        )
    else:
        seq = cfg.get("train_seq_len")
        if _is_int(seq) and ws * ga * seq != gbt:
            problems.append(
                f"world_size {ws} × grad_accum_steps {ga} × train_seq_len {seq} = {ws * ga * seq}, "
                f"not global_batch_tokens {gbt}"
            )
        elif gbt % (ws * ga) != 0:
            problems.append(f"global_batch_tokens {gbt} is not divisible by world_size {ws} × grad_accum_steps {ga}")
    if track.is_record_track:
        if cfg["val_tokens"] != RECORD_VAL_TOKENS:
            problems.append(f"val_tokens {cfg['val_tokens']!r}, not {RECORD_VAL_TOKENS:,}: validation never changes")
        if cfg["target_val_loss"] != track.target_val_loss:
            problems.append(f"target_val_loss {cfg['target_val_loss']!r}, not the track's {track.target_val_loss}")
        if cfg["overrides"] != {}:
            problems.append(
                f"overrides {cfg['overrides']!r}: a record runs the code as written (SPEEDRUN_OVERRIDES is for experiments)"
            )
        if cfg.get("resumed_from"):
            problems.append(
                f"resumed_from {cfg['resumed_from']!r}: a run resumed from a checkpoint (SPEEDRUN_RESUME) is never a "
                "record; a record trains from step 0 in one go"
            )
    return problems


# --- data -----------------------------------------------------------------------------------


def rule_data(ctx: Context) -> RuleResult:
    if not ctx.harness_format:
        return NOT_APPLICABLE
    out: list[Failure] = []
    lists: dict[str, list[tuple[str, str]]] = {}
    for run in ctx.runs:
        shards, problem = shard_list(run.log)
        if problem:
            out.append(Failure("data", run.file, problem))
            continue
        lists[run.file] = shards
        if not ctx.is_smoke:
            splits = [s.get("split") for s in (run.log.data or {}).get("shards", [])]
            if "val" not in splits:
                out.append(
                    Failure("data", run.file, "no shard with split 'val': the run must read the FineWeb val shard")
                )
            out.extend(Failure("data", run.file, p) for p in _unknown_shards(shards, splits, ctx.known_shards))
            out.extend(Failure("data", run.file, p) for p in _shard_problems(run.log))
    if lists:
        first_file, first = next(iter(lists.items()))
        logs = {run.file: run.log for run in ctx.runs}
        first_val = val_shards(logs[first_file])
        for f, shards in lists.items():
            if not ctx.is_smoke and val_shards(logs[f]) != first_val:
                out.append(
                    Failure(
                        "data", f, f"validates on another val shard (sha256) than {first_file}: one record, one val set"
                    )
                )
            elif shards != first:
                diff = sorted(set(shards) ^ set(first))
                detail = f"first difference: {diff[0][0]}" if diff else "same shards in another order"
                out.append(Failure("data", f, f"reads other shard files than {first_file} ({detail})"))
    return out


def val_shards(log: ParsedLog) -> frozenset[str]:
    """The sha256 of every shard the run validated on (split ``val``)."""
    shards = (log.data or {}).get("shards")
    if not isinstance(shards, list):
        return frozenset()
    return frozenset(
        s["sha256"]
        for s in shards
        if isinstance(s, dict) and s.get("split") == "val" and isinstance(s.get("sha256"), str)
    )


def _shard_problems(log: ParsedLog) -> list[str]:
    """What needs no table of known hashes: no train shard is a val shard, the token counts are those of
    FineWeb shards, the val shard holds the val tokens and the train shards the tokens the run trained on.

    Called on a well-formed data line (``shard_list`` passed).
    """
    shards = (log.data or {}).get("shards", [])
    problems = []
    vals = val_shards(log)
    first_of: dict[str, str] = {}
    for s in shards:
        if s.get("split") != "val":
            if s["sha256"] in first_of:
                problems.append(
                    f"train shard {s['name']} has the sha256 of {first_of[s['sha256']]}: one file counted twice, "
                    "its tokens too (FineWeb's shards are distinct files)"
                )
            first_of.setdefault(s["sha256"], s["name"])
            if s["sha256"] in vals:
                problems.append(
                    f"{s.get('split')} shard {s['name']} has the sha256 of the val shard: a record never trains on "
                    "its validation data"
                )
        if s["tokens"] > FINEWEB_SHARD_TOKENS:
            problems.append(
                f"shard {s['name']} holds {s['tokens']:,} tokens; a FineWeb shard holds at most {FINEWEB_SHARD_TOKENS:,}"
            )
    cfg = log.config or {}
    val_tokens = cfg.get("val_tokens", RECORD_VAL_TOKENS)
    for s in shards:
        if s.get("split") == "val" and _is_int(val_tokens) and s["tokens"] < val_tokens:
            problems.append(
                f"the val shard {s['name']} holds {s['tokens']:,} tokens, fewer than the {val_tokens:,} validated on"
            )
    gbt, total = cfg.get("global_batch_tokens"), log.total_steps
    train_tokens = sum(s["tokens"] for s in shards if s.get("split") == "train")
    if _is_int(gbt) and gbt > 0 and total is not None and train_tokens < gbt * total:
        problems.append(
            f"{total} steps of {gbt:,} tokens read {gbt * total:,} tokens, but the train shards hold {train_tokens:,}"
        )
    return problems


def _unknown_shards(shards: list[tuple[str, str]], splits: list[object], known: dict[str, str]) -> list[str]:
    """Against the table of known FineWeb shards (when it is filled): the names are the run's own word, so
    each shard's sha256 must be one the table holds, the val shard the FineWeb val shard, and no train
    shard the val shard. A table matched by name only passed any data renamed to the published names."""
    if not known:
        return []  # nobody has filled tools/judge/known_shards.json: nothing to check against (RULES.md `data`)
    known_names = {sha: name for name, sha in known.items()}
    val_hashes = {sha for name, sha in known.items() if _VAL_SHARD_RE.search(name)}
    problems = []
    for (name, sha), split in zip(shards, splits, strict=True):
        if sha not in known_names:
            expected = known.get(name)
            detail = f"; the known {name} has {expected[:16]}…" if expected else ""
            problems.append(
                f"{name} has sha256 {sha[:16]}…, which is no known FineWeb shard (tools/judge/known_shards.json){detail}: "
                "a record trains and validates on the published shards"
            )
        elif split == "val" and val_hashes and sha not in val_hashes:
            problems.append(f"the val shard {name} is the FineWeb shard {known_names[sha]}, not the FineWeb val shard")
        elif split != "val" and sha in val_hashes:
            problems.append(
                f"{split} shard {name} is the FineWeb val shard {known_names[sha]}: a record never trains on it"
            )
    return problems


def shard_list(log: ParsedLog) -> tuple[list[tuple[str, str]], str | None]:
    if log.data_error:
        return [], log.data_error
    if log.data is None:
        return [], "no 'data:' line in the environment block"
    shards = log.data.get("shards")
    if not isinstance(shards, list) or not shards:
        return [], "the data line has no 'shards' list"
    out = []
    for i, s in enumerate(shards):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not isinstance(s.get("sha256"), str):
            return [], f"shard #{i} lacks a name or sha256"
        if not _SHA256_RE.match(s["sha256"]):
            return [], f"shard {s['name']!r}: sha256 {s['sha256'][:70]!r} is not 64 lowercase hex digits"
        if not _is_int(s.get("tokens")) or s["tokens"] <= 0:
            return [], f"shard {s['name']!r}: token count {s.get('tokens')!r} is not a positive integer"
        out.append((s["name"], s["sha256"]))
    return out, None


# --- target / loss-drop ---------------------------------------------------------------------


def rule_target(ctx: Context) -> RuleResult:
    track = ctx.record.track
    if track.target_val_loss is None:
        return NOT_APPLICABLE
    target = track.target_val_loss
    finals = ctx.finals()
    where = ctx.record_file
    if not ctx.runs:
        return []  # `structure` says there is no run
    if not finals:
        return [Failure("target", where, "no run reports a final val loss")]
    bad = [r for r in ctx.runs if r.log.final_val_loss is not None and not math.isfinite(r.log.final_val_loss)]
    if bad:
        return [Failure("target", r.file, f"final val loss is {r.log.final_val_loss}") for r in bad]
    if not plausible_finals(finals, track.min_val_loss):
        return [
            Failure(
                "target",
                where,
                "the mean and the p-value are computed on plausible final losses only, and these are not (see `plausible`)",
            )
        ]
    mean = stats.mean(finals)
    assert mean is not None
    out: list[Failure] = []
    if mean > target:
        out.append(
            Failure(
                "target",
                where,
                f"mean final val loss {mean:.4f} over {len(finals)} run(s) is above the target {target}",
            )
        )
    if not ctx.rules.p_value_required:
        return out  # before 2024-12-09 a run at or below the target made a record: no p-value was asked
    systems_only = bool(ctx.record.meta and ctx.record.meta.systems_only)
    # Evidence that is thin but points the right way (a mean at or below the target) is incomplete, not false,
    # for a public record: its maintainers may have seen runs its folder does not hold.
    thin = ctx.is_public and mean <= target
    min_runs = MIN_RUNS if not ctx.is_public else MIN_RUNS_PUBLIC
    if len(finals) < min_runs:
        out.append(
            Failure(
                "target",
                where,
                f"{len(finals)} run(s): a systems_only record needs at least {MIN_RUNS} too, to compare its val "
                "curve with its baseline's"
                if systems_only
                else _too_few_runs(ctx, len(finals), min_runs),
                incomplete=thin,
            )
        )
        return out
    if systems_only:
        # Same math as its baseline (tools/judge/verify.py compares the val curves): the p-value is waived, the mean
        # and the number of runs are not.
        return out
    p = stats.p_below_target(finals, target)
    if p is None or math.isnan(p):
        out.append(
            Failure(
                "target",
                where,
                f"the p-value is undefined: all {len(finals)} runs have the same final loss (one run written "
                f"{len(finals)} times is no evidence)",
            )
        )
    elif p >= P_VALUE_THRESHOLD:
        out.append(
            Failure(
                "target",
                where,
                f"one-sided t-test of mean {mean:.4f} < {target} over {len(finals)} runs: p = {p:.3g}, not below {P_VALUE_THRESHOLD}",
                incomplete=thin,
            )
        )
    return out


def _too_few_runs(ctx: Context, n: int, needed: int) -> str:
    if not ctx.is_public:
        return f"{n} run(s): the p-value needs at least {needed} runs with distinct seeds"
    cited = readme_run_count(ctx.record.readme)
    where = f"; its README speaks of {cited} runs" if cited and cited > n else ""
    return (
        f"{n} run(s) in the folder{where}: the rules of its date ask for enough runs for p < {P_VALUE_THRESHOLD} "
        f"(at least {needed}), or a pure systems change"
    )


_RUN_COUNT_RE = re.compile(r"(?<![\w.])([1-9][0-9]{0,3}) (?:more )?(?:runs|run logs|trials|seeds)\b", re.I)


def readme_run_count(readme: str | None) -> int | None:
    """The largest number of runs a public record's README speaks of ("over 80 runs", "40 trials"): shown beside
    the runs its folder holds, never counted as evidence."""
    if not readme:
        return None
    counts = [int(m.group(1)) for m in _RUN_COUNT_RE.finditer(readme[:MAX_README_SCAN])]
    return max(counts) if counts else None


def plausible_finals(finals: Sequence[float], floor: float | None) -> bool:
    """Final losses a t-test may be computed on: finite and not below the track's floor."""
    return all(math.isfinite(f) and f >= (floor if floor is not None else 0.0) for f in finals)


def curve_mismatch(runs: Sequence[Run], base_runs: Sequence[Run]) -> str | None:
    """Why the val curves of ``runs`` are not those of ``base_runs`` within run-to-run noise; None if they are.

    Compared at every step after step 0 at which every run of the baseline validates: the mean val loss
    of each record, against CURVE_TOLERANCE at that fraction of training. Every run of the record must
    validate there too: a run that skips them (val lines deleted, another val_loss_every) hides its curve.
    """
    totals = {r.log.total_steps for r in runs} | {r.log.total_steps for r in base_runs}
    if len(totals) != 1 or None in totals:
        own_totals = "/".join(sorted({str(r.log.total_steps) for r in runs}))
        base_totals = "/".join(sorted({str(r.log.total_steps) for r in base_runs}))
        return f"it trains {own_totals} steps, the baseline {base_totals}: not the same schedule"
    total = totals.pop()
    assert total is not None
    curves = [{p.step: p.val_loss for p in r.log.val_curve} for r in [*runs, *base_runs]]
    steps = sorted(set.intersection(*(set(c) for c in curves[len(runs) :])) - {0})
    if not steps:
        return "no val step after step 0 that every run of the baseline reports"
    for run, curve in zip(runs, curves[: len(runs)], strict=True):
        skipped = [step for step in steps if step not in curve]
        if skipped:
            return (
                f"{Path(run.file).name} reports no val loss at step {skipped[0]} ({len(skipped)} of the baseline's "
                f"{len(steps)} val steps after step 0 missing): a systems_only record shows its val curve at every "
                "step where its baseline validates"
            )
    n, m = len(runs), len(base_runs)
    scale = min(1.0, math.sqrt((1 / n + 1 / m) / (2 / 3)))
    for step in steps:
        mine = math.fsum(c[step] for c in curves[:n]) / n
        theirs = math.fsum(c[step] for c in curves[n:]) / m
        frac = step / total if total > 0 else 1.0
        tol = scale * next(t for upto, t in CURVE_TOLERANCE if frac <= upto)
        if not abs(mine - theirs) <= tol:
            return (
                f"at step {step} its mean val loss is {mine:.4f}, the baseline's {theirs:.4f}: a difference of "
                f"{abs(mine - theirs):.4f}, more than the {tol:.4f} run-to-run noise explains at that point of training"
            )
    return None


def rule_loss_drop(ctx: Context) -> RuleResult:
    if not ctx.is_smoke:
        return NOT_APPLICABLE
    out: list[Failure] = []
    for run in ctx.runs:
        curve = run.log.val_curve
        if len(curve) < 2:
            out.append(Failure("loss-drop", run.file, f"{len(curve)} val_loss line(s): need the first and the last"))
            continue
        first, last = curve[0].val_loss, curve[-1].val_loss
        if not (math.isfinite(first) and math.isfinite(last)):
            out.append(Failure("loss-drop", run.file, f"val loss went from {first} to {last}: not finite"))
        elif last > (1 - LOSS_DROP_FRACTION) * first:
            out.append(
                Failure(
                    "loss-drop",
                    run.file,
                    f"val loss went from {first:.4f} (step {curve[0].step}) to {last:.4f} (step {curve[-1].step}): "
                    f"less than the {LOSS_DROP_FRACTION:.0%} drop a healthy run shows",
                )
            )
    return out


# --- compile-flags --------------------------------------------------------------------------


def rule_compile_flags(ctx: Context) -> RuleResult:
    """Every file of the code each run carries (the trainer and the files it appended to its log), read by
    tools/judge/sourcecheck.py. A finding that sets a compiler option is kind "flag" (what the public rules forbid since
    2025-02-02), any other "unreadable" (code this harness cannot show complies): for a public record the rulebook
    makes the second a note (``Rulebook.binding``). ``coordinate_descent_tuning`` is allowed on the medium track."""
    checked = False
    out: list[Failure] = []
    allowed = {"coordinate_descent_tuning"} if ctx.rules.coordinate_descent_allowed else set()
    for run in ctx.runs:
        log = run.log
        local = [Path(f.name).stem for f in log.code_files if f.name]
        for file in log.code_files:
            if not file.text.strip():
                continue
            checked = True
            label = file.name or "source"
            for finding in find_compile_flags(file.text, log.python_version, local):
                if finding.kind == FLAG and finding.option in allowed:
                    continue
                where = f"{label} line {finding.line}" if finding.line else label
                out.append(Failure("compile-flags", run.file, f"{where}: {finding.what}", finding.kind))
    if not checked:
        return NOT_APPLICABLE if not ctx.harness_format else []  # the anchor copy omitted the code
    return out


RULES: Final[tuple[tuple[str, Rule], ...]] = (
    ("structure", rule_structure),
    ("complete", rule_complete),
    ("monotonic", rule_monotonic),
    ("plausible", rule_plausible),
    ("same-code", rule_same_code),
    ("distinct-runs", rule_distinct_runs),
    ("hardware", rule_hardware),
    ("config", rule_config),
    ("data", rule_data),
    ("target", rule_target),
    ("loss-drop", rule_loss_drop),
    ("compile-flags", rule_compile_flags),
)
