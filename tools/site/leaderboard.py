"""Regenerate ``leaderboard/`` from the logs under ``records/``: README.md, leaderboard.csv, an HTML site
(index.html and one page per record under pages/), plots.

The leaderboard is generated, never edited (CI checks it with ``python -m tools check``). What it shows is
computed once (tools/site/board.py: tables, rows, why a record failed) and rendered three ways: README.md for
GitHub, leaderboard.csv for a spreadsheet, the HTML site for a browser (tools/site/html.py, tools/site/card.py).
"Δ vs previous" is the change in mean time against the record each one was compared with (the record that
held its class before it); "same node" is the speed-up a record measured against its same-node baseline
runs, and the status names the rule that decided "new record" (tools/judge/verify.py). Every number of a
comparison comes from one ``tools.judge.stats.Comparison``, the object ``python -m tools compare`` prints. A
record that maintainers reproduced (a valid reproduced.json that covers its logs as they are) is marked.

Output is a pure function of the records: the same records give the same bytes. Links are written
relative to the output folder, so a leaderboard generated for ``leaderboard/`` resolves in place.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

from tools.common.progress import progress
from tools.common.text import csv_cell, markdown_text, printable
from tools.judge import history
from tools.judge.ledger import Ledger
from tools.judge.records import discover, files_under, refuse_links
from tools.judge.rules import Run
from tools.judge.tracks import OFFICIAL_CLASS, TRACKS
from tools.judge.upstream import Resolved
from tools.judge.verify import Verdict, upstream_rows, verify_records
from tools.site import board, card, plots
from tools.site import html as html_page
from tools.site.board import GENERATED_NOTE, PAGES, Row, Table, build_tables, unique_slugs

__all__ = ["CSV_COLUMNS", "GENERATED_NOTE", "Row", "Table", "build", "build_tables", "unique_slugs", "write"]

HISTORY_PAGE = "history.html"  # the verdicts beside the maintainers' tables (a public records folder only)
CSV_COLUMNS = (
    "track",
    "hardware",
    "rank",
    "record",
    "title",
    "date",
    "status",
    "failed_rules",
    "runs",
    "mean_time_s",
    "std_time_s",
    "delta_vs_previous_s",
    "previous_record",
    "decided_by",
    "same_node_speedup_pct",
    "same_node_p_value",
    "baseline_runs",
    "reproduced",
    "mean_val_loss",
    "p_value",
    "systems_only",
    "description",
    "what_changed",
    "authors",
    "upstream_row",
    "pull_request",
    "rules",
    "python",
    "pytorch",
    "cuda",
    "path",
    "page",
)


def history_points(rows: Sequence[Row], table_only: Sequence[Resolved] = ()) -> list[plots.HistoryPoint]:
    """The records of a track on its history chart: those with a hardware class, a date and a time, in the
    ledger's order (the chart keeps it for records of one date); a record the maintainers accepted whose logs
    carry no time at the time of its row; and ``table_only``: the maintainers' rows with no log in the
    repository, at their own time, on the official class (off the staircase)."""
    out = []
    for r in sorted(rows, key=lambda r: r.verdict.order_key):
        v = r.verdict
        t = v.time_ms
        date = _chart_date(v)
        if v.hardware is None or date is None or t is None:
            continue
        out.append(
            plots.HistoryPoint(v.record.name, date, t / 60_000, v.hardware.label, r.status_kind, v.is_new_record)
        )
    for row in table_only:
        up = row.row
        if up.date is None or up.time_s is None:
            continue
        name = f"#{up.number} {up.description}"
        out.append(plots.HistoryPoint(name, up.date, up.time_s / 60, OFFICIAL_CLASS.label, "table", holds=False))
    return out


def _chart_date(v: Verdict) -> str | None:
    """Where a record stands on the history chart: its date, or, for one the ledger placed by the maintainers'
    table (its logs carry no time and no date), the table's date."""
    landed = v.ledger.entry(v.record)
    if landed is not None and not landed.commit and v.upstream is not None and v.upstream.row.date:
        return v.upstream.row.date
    return v.record.date


def record_figure(row: Row) -> plots.CurvesFigure:
    """A record's val-loss plot: its runs over the runs it is compared with (same-node baseline runs where it
    has them, else its baseline record's)."""
    v = row.verdict
    curves = [plots.Curve(*plots.curve_points(r.log.val_curve, log_x=False), group="record") for r in v.runs]
    legend = {"record": f"{v.record.name}: {len(v.runs)} run(s)"}
    if v.same_node is not None:
        reference, what = v.baseline_runs, "same-node baseline runs"
    elif row.baseline is not None:
        reference, what = row.baseline.runs, f"{row.baseline.record.name}"
    else:
        reference, what = [], ""
    curves += [plots.Curve(*plots.curve_points(r.log.val_curve, log_x=False), group="baseline") for r in reference]
    if reference:
        legend["baseline"] = f"baseline: {what}, {len(reference)} run(s)"
    title = f"{v.record.name}: val loss of its runs" + (" and its baseline's" if reference else "")
    return plots.CurvesFigure(title, v.record.track.target_val_loss, curves, overview=False, legend=legend)


def class_figure(table: Table) -> plots.CurvesFigure | None:
    """The val-loss overview of a hardware class: the median run of each valid record, oldest to newest."""
    valid = sorted(
        (r.verdict for r in table.rows if r.verdict.valid), key=lambda v: (v.record.date or "", v.record.name)
    )
    if not valid:
        return None
    curves = []
    for v in valid:
        xs, ys = plots.curve_points(_median_run(v).log.val_curve, log_x=True)
        curves.append(plots.Curve(xs, ys, group=v.record.date or "", name=v.record.name))
    return plots.CurvesFigure(
        f"{table.track.name}, {table.hardware}: val loss of each valid record (median run)",
        table.track.target_val_loss,
        curves,
        overview=True,
    )


def _median_run(v: Verdict) -> Run:
    """The run whose final time is the median of the record's (the record's typical curve)."""
    timed = sorted((r for r in v.runs if r.log.train_time_ms is not None), key=lambda r: (r.log.train_time_ms, r.file))
    return timed[(len(timed) - 1) // 2] if timed else v.runs[0]


def build(
    records_root: Path,
    out_dir: Path,
    known_shards: dict[str, str] | None = None,
    ledger: Ledger | None = None,
    verdicts: Sequence[Verdict] | None = None,
) -> dict[str, bytes]:
    """Every file of the leaderboard, ``{path relative to out_dir: bytes}``; writes nothing.

    ``verdicts``: the records already verified (``python -m tools check`` verifies each record once);
    otherwise every record under ``records_root`` is verified here, in the order of ``ledger`` (default: the
    git history of the repository they sit in). ``ValueError`` when records_root or out_dir holds a symbolic
    link (tools.judge.records.refuse_links)."""
    refuse_links(out_dir)
    records = discover(records_root) if verdicts is None else [v.record for v in verdicts]
    upstream = upstream_rows(records)  # the maintainers' tables beside a public records folder; [] for ours
    if verdicts is None:
        verdicts = verify_records(records, known_shards, ledger, table=upstream)
    owned = {id(v.upstream) for v in verdicts if v.upstream is not None}
    table_only = [r for r in upstream if id(r) not in owned and not r.row.retiming]
    tables = build_tables(verdicts, out_dir)
    jobs: dict[str, plots.Figure] = {}
    histories: dict[str, plots.History] = {}
    for track_name, track_tables in tables.items():
        rows = [r for t in track_tables for r in t.rows]
        if not rows:
            continue
        points = history_points(rows, [r for r in table_only if r.row.track == track_name])
        histories[track_name] = plots.history(points)
        jobs[f"{board.PLOTS}/{track_name}-record-time.svg"] = (plots.record_times, (track_name, points))
        for t in track_tables:
            overview = class_figure(t)
            if overview is not None:
                jobs[t.plot] = (plots.val_curves, (overview,))
            for r in t.rows:
                jobs[r.plot] = (plots.val_curves, (record_figure(r),))
    files = plots.draw_all(jobs)
    rules = records_root / "README.md"
    rules_link = board.rel(rules, out_dir) if rules.is_file() else None
    all_rows = [r for ts in tables.values() for t in ts for r in t.rows]
    for r in progress(all_rows, "writing record pages", "pages"):
        page_dir = out_dir / Path(r.page).parent
        files[r.page] = html_page.render_record(r, card.card(r, page_dir), files.get(r.plot), rules_link).encode(
            "utf-8"
        )
    history_rows = history.compare_with_table(verdicts, upstream) if upstream else []
    page_of = {id(r.verdict): r.page for ts in tables.values() for t in ts for r in t.rows}
    if history_rows:
        files[HISTORY_PAGE] = html_page.render_history(history_rows, page_of).encode("utf-8")
    files["README.md"] = render_markdown(tables, files, rules_link).encode("utf-8")
    files["leaderboard.csv"] = render_csv(tables).encode("utf-8")
    files["index.html"] = html_page.render_index(
        tables, files, histories, rules_link, HISTORY_PAGE if history_rows else None
    ).encode("utf-8")
    return dict(sorted(files.items()))


# --- README.md ------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return markdown_text(text)


def _num(x: float | None, spec: str, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:+{spec}}" if signed else f"{x:{spec}}"


def fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    return f"{seconds:.1f} s" if seconds < 600 else f"{seconds / 60:.2f} min"


def render_markdown(tables: dict[str, list[Table]], files: dict[str, bytes], rules_link: str | None) -> str:
    rules = f"[records/README.md]({rules_link})" if rules_link else "records/README.md"
    out = [
        "# Leaderboard",
        "",
        GENERATED_NOTE,
        "",
        "Times are the mean `train_time` of a record's runs; a record must reach the track's target in mean "
        f"val loss with p < 0.01 over at least 3 runs (rules: {rules}). "
        "Hardware classes are read from nvidia-smi in the logs and never mixed: "
        f"{OFFICIAL_CLASS.label} is the official class.",
        "",
        "Times measured on two nodes differ by several percent, so a record may carry baseline runs: the previous "
        "record's code, run on the node of the record's own runs. *same node* is its speed-up against them (one-sided Welch t-test); "
        "the status says which rule decided *new record*: the same-node baseline, or the absolute time. "
        "*reproduced*: maintainers ran the record's logs again (docs/reproduce.md); when and on what is listed "
        "under the table.",
        "",
    ]
    for track_name, track_tables in tables.items():
        track = TRACKS[track_name]
        out += [f"## {track.name}: {track.description}", ""]
        if not track_tables:
            out += [f"No records yet. Be the first: see {rules} for how to submit.", ""]
            continue
        time_plot = f"plots/{track.name}-record-time.svg"
        if time_plot in files:
            out += [f"![record time by date, {track.name}]({time_plot})", ""]
        for t in track_tables:
            official = " (official)" if t.hardware == OFFICIAL_CLASS.label else ""
            out += [f"### {markdown_text(t.hardware)}{official}", ""]
            out += [
                "| rank | time | Δ vs previous | same node | record | what changed | authors | date | runs "
                "| mean val loss | p-value | status | logs |",
                "| ---: | ---: | ---: | ---: | --- | --- | --- | --- | ---: | ---: | ---: | --- | --- |",
            ]
            for r in t.rows:
                v = r.verdict
                logs = " ".join(f"[{i}]({link})" for i, link in enumerate(r.log_links, 1))
                mark = " · reproduced ✓" if r.reproduced_note else ""
                out.append(
                    f"| {r.rank or '—'} | {fmt_time(r.time_s)} | {_num(r.delta_s, '.1f', signed=True)}"
                    f"{' s' if r.delta_s is not None else ''} | {r.same_node_text} | [{_cell(v.record.name)}]({r.link}) "
                    f"([plot]({r.plot})) | {_cell(r.what_changed)} | {_cell(r.authors or '—')} | {v.record.date or '—'} | "
                    f"{len(v.runs)} | "
                    f"{_num(v.mean_val_loss, '.4f')} | {_num(v.p_value, '.2g')} | {r.status}{mark} | {logs} |"
                )
            notes = [
                f"- {_cell(r.verdict.record.name)}: {_cell(r.reproduced_note)}" for r in t.rows if r.reproduced_note
            ]
            if notes:
                out += ["", "Reproduced:", "", *notes]
            if t.plot in files:
                out += ["", f"![val loss vs training time, {markdown_text(t.hardware)}]({t.plot})"]
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


# --- leaderboard.csv ------------------------------------------------------------------------


def render_csv(tables: dict[str, list[Table]]) -> str:
    import pandas as pd  # imported here: keeps `import tools` light

    records = []
    for track_tables in tables.values():
        for t in track_tables:
            for r in t.rows:
                v = r.verdict
                records.append(
                    {
                        "track": t.track.name,
                        "hardware": t.hardware,
                        "rank": r.rank,
                        "record": v.record.name,
                        "title": v.record.title,
                        "date": v.record.date,
                        "status": v.status_kind,
                        "failed_rules": " ".join(v.failed_rules),
                        "runs": len(v.runs),
                        "mean_time_s": _round(r.time_s, 3),
                        "std_time_s": _round(r.std_time_s, 3),
                        "delta_vs_previous_s": _round(r.delta_s, 3),
                        "previous_record": v.previous.record.name if v.previous else None,
                        "decided_by": v.decided_by,
                        "same_node_speedup_pct": _round(v.same_node.speedup_pct, 3) if v.same_node else None,
                        "same_node_p_value": _sig(v.same_node.time.p_lower) if v.same_node else None,
                        "baseline_runs": len(v.baseline_runs),
                        "reproduced": r.reproduced_note is not None,
                        "mean_val_loss": _round(v.mean_val_loss, 5),
                        "p_value": _sig(v.p_value),
                        "systems_only": bool(v.record.meta and v.record.meta.systems_only),
                        "description": v.record.meta.description if v.record.meta else "",
                        "what_changed": r.what_changed,
                        "authors": r.authors,
                        "upstream_row": r.upstream_row.number if r.upstream_row else None,
                        "pull_request": r.upstream_row.pr_url if r.upstream_row else None,
                        "rules": v.rulebook.name,
                        "python": r.software[0],
                        "pytorch": r.software[1],
                        "cuda": r.software[2],
                        "path": r.link,
                        "page": r.page,
                    }
                )
    for row in records:  # text from records (names, titles, descriptions) must not run as a formula
        for key, value in row.items():
            if isinstance(value, str):
                row[key] = csv_cell(value)
    df = pd.DataFrame.from_records(records, columns=list(CSV_COLUMNS))
    df["rank"] = df["rank"].astype("Int64")
    df["runs"] = df["runs"].astype("Int64")
    df["baseline_runs"] = df["baseline_runs"].astype("Int64")
    return str(df.to_csv(index=False, lineterminator="\n"))


def _sig(p: float | None) -> float | None:
    """A p-value to 4 significant digits."""
    return None if p is None or not math.isfinite(p) else float(f"{p:.4g}")


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, digits)


# --- writing and command line ---------------------------------------------------------------


def write(files: dict[str, bytes], out_dir: Path) -> None:
    """Write the files into ``out_dir``, each through a temporary file renamed into place, and remove the plots
    and pages of records that no longer exist: only regular ``*.svg`` files under plots/ and ``*.html`` files
    under pages/ that this generator made.

    Nothing is followed or written outside ``out_dir``: a symbolic link in it is refused (ValueError) before
    anything is written, and every path is one ``build`` made (relative, no ``..``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    refuse_links(out_dir)
    for rel in files:
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts or not parts:
            raise ValueError(f"refusing to write {rel!r}: not a path inside {out_dir}")
    for folder, suffix, mark in (
        (board.PLOTS, ".svg", plots.CREATOR),
        (PAGES, ".html", f'<meta name="generator" content="{html_page.GENERATOR}">'),
    ):
        if not (out_dir / folder).is_dir():
            continue
        for old in files_under(out_dir / folder, suffix):  # regular files only, no link followed
            rel = old.relative_to(out_dir).as_posix()
            if rel not in files and _made_here(old, mark):
                old.unlink()
    for rel, data in files.items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data:
            continue
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # a rename replaces the entry itself, never what a link points to


def _made_here(path: Path, mark: str) -> bool:
    """A file this generator wrote: plots.py stamps its Creator into each SVG's metadata, html.py its name into
    each page's <meta name="generator">, both in the first 4 KiB."""
    with path.open("rb") as f:
        return mark.encode() in f.read(4096)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records", type=Path, default=Path("records"), help="the records folder (default records/)")
    p.add_argument("--out", type=Path, default=Path("leaderboard"), help="the output folder (default leaderboard/)")


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"{args.out}: exists and is not a folder; give --out a folder (default leaderboard/)")
    files = build(args.records, args.out)
    try:
        write(files, args.out)
    except OSError as e:  # e.g. a file where a folder of the path should be, or no permission
        raise ValueError(
            f"cannot write the leaderboard to {args.out}: {e.strerror} ({e.filename}); give --out a writable folder"
        ) from e
    n_plots = sum(1 for k in files if k.endswith(".svg"))
    n_pages = sum(1 for k in files if k.startswith(f"{PAGES}/"))
    print(
        f"wrote {printable(args.out)}/README.md, leaderboard.csv, index.html, {n_pages} record pages "
        f"and {n_plots} plots"
    )
    return 0
