"""The leaderboard's HTML site: ``index.html`` and one page per record, from the Jinja2 templates in
tools/site/templates/ (autoescaped: every name, description and log line from a record is text, never markup).

The site is self-contained: no network request at all (the Content-Security-Policy allows only inline
styles, inline scripts and ``data:`` images), so it opens from a file as well as from GitHub Pages. The
plots are embedded as ``data:`` SVG images; the sorting and the filter are a few lines of plain JavaScript
in the page. Output is a pure function of its input: the same records give the same bytes.
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.common.text import visible
from tools.judge.history import HistoryRow, summary
from tools.judge.tracks import OFFICIAL_CLASS, TRACKS
from tools.site.board import GENERATED_NOTE, PAGES, Row, Table
from tools.site.card import Card
from tools.site.plots import History

TEMPLATES = Path(__file__).parent / "templates"
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
GENERATOR = "python -m tools leaderboard"  # every page's <meta name="generator">: how write() knows its own pages


def _visible(value: object) -> object:
    """Every ``{{ value }}`` of a template: text from records keeps its letters of every script, tabs and
    newlines, and shows other control and format characters, and those that render as nothing or as a blank
    (a Hangul filler, a variation selector), as escapes (tools/common/text.py, ``visible``): a bidirectional
    override in a name or a line of code would reorder what the reader sees, an invisible letter make two names
    look like one."""
    return visible(value) if isinstance(value, str) else value


def _num(x: float | None, spec: str, unit: str = "") -> str:
    """A number in ``spec`` with its ``unit``; "—" for none."""
    return "—" if x is None or not math.isfinite(x) else format(x, spec) + unit


def _sort_key(x: float | None) -> str:
    """A number as a table cell's sort key ("" for none: sorted last)."""
    return "" if x is None or not math.isfinite(x) else repr(float(x))


def _data_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


@functools.cache
def _env() -> Any:
    import jinja2  # imported here: keeps `import tools` light

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        finalize=_visible,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _num
    env.filters["sortkey"] = _sort_key
    env.filters["data_uri"] = _data_uri
    env.filters["ms_to_s"] = lambda ms: None if ms is None else ms / 1000
    env.globals.update(CSP=CSP, GENERATOR=GENERATOR, OFFICIAL=OFFICIAL_CLASS.label)
    return env


def render_index(
    tables: dict[str, list[Table]],
    files: dict[str, bytes],
    histories: dict[str, History],
    rules_link: str | None,
    history_link: str | None = None,
) -> str:
    """``index.html``: what the leaderboard is, jump links, a filter, then per track its history chart and one
    sortable table per hardware class."""
    tracks = []
    for name, track_tables in tables.items():
        track = TRACKS[name]
        time_plot = f"plots/{name}-record-time.svg"
        tracks.append(
            {
                "track": track,
                "tables": track_tables,
                "history": histories[name].to_json() if name in histories else None,
                "time_plot": files.get(time_plot),
                "plots": {t.slug: files.get(t.plot) for t in track_tables},
            }
        )
    hardware = sorted({t.hardware for ts in tables.values() for t in ts}, key=lambda s: (s != OFFICIAL_CLASS.label, s))
    n_records = sum(len(t.rows) for ts in tables.values() for t in ts)
    targets = sorted({t.target_val_loss for t in TRACKS.values() if t.is_record_track and t.target_val_loss})
    return str(
        _env()
        .get_template("index.html.j2")
        .render(
            tracks=tracks,
            hardware=hardware,
            n_records=n_records,
            targets=targets,
            rules_link=rules_link,
            history_link=history_link,
            note=GENERATED_NOTE.replace("`", ""),
        )
    )


def render_history(rows: Sequence[HistoryRow], page_of: dict[int, str]) -> str:
    """``history.html``: every row of the maintainers' tables beside the judge's verdict (tools/judge/history.py), each
    record linked to its page."""
    tracks = []
    for name in dict.fromkeys(r.track for r in rows):
        mine = [r for r in rows if r.track == name]
        tracks.append(
            {
                "track": TRACKS[name] if name in TRACKS else None,
                "name": name,
                "rows": [{"r": r, "page": page_of.get(id(r.verdict)) if r.verdict else None} for r in mine],
            }
        )
    return str(
        _env()
        .get_template("history.html.j2")
        .render(tracks=tracks, summary=summary(rows), rules_link=None, note=GENERATED_NOTE.replace("`", ""))
    )


def render_record(row: Row, card: Card, plot: bytes | None, rules_link: str | None) -> str:
    """A record's page (``pages/<track>/<stem>.html``): links are relative to its folder."""
    up = "../" * len(Path(row.page).parent.parts)
    return str(
        _env()
        .get_template("record.html.j2")
        .render(
            row=row,
            v=row.verdict,
            card=card,
            plot=plot,
            index=f"{up}index.html",
            rules_link=f"{up}{rules_link}" if rules_link else None,
            note=GENERATED_NOTE.replace("`", ""),
            pages=PAGES,
        )
    )
