"""The rules of ../shared/spec/RULES.md, one function each, applied to the parsed runs of one record.

Each rule returns the list of its failures (empty: passed) or ``NOT_APPLICABLE``. A failure names the
rule, the file (a log, or the record's README/folder) and the evidence (the line or the number).
``faster`` needs the other records of the track, so it lives in tools/verify.py.

Choices this module makes where RULES.md leaves room (also in records/README.md):
- ``structure`` also checks a record's date, which orders it for ``faster``: no run of a record with
  a README may be dated (nvidia-smi's timestamp) more than RUN_DATE_SLACK after it.
- ``monotonic``: k (untimed warm-up steps) is a claim of the log, so it is bounded. This repository's
  logs on a record track must have k = 0, as train_gpt.py writes (``config.step_avg_excluded_steps``);
  elsewhere k is that key when the log has it, else inferred from the second half of the run as
  ``round(step - train_time / step_avg)``; either way 0 <= k < total (a larger k would leave no line
  to check). ``train_time`` must never decrease on any line, but for one drop from step <= k to
  step k+1 (the 2024 trainer restarted its clock there); ``step_avg`` is checked on the lines at
  ``step > k``, and must equal ``train_time / (step - k)`` within the printing precision:
  0.005 ms for step_avg plus 0.5 ms / (step - k) for the rounded train_time, plus 0.01% relative.
  ``step_avg:nan`` is accepted only for the first two timed steps, where the 2024 trainer printed it.
- ``target``: a record must have at least 3 runs (MIN_RUNS) unless ``systems_only: true``, which
  waives the p-value but not the mean, and only with a ``baseline`` that is a valid earlier record
  of the same track (tools/records.py checks the name, tools/verify.py the baseline's verdict). Community submissions have no README, so no claim of
  systems_only: the p-value applies to them as written.
- ``loss-drop`` (smoke only, in place of ``target``): each run's last val loss must be at least
  LOSS_DROP_FRACTION (5%) below its first one (the step-0 evaluation) and finite. A smoke run is
  short (tens of steps on CPU); 5% is far outside evaluation noise yet reachable by any trainer that
  learns at all, and it catches the failures a smoke run exists for: NaN, divergence, no learning.
- ``data``: where tools/known_shards.json is filled, a record track's shards are matched by sha256, not by
  name (a name is the run's own word): every sha256 must be in the table, the val shard's the val shard's.
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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from tools import stats
from tools.parse import ParsedLog
from tools.records import README, Record
from tools.sourcecheck import find_compile_flags
from tools.tracks import RECORD_VAL_TOKENS, HardwareClass

RULE_IDS: Final = (
    "structure",
    "complete",
    "monotonic",
    "same-code",
    "distinct-runs",
    "hardware",
    "config",
    "data",
    "target",
    "loss-drop",
    "compile-flags",
    "faster",
)
MIN_RUNS = 3
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
# Config keys the runs of one record may disagree on (see `config` above).
RUN_IDENTITY_KEYS = ("seed", "run_id", "data_path", "checkpoint_every", "checkpoint_keep", "checkpoint_dir")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
K_CONFIG_KEY = "step_avg_excluded_steps"
# A val shard of the published FineWeb data by name (fineweb_val_000000.bin, ../shared/spec/RECIPE.md).
_VAL_SHARD_RE = re.compile(r"(?:^|_)val_")
# nvidia-smi prints the node's local time; a README date is the submitter's: up to a day apart.
RUN_DATE_SLACK = dt.timedelta(days=1)


class _NotApplicable:
    def __repr__(self) -> str:
        return "NOT_APPLICABLE"


NOT_APPLICABLE: Final = _NotApplicable()


@dataclass(frozen=True)
class Failure:
    rule: str
    file: str
    evidence: str

    def to_json(self) -> dict[str, str]:
        return {"rule": self.rule, "file": self.file, "evidence": self.evidence}


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


RuleResult = list[Failure] | _NotApplicable
Rule = Callable[[Context], RuleResult]


# --- structure ------------------------------------------------------------------------------


def rule_structure(ctx: Context) -> RuleResult:
    out: list[Failure] = []
    for err in ctx.record.meta_errors:
        out.append(Failure("structure", ctx.record_file, err))
    if ctx.record.layout == "harness" and ctx.record.meta is None and not ctx.record.meta_errors:
        out.append(Failure("structure", ctx.record_file, f"{README} front matter is missing"))
    if not ctx.runs:
        out.append(Failure("structure", str(ctx.record.path), "no run logs (*.txt) in the record folder"))
    out.extend(_backdated_runs(ctx))
    for run in ctx.runs:
        log = run.log
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
        if not log.source_omitted and not log.source_text.strip() and not log.extra_code.strip():
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


# --- complete -------------------------------------------------------------------------------


def rule_complete(ctx: Context) -> RuleResult:
    out: list[Failure] = []
    for run in ctx.runs:
        log = run.log
        final = log.final
        if final is None:
            out.append(Failure("complete", run.file, "no val_loss line: the run never reported a result"))
        elif log.total_steps is None:
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
    return out


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
    for run in ctx.runs:
        failure = _monotonic_one(run, trainer_k_only)
        if failure:
            out.append(Failure("monotonic", run.file, failure))
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
    """Within one record; tools.verify.flag_reused_runs extends the rule across the records judged together."""
    if ctx.is_smoke:
        return NOT_APPLICABLE
    out: list[Failure] = []
    seen_file: dict[str, str] = {}
    seen_curve: dict[tuple[Any, ...], str] = {}
    seen_seed: dict[object, str] = {}
    seen_id: dict[object, str] = {}
    for run in ctx.runs:
        log = run.log
        if (other := seen_file.get(log.file_sha256)) is not None:
            out.append(Failure("distinct-runs", run.file, f"byte-for-byte the same file as {other}"))
            continue
        seen_file[log.file_sha256] = run.file
        m = log.metrics
        if len(log.val_curve) >= 2 and len(m):
            curve = (tuple(log.val_curve), m.train_time_ms.tobytes(), m.loss.tobytes())
            if (other := seen_curve.get(curve)) is not None:
                out.append(
                    Failure(
                        "distinct-runs", run.file, f"the same loss and time curve as {other}: one run counted twice"
                    )
                )
            seen_curve.setdefault(curve, run.file)
        cfg = log.config or {}
        if ctx.harness_format:
            for key, seen in (("seed", seen_seed), ("run_id", seen_id)):
                value = cfg.get(key)
                if value is None:
                    continue  # `config` reports missing keys
                value_key = repr(value)
                if (other := seen.get(value_key)) is not None:
                    out.append(Failure("distinct-runs", run.file, f"{key} {value!r} is also the {key} of {other}"))
                seen.setdefault(value_key, run.file)
    return out


# --- hardware -------------------------------------------------------------------------------


def run_hardware(log: ParsedLog) -> HardwareClass | None:
    name = log.gpu_name
    return HardwareClass(log.num_gpus, name) if name else None


def claimed_hardware(ctx: Context) -> HardwareClass | None:
    """The class a record claims: its README's ``hardware``, else the track's official class; for a
    community submission (no claim written anywhere) the class most of its runs ran on."""
    if ctx.record.meta and ctx.record.meta.hardware:
        return ctx.record.meta.hardware
    if ctx.record.layout == "community":
        classes = Counter(hc for r in ctx.runs if (hc := run_hardware(r.log)))
        if classes:
            official = ctx.record.track.official_hardware
            return max(classes, key=lambda hc: (classes[hc], hc == official, hc.label))
    return ctx.record.track.official_hardware


def rule_hardware(ctx: Context) -> RuleResult:
    if ctx.is_smoke:
        return NOT_APPLICABLE
    claimed = claimed_hardware(ctx)
    out: list[Failure] = []
    for run in ctx.runs:
        log = run.log
        hc = run_hardware(log)
        if hc is None:
            what = "says 'not available'" if log.nvidia_smi == "not available" else "is missing"
            out.append(Failure("hardware", run.file, f"nvidia-smi {what}: the GPUs of the run cannot be read"))
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


def _is_int(v: object) -> bool:
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
        shards, problem = _shard_list(run.log)
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
    if lists:
        first_file, first = next(iter(lists.items()))
        for f, shards in lists.items():
            if shards != first:
                diff = sorted(set(shards) ^ set(first))
                detail = f"first difference: {diff[0][0]}" if diff else "same shards in another order"
                out.append(Failure("data", f, f"reads other shard files than {first_file} ({detail})"))
    return out


def _unknown_shards(shards: list[tuple[str, str]], splits: list[object], known: dict[str, str]) -> list[str]:
    """Against the table of known FineWeb shards (when it is filled): the names are the run's own word, so
    each shard's sha256 must be one the table holds, the val shard the FineWeb val shard, and no train
    shard the val shard. A table matched by name only passed any data renamed to the published names."""
    if not known:
        return []  # nobody has filled tools/known_shards.json: nothing to check against (RULES.md `data`)
    known_names = {sha: name for name, sha in known.items()}
    val_hashes = {sha for name, sha in known.items() if _VAL_SHARD_RE.search(name)}
    problems = []
    for (name, sha), split in zip(shards, splits, strict=True):
        if sha not in known_names:
            expected = known.get(name)
            detail = f"; the known {name} has {expected[:16]}…" if expected else ""
            problems.append(
                f"{name} has sha256 {sha[:16]}…, which is no known FineWeb shard (tools/known_shards.json){detail}: "
                "a record trains and validates on the published shards"
            )
        elif split == "val" and val_hashes and sha not in val_hashes:
            problems.append(f"the val shard {name} is the FineWeb shard {known_names[sha]}, not the FineWeb val shard")
        elif split != "val" and sha in val_hashes:
            problems.append(
                f"{split} shard {name} is the FineWeb val shard {known_names[sha]}: a record never trains on it"
            )
    return problems


def _shard_list(log: ParsedLog) -> tuple[list[tuple[str, str]], str | None]:
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
    if not finals:
        return [Failure("target", where, "no run reports a final val loss")]
    bad = [r for r in ctx.runs if r.log.final_val_loss is not None and not math.isfinite(r.log.final_val_loss)]
    if bad:
        return [Failure("target", r.file, f"final val loss is {r.log.final_val_loss}") for r in bad]
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
    systems_only = bool(ctx.record.meta and ctx.record.meta.systems_only)
    if systems_only:
        return out  # same math as its baseline: the p-value is waived, the mean is not
    if len(finals) < MIN_RUNS:
        out.append(
            Failure(
                "target",
                where,
                f"{len(finals)} run(s): the p-value needs at least {MIN_RUNS} (or systems_only: true for a pure systems change)",
            )
        )
        return out
    p = stats.p_below_target(finals, target)
    if p is None or math.isnan(p):
        out.append(
            Failure("target", where, f"the p-value is undefined: all {len(finals)} runs have the same final loss")
        )
    elif p >= P_VALUE_THRESHOLD:
        out.append(
            Failure(
                "target",
                where,
                f"one-sided t-test of mean {mean:.4f} < {target} over {len(finals)} runs: p = {p:.3g}, not below {P_VALUE_THRESHOLD}",
            )
        )
    return out


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
    checked = False
    out: list[Failure] = []
    for run in ctx.runs:
        log = run.log
        for label, code in (("source", log.source_text), ("code section", log.extra_code)):
            if not code.strip():
                continue
            checked = True
            for line_no, what in find_compile_flags(code, log.python_version):
                where = f"{label} line {line_no}" if line_no else label
                out.append(Failure("compile-flags", run.file, f"{where}: {what}"))
    if not checked:
        return NOT_APPLICABLE if not ctx.harness_format else []  # the anchor copy omitted the code
    return out


RULES: Final[tuple[tuple[str, Rule], ...]] = (
    ("structure", rule_structure),
    ("complete", rule_complete),
    ("monotonic", rule_monotonic),
    ("same-code", rule_same_code),
    ("distinct-runs", rule_distinct_runs),
    ("hardware", rule_hardware),
    ("config", rule_config),
    ("data", rule_data),
    ("target", rule_target),
    ("loss-drop", rule_loss_drop),
    ("compile-flags", rule_compile_flags),
)
