"""Leaderboard plots with matplotlib, as SVG bytes that are identical every time they are drawn.

Determinism: the Agg backend, a fixed ``svg.hashsalt`` (matplotlib otherwise salts element ids at
random), no ``Date`` metadata, a fixed ``Creator``, and glyphs drawn as paths (no font lookup
differences between machines with the same matplotlib).
"""

from __future__ import annotations

import datetime as dt
import io
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tools.text import printable
from tools.tracks import OFFICIAL_CLASS

if TYPE_CHECKING:
    from tools.verify import Verdict

# Values outside these ranges are not a training run's (a log is text its submitter wrote): such points are
# left out of the plots, whose axes would otherwise span 1e308 or fail to draw.
_LOSS_RANGE = (0.0, 100.0)
_SECONDS_RANGE = (0.0, 1e7)  # ~4 months
_MAX_LABEL = 80


def _label(text: str) -> str:
    """A name from a record as a plot label: one printable line, not too long for the legend."""
    text = printable(text)
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def _plausible(x: float | None, bounds: tuple[float, float], positive: bool = False) -> bool:
    return x is not None and math.isfinite(x) and bounds[0] <= x <= bounds[1] and (x > 0 or not positive)


CREATOR = "python -m tools leaderboard"  # in every SVG's metadata: how leaderboard.write knows its own files
_METADATA = {"Date": None, "Creator": CREATOR}
_STYLE = {
    # Labels are names from records: "$\\x{y}$.txt" must stay text, not be parsed as TeX math (and crash).
    "text.parse_math": False,
    "text.usetex": False,
    "svg.hashsalt": "speedrun-leaderboard",
    "svg.fonttype": "path",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100,
}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _to_svg(fig: Any) -> bytes:
    buf = io.BytesIO()
    # Fixed margins rather than bbox_inches="tight", which draws every figure twice (40% slower).
    fig.subplots_adjust(left=0.09, right=0.98, top=0.92, bottom=0.14)
    fig.savefig(buf, format="svg", metadata=_METADATA)
    _pyplot().close(fig)
    return buf.getvalue()


def record_times(track_title: str, verdicts: Sequence[Verdict]) -> bytes:
    """Mean record time (log scale) over date, one colour per hardware class; new records joined by a line."""
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.2))
        classes = sorted({v.hardware.label for v in verdicts if v.hardware}, key=_class_order)
        colors = plt.get_cmap("tab10")
        for ci, label in enumerate(classes):
            color = colors(ci % 10)
            rows = [
                v
                for v in verdicts
                if v.hardware
                and v.hardware.label == label
                and v.record.date
                and v.mean_train_time_ms is not None
                and _plausible(v.mean_train_time_ms / 1000, _SECONDS_RANGE, positive=True)
            ]
            new = [v for v in rows if v.is_new_record]
            valid = [v for v in rows if v.valid and not v.is_new_record]
            invalid = [v for v in rows if not v.valid]
            if new:
                ax.step(
                    [_date(v) for v in new],
                    [_minutes(v) for v in new],
                    where="post",
                    color=color,
                    lw=1.5,
                    marker="o",
                    ms=4,
                    label=f"{_label(label)}: new record",
                )
            if valid:
                ax.plot(
                    [_date(v) for v in valid],
                    [_minutes(v) for v in valid],
                    ls="none",
                    marker="o",
                    ms=4,
                    mfc="none",
                    color=color,
                    label=f"{_label(label)}: valid, not faster",
                )
            if invalid:
                ax.plot(
                    [_date(v) for v in invalid],
                    [_minutes(v) for v in invalid],
                    ls="none",
                    marker="x",
                    ms=4,
                    color=color,
                    alpha=0.5,
                    label=f"{_label(label)}: failed a rule",
                )
        ax.set_yscale("log")
        ax.set_ylabel("mean training time (minutes, log scale)")
        ax.set_title(f"{printable(track_title)}: record time by date")
        ax.legend(fontsize=7, loc="upper right")
        fig.autofmt_xdate(bottom=0.14)
        return _to_svg(fig)


def val_curves(title: str, target: float | None, verdicts: Sequence[Verdict], per_run: bool) -> bytes:
    """Val loss vs training time: every run of one record (``per_run``) or one median run per record."""
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.2))
        cmap = plt.get_cmap("viridis")
        lows: list[float] = []
        n = len(verdicts)
        for i, v in enumerate(verdicts):
            runs = v.runs if per_run else [_median_run(v)]
            for j, run in enumerate(runs):
                pts = [
                    (p.train_time_ms / 1000, p.val_loss)
                    for p in run.log.val_curve
                    if p.train_time_ms is not None
                    and _plausible(p.train_time_ms / 1000, _SECONDS_RANGE, positive=not per_run)  # log x: > 0
                    and _plausible(p.val_loss, _LOSS_RANGE)
                ]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                lows.append(min(ys))
                color = cmap(j / max(len(runs) - 1, 1) if per_run else i / max(n - 1, 1))
                label = (
                    _label(run.path.name)
                    if per_run and len(runs) <= 12
                    else (_label(v.record.name) if not per_run and n <= 12 else None)
                )
                ax.plot(xs, ys, lw=1, color=color, alpha=0.85, label=label)
        if target is not None:
            ax.axhline(target, color="crimson", ls="--", lw=1, label=f"target {target}")
        if lows:
            low = min(lows + ([target] if target is not None else []))
            ax.set_ylim(low - 0.05, max(low + 1.2, (target or low) + 1.0))
        if not per_run:  # records span 40x in time; one record's runs do not
            ax.set_xscale("log")
        ax.set_xlabel("training time (s, log scale)" if not per_run else "training time (s)")
        ax.set_ylabel("val loss")
        title = printable(title)
        ax.set_title(title if per_run or n <= 12 else f"{title}\ncolour: oldest (dark) to newest (yellow) record")
        ax.legend(fontsize=6, loc="upper right")
        return _to_svg(fig)


def _median_run(v: Verdict) -> Any:
    """The run whose final time is the median of the record's (the record's typical curve)."""
    timed = sorted((r for r in v.runs if r.log.train_time_ms is not None), key=lambda r: (r.log.train_time_ms, r.file))
    return timed[(len(timed) - 1) // 2] if timed else v.runs[0]


def _date(v: Verdict) -> dt.date:
    return dt.date.fromisoformat(v.record.date or "1970-01-01")


def _minutes(v: Verdict) -> float:
    return (v.mean_train_time_ms or 0.0) / 60_000


def _class_order(label: str) -> tuple[int, str]:
    return (0 if label == OFFICIAL_CLASS.label else 1, label)
