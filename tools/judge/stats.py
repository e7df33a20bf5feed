"""Statistics of records, from scipy.stats (RULES.md: use a maintained library, never hand-rolled)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def finite_or_none(x: float | None) -> float | None:
    """``x`` if it is a finite number, else None (JSON has no NaN)."""
    return x if x is not None and math.isfinite(x) else None


def mean(xs: Sequence[float]) -> float | None:
    return math.fsum(xs) / len(xs) if xs else None


def std(xs: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1); None for fewer than two values."""
    if len(xs) < 2:
        return None
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def p_below_target(losses: Sequence[float], target: float) -> float | None:
    """One-sided one-sample t-test of "the mean final val loss is below ``target``"; None under 2 runs.

    NaN when the test is undefined, and the caller must not read NaN as a pass: when a loss is not
    finite, and when every loss is the same number. scipy returns p = 0 for equal losses below the
    target (t = -inf), which would let one run's number, written three times, pass: zero variance is
    no evidence of anything but a copy.
    """
    if len(losses) < 2:
        return None
    if not all(math.isfinite(x) for x in losses) or max(losses) == min(losses):
        return math.nan
    from scipy import stats  # imported here: keeps `import tools` light

    return float(stats.ttest_1samp(list(losses), target, alternative="less").pvalue)


@dataclass(frozen=True)
class Sample:
    """One side of a comparison: how many values, their mean and sample standard deviation (ddof=1)."""

    n: int
    mean: float | None  # None without values
    sd: float | None  # None under two values

    @classmethod
    def of(cls, xs: Sequence[float]) -> Sample:
        return cls(len(xs), mean(xs), std(xs))

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "mean": finite_or_none(self.mean), "sd": finite_or_none(self.sd)}


@dataclass(frozen=True)
class WelchTest:
    """Welch's t-test (unequal variances) of a candidate's values against a reference's, on one metric.

    Every number is of candidate - reference: ``difference`` and ``t`` are negative when the candidate's
    mean is lower. ``p_two_sided`` tests "the means differ", ``p_lower`` "the candidate's mean is lower"
    (scipy.stats.ttest_ind(candidate, reference, equal_var=False, alternative="less")). The test needs two
    values on each side and some variance: otherwise t, df and both p-values are None, never a guess.
    """

    metric: str  # "train_time_ms" or "val_loss"
    reference: Sample
    candidate: Sample
    difference: float | None  # candidate.mean - reference.mean
    t: float | None
    df: float | None
    p_two_sided: float | None
    p_lower: float | None

    @property
    def computable(self) -> bool:
        return self.p_two_sided is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "reference": self.reference.to_json(),
            "candidate": self.candidate.to_json(),
            "difference": finite_or_none(self.difference),
            "t": self.t,
            "df": self.df,
            "p_two_sided": self.p_two_sided,
            "p_lower": self.p_lower,
        }


def welch_test(metric: str, reference: Sequence[float], candidate: Sequence[float]) -> WelchTest:
    ref, cand = Sample.of(reference), Sample.of(candidate)
    diff = None if ref.mean is None or cand.mean is None else cand.mean - ref.mean
    t = df = p2 = p1 = None
    if ref.n >= 2 and cand.n >= 2 and all(math.isfinite(x) for x in [*reference, *candidate]):
        from scipy import stats  # imported here: keeps `import tools` light

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero variance on both sides: NaN, reported as None
            two = stats.ttest_ind(list(candidate), list(reference), equal_var=False)
            one = stats.ttest_ind(list(candidate), list(reference), equal_var=False, alternative="less")
        t, df = finite_or_none(float(two.statistic)), finite_or_none(float(two.df))
        p2, p1 = finite_or_none(float(two.pvalue)), finite_or_none(float(one.pvalue))
        if t is None or p2 is None or p1 is None:
            t = df = p2 = p1 = None
    return WelchTest(metric, ref, cand, diff, t, df, p2, p1)


@dataclass(frozen=True)
class Comparison:
    """A candidate against a reference, on train_time and on final val loss: the one statistics object.

    ``python -m tools compare`` prints it, verify's same-node rule decides on it (candidate: a record's
    runs, reference: its baseline runs on the same node) and the leaderboard shows it (candidate: a record,
    reference: the previous record, or its same-node baseline runs).
    """

    reference: str  # what the reference is, for people: a record's name, or "baseline runs (...)"
    candidate: str
    basis: str  # BASIS_RECORDS (two records, maybe from two nodes) or BASIS_SAME_NODE
    time: WelchTest  # train_time_ms
    val_loss: WelchTest

    @property
    def speedup_pct(self) -> float | None:
        """The share of the reference's mean time that the candidate saves, in %: 100 × (ref − cand) / ref.
        Positive: the candidate is faster."""
        ref, diff = self.time.reference.mean, self.time.difference
        if ref is None or diff is None or not ref > 0:
            return None
        return finite_or_none(-100.0 * diff / ref)

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "candidate": self.candidate,
            "basis": self.basis,
            "speedup_pct": self.speedup_pct,
            "train_time_ms": self.time.to_json(),
            "val_loss": self.val_loss.to_json(),
        }


BASIS_RECORDS = "records"
BASIS_SAME_NODE = "same node"


def compare(
    reference_times_ms: Sequence[float],
    candidate_times_ms: Sequence[float],
    reference_losses: Sequence[float],
    candidate_losses: Sequence[float],
    reference: str = "A",
    candidate: str = "B",
    basis: str = BASIS_RECORDS,
) -> Comparison:
    return Comparison(
        reference,
        candidate,
        basis,
        welch_test("train_time_ms", reference_times_ms, candidate_times_ms),
        welch_test("val_loss", reference_losses, candidate_losses),
    )
