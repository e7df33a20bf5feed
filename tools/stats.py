"""Statistics of records, from scipy.stats (RULES.md: use a maintained library, never hand-rolled)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass


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
class WelchResult:
    statistic: float  # t of mean(a) - mean(b), as scipy.stats.ttest_ind(a, b) gives it
    p_value: float  # two-sided
    mean_a: float
    mean_b: float


def welch(a: Sequence[float], b: Sequence[float]) -> WelchResult | None:
    """Welch's t-test (unequal variances), two-sided; None unless both samples have 2+ values."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = stats.ttest_ind(list(a), list(b), equal_var=False)
    return WelchResult(float(r.statistic), float(r.pvalue), math.fsum(a) / len(a), math.fsum(b) / len(b))
