"""Same-node baselines: a record's ``baseline/`` runs, the previous record's code timed on the record's own node.

Absolute times are not comparable across machines: the public speedrun timed one code at 80.7 s with
one provider and 74.6 s with another (8 %), more than most records gain. So a record may carry, in
``<record>/baseline/*.txt``, runs of its ``baseline`` record's code made on the node of its own runs,
ideally interleaved with them. The rule ``same-node`` (records/README.md) then asks:

- the baseline runs are whole, honest runs: ``structure``, ``complete``, ``monotonic``, ``plausible``
  and ``distinct-runs`` hold for them as for a record's runs (reported under those rules, on the
  baseline log), and there are at least MIN_BASELINE_RUNS of them;
- every run, baseline and candidate, carries the trainer's ``host:`` line, and all name one host_id
  and one set of GPU UUIDs: one node, the same GPUs;
- no run is both a baseline run and a run of the record (same file or run_id);
- against the named baseline record (tools/judge/verify.py, ``check_same_node``): the baseline runs' code
  hash is the baseline record's, their config is its config (apart from each run's identity: seed,
  run id, where the data and checkpoints sit) and they read its shards, so the baseline ran as the
  baseline record ran; their mean time is the baseline record's runs' mean within BASELINE_TIME_SPREAD, how
  far two nodes of the class time one code apart (a baseline written 20 % slower made a slower record a
  new one); and no baseline run is a run of a record (a baseline run is made for this comparison, on this
  node). For a public record, whose rules do not bind these checks, a time outside the bound is a note,
  and the comparison is not used to decide "new record".

When they hold and the named baseline is the previous record of the class, "new record" rests on a
one-sided Welch t-test on train_time, candidate runs against baseline runs (tools/judge/stats.py,
p < P_VALUE_THRESHOLD); tools/judge/verify.py's ``rank`` decides.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Final

from tools.judge.parse import ParsedLog
from tools.judge.rules import MIN_RUNS, RULES, Context, Failure, Run, repeated_gpu_uuid

RULE = "same-node"
MIN_BASELINE_RUNS = MIN_RUNS
# How far apart two nodes of one hardware class time one code, mean against mean (the slower over the faster, less
# one). Baseline runs run the baseline record's code on the record's node, so their mean train_time is the baseline
# record's own runs' mean within it; beyond it they are not the baseline record as it ran (a slowed copy, other
# software, times written by hand). From the public speedrun: its README timed one code at 80.7 s with one provider
# and 74.6 s with another, 8.18 % apart; in its tree, the same code (one sha256) timed in two record folders is at
# most 8.47 % apart (one run of 2024-10-17_DistributedMuon against one of 2024-10-18_PyTorch25, a PyTorch upgrade
# between them), and the four sets of baseline runs of an earlier record's code are +0.06, -0.19, -0.23 and +7.88 %
# from that record's runs (2026-04-08_PairedHeadMuon's 4 runs of 2026-03-22_VarlenMaxDocs's code, 93.0 s against
# 86.2 s). Two means of one node differ by less than two runs of it, at most 1.21 % apart in the public tree (one
# submission's runs, docs/reproduce.md). The bound is the provider spread on top of that:
# (1 + 0.0818) * (1 + 0.0121) - 1 = 9.49 %, rounded up; the same tolerance `python -m tools reproduce` allows a run
# of a record's code on another node (docs/reproduce.md). It is symmetric: a baseline faster than its record by more
# is no run of it either. A slowdown within it cannot be told from a slower node: what verification cannot know.
BASELINE_TIME_SPREAD: Final = 0.095
# The rules of a record's runs that also hold for its baseline runs: what makes a log a whole, honest run.
# (config, data and same-code are judged against the baseline record instead; hardware is the same node.)
BASELINE_RULES = ("structure", "complete", "monotonic", "plausible", "distinct-runs")
HOW_TO = "records/README.md, 'Same-node baseline runs'"


def host_of(log: ParsedLog) -> tuple[str, frozenset[str]] | str:
    """(host_id, GPU UUIDs) of a run, or why they cannot be read from its ``host:`` line."""
    if log.host_error:
        return log.host_error
    if log.host_id is None:
        return "no 'host:' line in the environment block: the log cannot show which node and GPUs it ran on"
    if not log.gpu_uuids:
        return "the 'host:' line lists no GPU UUIDs: the log cannot show which GPUs it ran on"
    if repeated := repeated_gpu_uuid(log.gpu_uuids):
        uuid, n = repeated
        return (
            f"the 'host:' line lists {uuid} {n} times: a GPU has one UUID, so the log cannot show which GPUs its ranks "
            "ran on"
        )
    return log.host_id, frozenset(u.lower() for u in log.gpu_uuids)


def judge_baseline_runs(ctx: Context, baseline: Sequence[Run]) -> list[Failure]:
    """Every check of ``baseline`` (the record's baseline/ runs) that needs no other record."""
    if not baseline or ctx.is_smoke:
        return []
    out: list[Failure] = []
    # The baseline runs as if they were a record's runs: the record's README dates them (no run made after
    # the record), but its own front-matter problems are the record's and reported once, by `structure`.
    record = dataclasses.replace(ctx.record, logs=[r.path for r in baseline], meta_errors=[], baseline_runs=[])
    bctx = Context(record, list(baseline), ctx.known_shards, ctx.today)
    for rule_id, rule in RULES:
        if rule_id in BASELINE_RULES:
            result = rule(bctx)
            if isinstance(result, list):
                out.extend(result)
    if len(baseline) < MIN_BASELINE_RUNS:
        out.append(
            Failure(
                RULE,
                ctx.record_file,
                f"{len(baseline)} baseline run(s) in baseline/: the t-test against them needs at least "
                f"{MIN_BASELINE_RUNS} ({HOW_TO})",
            )
        )
    out.extend(_one_node(ctx.runs, baseline))
    out.extend(_not_both(ctx.runs, baseline))
    return out


def _one_node(runs: Sequence[Run], baseline: Sequence[Run]) -> list[Failure]:
    """All runs, the record's and the baseline's, name one host_id and one set of GPU UUIDs."""
    out: list[Failure] = []
    hosts: dict[str, tuple[str, frozenset[str]]] = {}
    for run in [*runs, *baseline]:
        got = host_of(run.log)
        if isinstance(got, str):
            out.append(Failure(RULE, run.file, f"{got}; a record with baseline runs shows that all ran on one node"))
        else:
            hosts[run.file] = got
    if not hosts:
        return out
    # The node most runs name is the reference, the record's own runs first among equals: the evidence
    # then points at the odd runs out.
    order = {r.file: i for i, r in enumerate([*runs, *baseline])}
    counts = Counter(hosts.values())
    ref_file = min(hosts, key=lambda f: (-counts[hosts[f]], order[f]))
    ref_host, ref_gpus = hosts[ref_file]
    kind = {r.file: "candidate" for r in runs} | {r.file: "baseline" for r in baseline}
    for f, (host, gpus) in hosts.items():
        if host != ref_host:
            out.append(
                Failure(
                    RULE,
                    f,
                    f"{kind[f]} run on host {host}, but {ref_file} on host {ref_host}: baseline and candidate runs "
                    "must run on one node",
                )
            )
        elif gpus != ref_gpus:
            theirs, mine = sorted(ref_gpus - gpus), sorted(gpus - ref_gpus)
            detail = ", ".join([*(f"not {u}" for u in theirs[:2]), *(f"but {u}" for u in mine[:2])])
            out.append(
                Failure(
                    RULE,
                    f,
                    f"{kind[f]} run on {len(gpus)} GPU(s) other than the {len(ref_gpus)} of {ref_file} ({detail}): "
                    "baseline and candidate runs must run on the same GPUs",
                )
            )
    return out


def baseline_time_problem(baseline_ms: Sequence[float], record_ms: Sequence[float], name: str) -> str | None:
    """Why the mean of ``baseline_ms`` (baseline runs' train_time) is not that of ``record_ms`` (the runs of the
    baseline record ``name``) as two nodes of one class would time them (BASELINE_TIME_SPREAD); None when it is, or
    when either side has no time."""
    mine = [t for t in baseline_ms if t > 0]
    theirs = [t for t in record_ms if t > 0]
    if not mine or not theirs:
        return None
    bm, rm = sum(mine) / len(mine), sum(theirs) / len(theirs)
    spread = max(bm, rm) / min(bm, rm) - 1
    if spread <= BASELINE_TIME_SPREAD:
        return None
    return (
        f"the {len(mine)} baseline run(s) take {bm / 1000:.3f} s on average, {spread:.1%} {'slower' if bm > rm else 'faster'} "
        f"than the {len(theirs)} run(s) of the baseline {name} ({rm / 1000:.3f} s): two nodes of one class time one "
        f"code at most {BASELINE_TIME_SPREAD:.1%} apart ({HOW_TO}), so these runs are not the baseline record as it ran"
    )


def _not_both(runs: Sequence[Run], baseline: Sequence[Run]) -> list[Failure]:
    """A run is a candidate run or a baseline run, never both (the same file, or the same run_id)."""
    out = []
    by_bytes = {r.log.file_sha256: r.file for r in runs if r.log.file_sha256}
    by_id = {rid: r.file for r in runs if isinstance(rid := (r.log.config or {}).get("run_id"), str) and rid}
    for b in baseline:
        rid = (b.log.config or {}).get("run_id")
        if b.log.file_sha256 and (other := by_bytes.get(b.log.file_sha256)) is not None:
            why = f"byte for byte the same file as the record's run {other}"
        elif isinstance(rid, str) and rid and (other := by_id.get(rid)) is not None:
            why = f"run_id {rid} is also the run_id of the record's run {other}"
        else:
            continue
        out.append(Failure(RULE, b.file, f"{why}: a run is either a run of the record or a baseline run"))
    return out
