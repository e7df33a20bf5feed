"""Derive the tolerances of ``python -m tools reproduce`` on GPU from real logs (docs/reproduce.md).

    git clone https://github.com/KellerJordan/modded-nanogpt
    python -m tools.reproduce.tolerances modded-nanogpt/records

A reproduction re-runs a record's code with its seed on another node; on GPU the result is not
bitwise the same (non-deterministic kernels, then a chaotic optimization amplifies the difference).
How far apart two honest runs of the same code end up is measured here on the public speedrun's
logs: runs of one submission folder with the same code hash, the same number of steps and the same
GPUs are treated as repeated runs of one recipe.

- **Loss**: every pair of such runs, at every val step both logged, gives |val loss difference|.
  The tolerance of a phase of training (each tenth of the steps, and the final step) is the largest
  difference any honest pair showed there, rounded up to the printed precision (1e-4). Over the
  ~1,000-3,000 pairs of a phase, an honest reproduction exceeds that about once in that many.
- **Step 0**: a reproduction has the run's own seed, and the initial loss depends only on the
  seed and the code. The corpus shows it exactly: in every submission whose runs share one
  initialisation (the older code seeded nothing, so all started from torch's default seed), every
  run prints the same step-0 loss, also across submissions months apart. The tolerance is one
  unit of the printed precision (two runs whose losses differ in the 6th digit can round apart).
- **Time**: the largest relative difference of final ``train_time`` between two runs of one
  group (the same node, minutes apart), combined with the spread between providers: the public
  speedrun timed the same code at 80.7 s on one provider and 74.6 s on another.

Many of the newer submissions draw a seed per run, so their curves differ by seed as well as by
non-determinism: the loss tolerances are therefore an upper bound, never tighter than the data.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tools.judge.parse import ParsedLog, parse_log

PRINT_RESOLUTION = 1e-4  # val loss is printed with 4 decimals
# The public speedrun: the same record's code at 80.7 s on one provider, 74.6 s on another.
PROVIDER_TIMES_S = (80.7, 74.6)
PHASES = tuple(f"{10 * i}-{10 * (i + 1)}%" for i in range(10)) + ("final",)


def phase_of(step: int, total: int) -> str:
    """The phase of training a val step belongs to: a tenth of the steps, or the final step."""
    if step >= total:
        return "final"
    return PHASES[min(int(10 * step / total), 9)]


def round_up(x: float, unit: float) -> float:
    return round(math.ceil(x / unit - 1e-9) * unit, 10)


@dataclass
class Derivation:
    logs: int = 0
    groups: int = 0
    # per phase: the largest |val loss difference| of an honest pair, its pair count, and where
    loss_max: dict[str, float] = field(default_factory=dict)
    loss_pairs: dict[str, int] = field(default_factory=dict)
    loss_where: dict[str, str] = field(default_factory=dict)
    same_init_groups: int = 0  # groups whose runs all print the same step-0 loss
    time_max: float = 0.0  # largest relative difference of final train_time within a group
    time_pairs: int = 0
    time_where: str = ""

    @property
    def provider_spread(self) -> float:
        slow, fast = PROVIDER_TIMES_S
        return slow / fast - 1

    @property
    def loss_tolerance(self) -> dict[str, float]:
        """Per phase, the largest honest difference rounded up to the printed precision."""
        out = {"0": PRINT_RESOLUTION}
        for phase in PHASES:
            if phase in self.loss_max:
                out[phase] = round_up(self.loss_max[phase], PRINT_RESOLUTION)
        return out

    @property
    def time_tolerance(self) -> float:
        """(1 + provider spread) x (1 + within-node spread) - 1, rounded up to 0.1 %."""
        return round_up((1 + self.provider_spread) * (1 + self.time_max) - 1, 0.001)


def _groups(root: Path) -> dict[tuple[str, str, int, int, str], list[ParsedLog]]:
    groups: dict[tuple[str, str, int, int, str], list[ParsedLog]] = defaultdict(list)
    for path in sorted(root.rglob("*.txt")):
        try:
            log = parse_log(path)
        except ValueError:
            continue
        if (
            log.metrics_form != "speedrun"
            or log.code_sha256 is None
            or log.total_steps is None
            or log.final_step != log.total_steps
            or log.train_time_ms is None
            or not math.isfinite(log.train_time_ms)
        ):
            continue
        key = (str(path.parent.relative_to(root)), log.code_sha256, log.total_steps, log.num_gpus, log.gpu_name or "")
        groups[key].append(log)
    return groups


def derive(root: Path) -> Derivation:
    """The spread of repeated runs in the corpus under ``root`` (the public speedrun's records/ folder)."""
    d = Derivation()
    for (folder, _code, total, _n, _gpu), logs in _groups(root).items():
        d.logs += len(logs)
        if len(logs) < 2:
            continue
        d.groups += 1
        curves = [{p.step: p.val_loss for p in log.val_curve} for log in logs]
        if 0 in curves[0] and all(c.get(0) == curves[0][0] for c in curves):
            d.same_init_groups += 1
        for a, b in itertools.combinations(curves, 2):
            for step in sorted(set(a) & set(b)):
                diff = abs(a[step] - b[step])
                if step == 0 or not math.isfinite(diff):
                    continue
                phase = phase_of(step, total)
                d.loss_pairs[phase] = d.loss_pairs.get(phase, 0) + 1
                if diff > d.loss_max.get(phase, -1.0):
                    d.loss_max[phase], d.loss_where[phase] = diff, f"{folder} step {step}"
        for x, y in itertools.permutations(logs, 2):
            assert x.train_time_ms is not None and y.train_time_ms is not None
            d.time_pairs += 1
            rel = abs(x.train_time_ms / y.train_time_ms - 1)
            if rel > d.time_max:
                d.time_max, d.time_where = rel, folder
    return d


def report(d: Derivation) -> str:
    lines = [
        f"{d.logs} complete logs, {d.groups} groups of >= 2 runs (same folder, code, steps and GPUs); "
        f"{d.same_init_groups} groups print one step-0 loss for all their runs",
        "",
        f"{'phase':<8} {'pairs':>6} {'largest |diff|':>15} {'tolerance':>10}  where",
    ]
    tol = d.loss_tolerance
    lines.append(f"{'step 0':<8} {'':>6} {'':>15} {tol['0']:>10.4f}  printed precision: same seed, same initial loss")
    for phase in PHASES:
        if phase in d.loss_max:
            lines.append(
                f"{phase:<8} {d.loss_pairs[phase]:>6} {d.loss_max[phase]:>15.4f} {tol[phase]:>10.4f}  "
                f"{d.loss_where[phase]}"
            )
    lines += [
        "",
        f"time: largest difference within a group {100 * d.time_max:.2f} % over {d.time_pairs} ordered pairs "
        f"({d.time_where}); between providers {100 * d.provider_spread:.2f} % "
        f"({PROVIDER_TIMES_S[0]} s vs {PROVIDER_TIMES_S[1]} s)",
        f"GPU time tolerance: {100 * d.time_tolerance:.1f} %",
        "",
        "as in tools/reproduce/runner.py:",
        "GPU_LOSS_TOLERANCE = {" + ", ".join(f'"{k}": {v}' for k, v in tol.items()) + "}",
        f"GPU_TIME_TOLERANCE = {d.time_tolerance}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.reproduce.tolerances", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "records",
        type=Path,
        help="the public speedrun's records/ folder (a checkout of github.com/KellerJordan/modded-nanogpt)",
    )
    args = parser.parse_args(argv)
    if not args.records.is_dir():
        print(f"error: {args.records} is not a folder; give the public speedrun's records/ folder", file=sys.stderr)
        return 2
    d = derive(args.records)
    if not d.groups:
        print(f"error: {args.records} holds no two complete runs of the same code; nothing to derive", file=sys.stderr)
        return 2
    print(report(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
