"""``leaderboard/index.html``: one self-contained page (no network request), sortable tables, the plots.

Self-contained means: CSS and JavaScript inline, plots inline as ``data:`` images, and a
Content-Security-Policy that forbids the page to fetch anything, so a future edit cannot quietly add a
request. Everything that comes from a record (names, descriptions, paths) is HTML-escaped: a README
is untrusted input.
"""

from __future__ import annotations

import base64
import html
from typing import TYPE_CHECKING

from tools.tracks import OFFICIAL_CLASS, TRACKS

if TYPE_CHECKING:
    from tools.leaderboard import Row, Table

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0 1.5em; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }
th button { font: inherit; font-weight: 600; background: none; border: 0; padding: 0; cursor: pointer; }
th[aria-sort="ascending"] button::after { content: " \\25B2"; }
th[aria-sort="descending"] button::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed { color: #777; }
tr.new td.status { color: #0a6; font-weight: 600; }
img.plot { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
.note { color: #555; }
abbr.reproduced { color: #0a6; text-decoration: none; white-space: nowrap; }
"""

# Sort a table by the clicked column: numbers by value (empty cells last), text alphabetically.
_JS = """
"use strict";
document.querySelectorAll("table.sortable").forEach(function (table) {
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  headers.forEach(function (th, col) {
    th.querySelector("button").addEventListener("click", function () {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var numeric = th.dataset.type === "num";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var text = row.cells[col].dataset.sort;
        if (!numeric) { return text; }
        return text === "" ? null : parseFloat(text);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === y) { return 0; }
        if (x === null) { return 1; }
        if (y === null) { return -1; }
        var order = numeric ? (x < y ? -1 : 1) : String(x).localeCompare(String(y));
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

_COLUMNS = (
    ("rank", "num"),
    ("time (s)", "num"),
    ("Δ vs previous (s)", "num"),
    ("same node", "num"),
    ("record", "text"),
    ("description", "text"),
    ("date", "text"),
    ("runs", "num"),
    ("mean val loss", "num"),
    ("p-value", "num"),
    ("status", "text"),
    ("logs", "text"),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(x: float | None, spec: str) -> tuple[str, str]:
    """(sort key, shown text) for a number that may be missing."""
    if x is None or x != x:
        return "", "—"
    return repr(float(x)), f"{x:{spec}}"


def _img(svg: bytes, alt: str) -> str:
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/svg+xml;base64,{base64.b64encode(svg).decode("ascii")}">'


def _row(r: Row) -> str:
    v = r.verdict
    cells = []

    def cell(sort: str, shown: str, num: bool = False, cls: str = "") -> None:
        classes = " ".join(c for c in ("num" if num else "", cls) if c)
        attr = f' class="{classes}"' if classes else ""
        cells.append(f'<td{attr} data-sort="{_e(sort)}">{shown}</td>')

    cell(str(r.rank) if r.rank else "", str(r.rank) if r.rank else "—", num=True)
    sort, shown = _num(r.time_s, ".3f")
    cell(sort, _e(shown), num=True)
    sort, shown = _num(r.delta_s, "+.3f")
    cell(sort, _e(shown), num=True)
    speedup = v.same_node.speedup_pct if v.same_node else None
    cell(_num(speedup, ".3f")[0], _e(r.same_node_text), num=True)
    cell(v.record.name, f'<a href="{_e(r.link)}">{_e(v.record.name)}</a> (<a href="{_e(r.plot)}">plot</a>)')
    desc = v.record.meta.description if v.record.meta else ""
    cell(desc, _e(desc))
    cell(v.record.date or "", _e(v.record.date or "—"))
    cell(str(len(v.runs)), str(len(v.runs)), num=True)
    sort, shown = _num(v.mean_val_loss, ".4f")
    cell(sort, _e(shown), num=True)
    sort, shown = _num(v.p_value, ".2g")
    cell(sort, _e(shown), num=True)
    mark = f' <abbr class="reproduced" title="{_e(r.reproduced_note)}">reproduced ✓</abbr>' if r.reproduced_note else ""
    cell(r.status, _e(r.status) + mark, cls="status")
    cell("", " ".join(f'<a href="{_e(link)}">{i}</a>' for i, link in enumerate(r.log_links, 1)))
    cls = "new" if v.is_new_record else ("failed" if not v.valid else "valid")
    return f'<tr class="{cls}" data-record="{_e(v.record.name)}">' + "".join(cells) + "</tr>"


def render(tables: dict[str, list[Table]], files: dict[str, bytes], rules_link: str | None) -> str:
    from tools.leaderboard import GENERATED_NOTE

    rules = f'<a href="{_e(rules_link)}">records/README.md</a>' if rules_link else "records/README.md"

    body = [
        "<h1>Speedrun leaderboard</h1>",
        f'<p class="note">{_e(GENERATED_NOTE.replace("`", ""))} Rules: {rules}. Click a column header to sort.</p>',
    ]
    for track_name, track_tables in tables.items():
        track = TRACKS[track_name]
        body.append(f'<section id="{_e(track.name)}"><h2>{_e(track.name)}: {_e(track.description)}</h2>')
        if not track_tables:
            body.append(
                f'<p class="empty">No records yet. See {rules} for the rules and how to submit one.</p></section>'
            )
            continue
        time_plot = f"plots/{track.name}-record-time.svg"
        if time_plot in files:
            body.append(_img(files[time_plot], f"record time by date, {track.name}"))
        for t in track_tables:
            official = " (official)" if t.hardware == OFFICIAL_CLASS.label else ""
            body.append(f"<h3>{_e(t.hardware)}{official}</h3>")
            head = "".join(
                f'<th scope="col" data-type="{kind}"><button type="button">{_e(name)}</button></th>'
                for name, kind in _COLUMNS
            )
            rows = "\n".join(_row(r) for r in t.rows)
            body.append(
                f'<table class="sortable" id="{_e(t.slug)}" data-track="{_e(track.name)}" data-hardware="{_e(t.hardware)}">'
                f"<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody></table>"
            )
            notes = [f"{_e(r.verdict.record.name)}: {_e(r.reproduced_note)}" for r in t.rows if r.reproduced_note]
            if notes:
                body.append('<p class="note reproduced">Reproduced: ' + "; ".join(notes) + ".</p>")
            if t.plot in files:
                body.append(_img(files[t.plot], f"val loss vs training time, {t.hardware}"))
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<link rel="icon" href="data:,">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        "<title>Speedrun leaderboard</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + f"\n<script>{_JS}</script>\n</body>\n</html>\n"
    )
