"""Leaderboard plots with matplotlib, as SVG bytes that are identical every time they are drawn.

Each figure is drawn from plain data (``Curve``, ``HistoryPoint``: what tools/site/board.py reads from the
verdicts), so that ``draw_all`` can draw many of them on every core and the numbers a chart shows can be
tested without reading an SVG (``history``).

Determinism: the Agg backend, a fixed ``svg.hashsalt`` (matplotlib otherwise salts element ids at
random), no ``Date`` metadata, a fixed ``Creator``, and glyphs drawn as paths (no font lookup
differences between machines with the same matplotlib). Which process draws a figure does not matter.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import io
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.common import cache
from tools.common.progress import progress, usable_cpus
from tools.common.text import printable
from tools.judge.tracks import OFFICIAL_CLASS

# Values outside these ranges are not a training run's (a log is text its submitter wrote): such points are
# left out of the plots, whose axes would otherwise span 1e308 or fail to draw.
LOSS_RANGE = (0.0, 100.0)
SECONDS_RANGE = (0.0, 1e7)  # ~4 months
_MAX_LABEL = 80
_MAX_TITLE = 130  # characters of a title: a figure 8 inches wide holds about this many at 9 points
_MAX_LEGEND_LABEL = 40  # a legend beside the axes has room for this many characters
# Below this many figures, starting worker processes (each imports matplotlib) costs more than it saves.
_PARALLEL_MIN_FIGURES = 16
# Up to this many records an overview plot names each in its legend; above, a colour bar shows their dates.
MAX_LEGEND_ENTRIES = 12
# The history chart's y-range spans the valid records' times with this factor of room on either side.
_Y_ROOM = 1.12


def label(text: str, limit: int = _MAX_LABEL) -> str:
    """A name from a record as a plot label: one printable line, not too long for a legend or a title."""
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plausible(x: float | None, bounds: tuple[float, float], positive: bool = False) -> bool:
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


def _plain_log_axis(axis: Any) -> None:
    """Ticks of a log axis as plain numbers (1, 2, 5, 10, ...): matplotlib's default labels are math text,
    which _STYLE turns off (names from records must never be parsed as TeX), so they would show as source."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 5.0, 7.0)))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _to_svg(fig: Any, title: str, right: float = 0.98) -> bytes:
    buf = io.BytesIO()
    # The title is the figure's, centred over the whole width: over the axes alone, a long one was clipped
    # when a legend beside them made the axes narrow.
    fig.suptitle(label(title, _MAX_TITLE), y=0.985, fontsize=9)
    # Fixed margins rather than bbox_inches="tight", which draws every figure twice (40% slower); ``right``
    # leaves room for a legend or colour bar outside the axes.
    fig.subplots_adjust(left=0.09, right=right, top=0.91, bottom=0.14)
    fig.savefig(buf, format="svg", metadata=_METADATA)
    _pyplot().close(fig)
    return buf.getvalue()


# --- record time by date --------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPoint:
    """One record on the history chart."""

    record: str
    date: str  # YYYY-MM-DD
    minutes: float  # mean training time
    hardware: str
    # "new" (a new record), "valid" (valid, not faster), "accepted" (by the maintainers, evidence incomplete),
    # "incomplete", "failed", or "table" (a row of the maintainers' table with no log in the repository)
    status: str
    holds: bool | None = None  # on the staircase: held its class (default: status == "new")

    @property
    def on_staircase(self) -> bool:
        return self.status == "new" if self.holds is None else self.holds


@dataclass(frozen=True)
class HistoryClass:
    hardware: str
    steps: list[tuple[str, float]]  # the staircase's corners (date, minutes), in date order
    points: list[HistoryPoint]  # every record of the class, in date order
    off_scale: list[HistoryPoint]  # the points outside the y-range, drawn at its edge


@dataclass(frozen=True)
class History:
    """What the history chart shows: per hardware class, the staircase of new records and every point."""

    classes: list[HistoryClass]
    y_range: tuple[float, float] | None  # minutes; set by the valid records (None without any record)
    last_date: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "y_range": list(self.y_range) if self.y_range else None,
            "last_date": self.last_date,
            "classes": [
                {
                    "hardware": c.hardware,
                    "steps": [[d, round(m, 6)] for d, m in c.steps],
                    "points": [
                        {
                            "record": p.record,
                            "date": p.date,
                            "minutes": round(p.minutes, 6),
                            "status": p.status,
                            "holds": p.on_staircase,
                            "off_scale": p in c.off_scale,
                        }
                        for p in c.points
                    ],
                }
                for c in self.classes
            ],
        }


def history(points: Sequence[HistoryPoint]) -> History:
    """The history chart's data, from the records' own dates.

    New records of a class form a staircase in date order: each holds its level from its own date to the
    next new record's date, and the last one to the latest date on the chart. The y-range spans the valid
    records (new or not); a record outside it (a failed outlier, e.g. a 500-minute run) is drawn at the edge
    and listed in ``off_scale`` rather than stretching the axis. Points in a class keep the caller's order
    for equal dates (the ledger's order)."""
    shown = [p for p in points if plausible(p.minutes * 60, SECONDS_RANGE, positive=True) and _is_date(p.date)]
    if not shown:
        return History([], None, None)
    last = max(p.date for p in shown)
    # The y-range spans the staircase (the records that held their class) and the valid records within a factor of
    # 2 of it; a valid run far off it (a 1B model trained for 7 hours) is drawn at the edge, as a failed outlier is.
    held = [p.minutes for p in shown if p.on_staircase]
    valid = [p.minutes for p in shown if p.status not in ("failed", "incomplete", "table")]
    if held:
        lo, hi = min(held) / 2, max(held) * 2
        valid = [m for m in valid if lo <= m <= hi] or held
    valid = valid or [p.minutes for p in shown]
    y_range = (min(valid) / _Y_ROOM, max(valid) * _Y_ROOM)
    classes = []
    for hw in sorted({p.hardware for p in shown}, key=class_order):
        mine = sorted((p for p in shown if p.hardware == hw), key=lambda p: p.date)  # stable: ledger order kept
        new = [p for p in mine if p.on_staircase]
        steps = [(p.date, p.minutes) for p in new]
        if steps and steps[-1][0] < last:
            steps.append((last, steps[-1][1]))  # the holder's level runs to the chart's last date
        off = [p for p in mine if not y_range[0] <= p.minutes <= y_range[1]]
        classes.append(HistoryClass(hw, steps, mine, off))
    return History(classes, y_range, last)


def _is_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def record_times(track_title: str, points: Sequence[HistoryPoint]) -> bytes:
    """Mean record time (log scale) over date, one colour per hardware class; new records as a staircase.

    The legend names each class once (its colour) and each kind of mark once, beside the axes: inside them
    it hid the newest records, which land at the right."""
    data = history(points)
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(10, 4.4))
        colors = plt.get_cmap("tab10")
        kinds = {  # status: (marker, filled, alpha, legend text)
            "new": ("o", True, 1.0, "new record (the staircase)"),
            "accepted": ("D", False, 1.0, "accepted upstream, evidence incomplete"),
            "valid": ("o", False, 1.0, "valid, not faster"),
            "table": ("s", False, 0.6, "in the maintainers' table only (no log)"),
            "incomplete": ("x", True, 0.3, "evidence incomplete"),
            "failed": ("x", True, 0.5, "failed a rule"),
        }
        seen: set[str] = set()
        n_off = 0
        for ci, c in enumerate(data.classes):
            color = colors(ci % 10)
            ax.plot([], [], color=color, lw=2, label=label(c.hardware))
            if c.steps:
                ax.step([_date(d) for d, _ in c.steps], [m for _, m in c.steps], where="post", color=color, lw=1.5)
            inside = [p for p in c.points if p not in c.off_scale]
            for status, (marker, filled, alpha, _) in kinds.items():
                pts = [p for p in inside if p.status == status]
                if pts:
                    seen.add(status)
                    ax.plot(
                        [_date(p.date) for p in pts],
                        [p.minutes for p in pts],
                        ls="none",
                        marker=marker,
                        ms=4,
                        mfc=color if filled else "none",
                        color=color,
                        alpha=alpha,
                    )
            assert data.y_range is not None
            lo, hi = data.y_range
            for edge, marker, pts in (
                (hi, "^", [p for p in c.off_scale if p.minutes > hi]),
                (lo, "v", [p for p in c.off_scale if p.minutes < lo]),
            ):
                if pts:
                    n_off += len(pts)
                    ax.plot(
                        [_date(p.date) for p in pts],
                        [edge] * len(pts),
                        ls="none",
                        marker=marker,
                        ms=5,
                        color=color,
                        alpha=0.5,
                        clip_on=False,
                    )
        for status, (marker, filled, _, text) in kinds.items():
            if status in seen:
                ax.plot([], [], ls="none", marker=marker, color="0.3", mfc="0.3" if filled else "none", label=text)
        if n_off:
            ax.plot([], [], ls="none", marker="^", color="0.3", alpha=0.5, label=f"{n_off} off the scale, at its edge")
        if data.y_range is not None:
            ax.set_yscale("log")
            _plain_log_axis(ax.yaxis)
            ax.set_ylim(*data.y_range)
        ax.set_ylabel("mean training time (minutes, log scale)")
        if data.classes:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.autofmt_xdate(bottom=0.14)
        return _to_svg(fig, f"{track_title}: record time by date", right=0.76)


# --- val loss curves ------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One val-loss curve: (training time in s, val loss) points; ``group`` picks its colour and legend line."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    group: str  # "record", "baseline", or a record's date (an overview: colour by date)
    name: str = ""  # what the curve is (a record's name in an overview)


@dataclass(frozen=True)
class CurvesFigure:
    title: str
    target: float | None
    curves: list[Curve]
    overview: bool  # one median run per record, log time axis, colour by date
    legend: dict[str, str] = field(default_factory=dict)  # per-record figure: group -> legend text


def curve_points(val_curve: Sequence[Any], log_x: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A log's val curve as plottable (seconds, loss) points: implausible values are left out (they fail a rule;
    drawn, they would set the axes), and time 0 on a log axis."""
    pts = [
        (p.train_time_ms / 1000, p.val_loss)
        for p in val_curve
        if p.train_time_ms is not None
        and plausible(p.train_time_ms / 1000, SECONDS_RANGE, positive=log_x)
        and plausible(p.val_loss, LOSS_RANGE)
    ]
    return tuple(x for x, _ in pts), tuple(y for _, y in pts)


def val_curves(fig_data: CurvesFigure) -> bytes:
    """Val loss vs training time: a record's runs over its baseline's, or one median run per record."""
    plt = _pyplot()
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(8, 4.2))
        curves = [c for c in fig_data.curves if c.xs]
        lows = [min(c.ys) for c in curves]
        right = 0.98
        if fig_data.overview:
            right = _draw_overview(plt, fig, ax, curves)
        else:
            blues = plt.get_cmap("Blues")
            mine = [c for c in curves if c.group == "record"]
            for i, c in enumerate(mine):
                ax.plot(c.xs, c.ys, lw=1, color=blues(0.5 + 0.45 * i / max(len(mine) - 1, 1)), alpha=0.9)
            for c in curves:
                if c.group == "baseline":
                    ax.plot(c.xs, c.ys, lw=1, color="0.55", alpha=0.7, ls="-")
            # One legend line per group, whatever the number of runs (each run is named in the page's table).
            for group, color in (("record", blues(0.8)), ("baseline", "0.55")):
                if group in fig_data.legend and any(c.group == group for c in curves):
                    ax.plot([], [], lw=1.5, color=color, label=label(fig_data.legend[group]))
        target = fig_data.target
        if target is not None:
            ax.axhline(target, color="crimson", ls="--", lw=1, label=f"target {target}")
        if lows:
            low = min(lows + ([target] if target is not None else []))
            ax.set_ylim(low - 0.05, max(low + 1.2, (target or low) + 1.0))
        if fig_data.overview:  # records span 40x in time; one record's runs do not
            ax.set_xscale("log")
            _plain_log_axis(ax.xaxis)
        ax.set_xlabel("training time (s, log scale)" if fig_data.overview else "training time (s)")
        ax.set_ylabel("val loss")
        if fig_data.overview and len(curves) <= MAX_LEGEND_ENTRIES:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        else:
            ax.legend(fontsize=7, loc="upper right")
        return _to_svg(fig, fig_data.title, right=right)


def _draw_overview(plt: Any, fig: Any, ax: Any, curves: Sequence[Curve]) -> float:
    """One curve per record, coloured from the oldest (dark) to the newest (yellow): named in a legend beside
    the axes up to MAX_LEGEND_ENTRIES records, else a colour bar labelled with dates. Returns the axes' right."""
    cmap = plt.get_cmap("viridis")
    n = len(curves)
    for i, c in enumerate(curves):
        ax.plot(
            c.xs,
            c.ys,
            lw=1,
            color=cmap(i / max(n - 1, 1)),
            alpha=0.85,
            label=label(c.name)[:_MAX_LEGEND_LABEL] if n <= MAX_LEGEND_ENTRIES else None,
        )
    if n <= MAX_LEGEND_ENTRIES:
        return 0.66
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = fig.add_axes((0.88, 0.14, 0.018, 0.78))
    bar = fig.colorbar(ScalarMappable(Normalize(0, n - 1), cmap), cax=cax)
    ticks = sorted({0, (n - 1) // 2, n - 1})
    bar.set_ticks(ticks)
    bar.set_ticklabels([printable(curves[i].group) for i in ticks])
    bar.set_label("record date (oldest to newest)")
    return 0.84


# --- drawing many -----------------------------------------------------------------------------

Figure = tuple[Callable[..., bytes], tuple[Any, ...]]


def _draw(job: Figure) -> bytes:
    fn, args = job
    return fn(*args)


def draw_all(jobs: dict[str, Figure], workers: int | None = None) -> dict[str, bytes]:
    """``{name: SVG bytes}`` for ``{name: (function, arguments)}``, on every core when there are many.

    A figure is a pure function of its arguments (plain frozen data: tuples of floats, strings), so its SVG is kept
    in the tools' cache (tools/common/cache.py) under the sha256 of the function's name and the arguments' repr, salted with
    this module and matplotlib's version: regenerating a leaderboard redraws only the figures whose data changed."""
    store = cache.Store("plots", _plots_salt())
    keys = {k: _figure_key(job) for k, job in jobs.items()}
    done: dict[str, bytes] = {}
    for name, key in keys.items():
        svg = store.read(key, ".svg")
        if svg is not None and svg.startswith(b"<?xml") and CREATOR.encode() in svg[:4096]:
            done[name] = svg
    names = [k for k in jobs if k not in done]
    n = workers if workers is not None else usable_cpus()
    if n <= 1 or len(names) < _PARALLEL_MIN_FIGURES:
        drawn = {k: _draw(jobs[k]) for k in progress(names, "drawing plots", "plots")}
    else:
        # Draw the first figure here: forked workers then share matplotlib, its fonts and its glyph caches
        # instead of each loading them again (measured: 4.6 s -> 3.7 s for the public speedrun's 79 records).
        first = _draw(jobs[names[0]])
        with ProcessPoolExecutor(max_workers=n) as pool:
            rest = pool.map(_draw, [jobs[k] for k in names[1:]], chunksize=4)
            drawn = dict(zip(names, [first, *progress(rest, "drawing plots", "plots", len(names) - 1)], strict=True))
    for name, svg in drawn.items():
        store.write(keys[name], ".svg", svg)
    return {k: done[k] if k in done else drawn[k] for k in jobs}


def _figure_key(job: Figure) -> str:
    fn, args = job
    return hashlib.sha256(f"{fn.__module__}.{fn.__qualname__}{args!r}".encode("utf-8", "surrogateescape")).hexdigest()


@functools.cache
def _plots_salt() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        mpl = version("matplotlib")
    except PackageNotFoundError:
        mpl = "unknown"
    return hashlib.sha256(f"{cache.salt_of([Path(__file__)])} matplotlib {mpl}".encode()).hexdigest()


def _date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def class_order(label: str) -> tuple[int, str]:
    return (0 if label == OFFICIAL_CLASS.label else 1, label)
