"""The maintainers' record tables of the public speedrun, read as an input.

The public repository (github.com/KellerJordan/modded-nanogpt) keeps its records in two hand-edited
Markdown tables of its ``README.md``: "## World record history" (track 1, 3.28) and "## Speedrun track 2:
GPT-2 Medium" (track 2, 2.92). Each row names a record's time, description, date, contributors, and
links to a log under ``records/`` and often to its pull request. The judge reads them to fill what a
record folder without front matter does not say (description, contributors, pull request), to know which
log the maintainers linked (its folder holds the record's runs), to show rows whose evidence is incomplete,
and to compare its own verdicts with the table. Nothing here judges a run: a row is what the table says.

- ``read_tables(readme)``: every row of every record table (``UpstreamRow``); ``parse_tables`` does the
  same on text and also lists the lines of a table that were skipped, and why.
- ``resolve(rows, records_root)``: the files each row's log links lead to in a records tree (``Resolved``).
- ``find_readme(records_root)``: the README beside a records folder, if it holds a record table.

The README is untrusted input (a pull request can edit it): it is read only up to MAX_README_BYTES, a line
that is not a row of its table is skipped (never an error), no pattern here can backtrack on a long line,
and every text is made printable (tools/common/text.py). A link is resolved only inside ``records_root``, without
following symbolic links.

The table's own shapes, all real: rows without a leading ``|``; a Log cell that holds ``[log](path)``,
``[log](path),[PR](url)``, ``none``, ``-`` or a link to a folder; descriptions with one or two Markdown
links; a ``*`` after a time, explained by a note above the table; re-timing rows that repeat the number
of the row before (three rows numbered 21); a row with no log and no date; links to folders that were
renamed since (resolved by the file's name when it is unique in its track folder).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from tools.common.text import printable
from tools.judge.records import LOG_SUFFIX, README, walk
from tools.judge.tracks import TRACKS

# The public README is ~60 KB; a file past this is not a README of record tables.
MAX_README_BYTES = 1024 * 1024
# A real row is under 500 characters; a longer line is not read as a row (skipped, with why).
MAX_ROW_CHARS = 8192
# A note above a table that explains a mark after a time is one short line.
_MAX_NOTE_LINE_CHARS = 500

TRACK_1 = "track_1_short"
TRACK_2 = "track_2_medium"
RECORD_TRACKS = (TRACK_1, TRACK_2)

# `[text](target)` or `![alt](target)`: link text without brackets, a target without spaces that may hold
# one level of balanced parentheses. Every class excludes the delimiter that follows it and every
# repetition is bounded, so a match attempt is linear in the length it scans: no backtracking blow-up.
_LINK_RE = re.compile(r"!?\[([^\[\]]{0,1000})\]\(([^()\s]{0,2000}(?:\([^()\s]{0,2000}\)[^()\s]{0,2000}){0,4})\)")
_PULL_RE = re.compile(r"https?://(?:www\.)?github\.com/[A-Za-z0-9._-]{1,100}/[A-Za-z0-9._-]{1,100}/pull/(\d{1,9})")
_TIME_RE = re.compile(r"(\d{1,9}(?:\.\d{1,9})?)\s{0,3}([A-Za-z]{1,10})(.{0,100})")
_HEADING_RE = re.compile(r" {0,3}(#{1,6})(?:[ \t]|$)")
_UNESCAPED_PIPE_RE = re.compile(r"(?<!\\)\|")
_SECONDS_PER_UNIT = {
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
}
# What a cell says when it has nothing to say.
_EMPTY_CELLS = frozenset({"", "-", "—", "none", "n/a", "na", "tbd"})


@dataclass(frozen=True)
class UpstreamRow:
    """One row of a maintainers' record table, as the table writes it (texts printable, links reduced)."""

    track: str  # "track_1_short" or "track_2_medium" (tools.judge.tracks names)
    position: int  # 0-based order of the row among the rows of its track (a second table continues the count)
    line: int  # 1-based line of the README that holds the row
    number: str  # the "#" cell as written ("21"); re-timing rows repeat the previous number
    time_text: str  # "2.997 minutes", "5.8 hours", "25.95 minutes*"
    time_s: float | None  # seconds, from time_text (hours, minutes or seconds); None if unreadable
    description: str  # the cell as plain text (Markdown links reduced to their text)
    description_url: str | None  # the description's first http(s) or path link (a second one is in the text only)
    date: str | None  # ISO YYYY-MM-DD from the Date cell (MM/DD/YY), None for "-" or a date that is not one
    log_links: tuple[str, ...]  # every target of the Log cell that is a path into records/, as written
    pr_number: int | None  # from a github.com/<owner>/<repo>/pull/<n> link: the Log cell's, else another cell's
    pr_url: str | None
    contributors: str  # the cell as plain text; "" for "-" and for a cell that names no @handle (then in note)
    retiming: bool  # the row repeats the number of the row before it ("21 | 2.997 minutes | 21st record ...")
    note: str  # what the row says of itself beyond its description ("; "-joined), "" when nothing


@dataclass(frozen=True)
class Resolved:
    """Where a row's log links lead in a records tree."""

    row: UpstreamRow
    files: tuple[Path, ...]  # the log files the row links, found in the tree (a folder link: its *.txt logs)
    folder: Path | None  # the record folder right under the track folder that holds them all; None if none or several
    how: tuple[str, ...]  # one line per log link, in order: "<link>: at its path", "<link>: by file name: ...", ...
    missing: tuple[str, ...]  # the links that lead to no file in the tree (each says why in ``how``)


@dataclass(frozen=True)
class Skipped:
    """A line inside a record table that is not a row of it, or a table whose track is not known."""

    line: int  # 1-based
    why: str


@dataclass(frozen=True)
class Tables:
    rows: tuple[UpstreamRow, ...]
    skipped: tuple[Skipped, ...]


def read_tables(readme: Path) -> list[UpstreamRow]:
    """Every row of every record table in ``readme``, in the README's order; [] when it holds none.

    ``ValueError`` when the file is missing, not a regular file, or over MAX_README_BYTES.
    """
    return list(parse_tables(_read_readme(readme)).rows)


def find_readme(records_root: Path) -> Path | None:
    """The ``README.md`` beside the records folder (``records_root.parent``; two levels up when
    ``records_root`` is one track folder) when it is a regular file that holds a record table, else None.

    ``ValueError`` (from ``read_tables``) when that file is over MAX_README_BYTES.
    """
    repo = records_root.parent.parent if records_root.name in TRACKS else records_root.parent
    readme = repo / README
    if readme.is_symlink() or not readme.is_file():
        return None
    return readme if read_tables(readme) else None


def _read_readme(readme: Path) -> str:
    if readme.is_symlink() or not readme.is_file():
        raise ValueError(
            f"{readme}: not a regular file. Give the README.md of the public speedrun's repository "
            "(the one beside its records/ folder), which holds its record tables"
        )
    with open(readme, "rb") as f:
        data = f.read(MAX_README_BYTES + 1)
    if len(data) > MAX_README_BYTES:
        raise ValueError(
            f"{readme}: over {MAX_README_BYTES:,} bytes, too big for a README of record tables (the public "
            "speedrun's is about 60 KB); it was not read. Give the repository's own README.md, or trim this one"
        )
    return data.decode("utf-8", errors="replace")


# --- the tables --------------------------------------------------------------------------------------------


def parse_tables(text: str) -> Tables:
    """The rows of every record table in the Markdown ``text`` and the table lines skipped, with why.

    A record table is a Markdown table whose header names a ``#`` column and a time column. Its track is
    the track folder its links point into (``records/track_2_medium/...``), else the one its heading names
    (``Medium`` or ``track 2``: track 2; ``World record``, ``small``, ``short`` or ``track 1``: track 1); a
    table of neither is skipped. A table ends at a blank line, a heading, a thematic break (``---``) or a
    code fence; inside it, a line that is not a row (no ``#`` cell that starts with a digit, no time, too
    long) is skipped and reading goes on. Tables inside code fences and HTML comments are not read.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    rows: list[UpstreamRow] = []
    skipped: list[Skipped] = []
    positions = dict.fromkeys(RECORD_TRACKS, 0)
    heading = ""
    section: list[str] = []  # the short lines since the heading: where a note explaining a '*' is
    fence: str | None = None
    in_comment = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        i += 1
        if in_comment:
            in_comment = "-->" not in line
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            continue
        if _fence_of(stripped) is not None:
            fence = _fence_of(stripped)
            continue
        if stripped.startswith("<!--") and "-->" not in stripped[4:]:
            in_comment = True
            continue
        level = _HEADING_RE.match(line) if len(line) <= _MAX_NOTE_LINE_CHARS else None
        if level is not None:
            heading, section = line[level.end() :].strip(), []
            continue
        if i < len(lines) and _is_table_header(line, lines[i]):
            header_line = i
            columns = _columns(_cells(line))
            end = _table_end(lines, i + 1)
            body = [(n + 1, lines[n]) for n in range(i + 1, end)]
            i = end
            if "#" not in columns or "time" not in columns:
                continue  # a table of something else
            cells_of, skips = _body_rows(body, columns)
            skipped.extend(skips)
            track = _track_of(cells_of, heading)
            if track is None:
                skipped.append(
                    Skipped(header_line, "a record table whose track is neither in its links nor in its heading")
                )
                continue
            previous: str | None = None
            for line_no, cells in cells_of:
                row = _row(track, positions[track], line_no, cells, previous, section)
                rows.append(row)
                positions[track] += 1
                previous = row.number
            continue
        if len(line) <= _MAX_NOTE_LINE_CHARS and len(section) < 100:
            section.append(line)
    return Tables(tuple(rows), tuple(skipped))


def _fence_of(stripped: str) -> str | None:
    for mark in ("```", "~~~"):
        if stripped.startswith(mark):
            return mark
    return None


def _is_table_header(line: str, next_line: str) -> bool:
    """A header row followed by its delimiter row (``| - | :-: |``): how a Markdown table starts."""
    if "|" not in line or "|" not in next_line or len(line) > MAX_ROW_CHARS or len(next_line) > MAX_ROW_CHARS:
        return False
    cells = _cells(next_line)
    return bool(cells) and all(c and set(c.strip(":")) == {"-"} for c in (c.strip() for c in cells))


def _is_break(stripped: str) -> bool:
    """A thematic break (``---``, ``***``, ``___``) or a code fence: either ends a table."""
    compact = stripped.replace(" ", "").replace("\t", "")
    return (len(compact) >= 3 and len(set(compact)) == 1 and compact[0] in "-*_") or _fence_of(stripped) is not None


def _table_end(lines: list[str], start: int) -> int:
    n = start
    while n < len(lines):
        line = lines[n]
        stripped = line.strip()
        if not stripped or _is_break(stripped) or (len(line) <= MAX_ROW_CHARS and _HEADING_RE.match(line)):
            break
        n += 1
    return n


def _cells(line: str) -> list[str]:
    """A table line split at its unescaped ``|`` (an outer one at either end is optional), ``\\|`` made ``|``."""
    s = line.strip()
    if s.startswith("|"):
        s = s[1:]
    if s.endswith("|") and not s.endswith("\\|"):
        s = s[:-1]
    return [c.replace("\\|", "|").strip() for c in _UNESCAPED_PIPE_RE.split(s)]


def _column_kind(name: str) -> str | None:
    """What a header cell names: "#", "time", "description", "date", "log", "contributors", or None."""
    key = _plain(name).lower()
    if key in ("#", "no", "no.", "number"):
        return "#"
    if key in ("date", "log", "logs"):
        return key.rstrip("s")
    for kind, word in (("time", "time"), ("description", "description"), ("contributors", "contributor")):
        if word in key:
            return kind
    return "contributors" if key in ("author", "authors") else None


def _columns(header: list[str]) -> dict[str, int]:
    """Which cell holds what, from the header's names; the first cell of each kind wins."""
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        kind = _column_kind(name)
        if kind is not None and kind not in columns:
            columns[kind] = index
    return columns


def _body_rows(
    body: list[tuple[int, str]], columns: dict[str, int]
) -> tuple[list[tuple[int, dict[str, str]]], list[Skipped]]:
    """The rows of a table's body as {column kind: raw cell}, and the lines that are not rows."""
    rows: list[tuple[int, dict[str, str]]] = []
    skipped: list[Skipped] = []
    for line_no, line in body:
        if len(line) > MAX_ROW_CHARS:
            skipped.append(Skipped(line_no, f"not read as a row: {len(line):,} characters, over {MAX_ROW_CHARS:,}"))
            continue
        cells = _cells(line)
        named = {kind: cells[index] if index < len(cells) else "" for kind, index in columns.items()}
        number, time = _plain(named["#"]), _plain(named["time"])
        if not number[:1].isdigit() or len(number) > 20:
            skipped.append(Skipped(line_no, f"not a row: its '#' cell {printable(number[:40])!r} is not a number"))
        elif not time:
            skipped.append(Skipped(line_no, "not a row: its time cell is empty"))
        else:
            rows.append((line_no, named))
    return rows, skipped


def _track_of(rows: list[tuple[int, dict[str, str]]], heading: str) -> str | None:
    """The track whose folder most of the table's links point into, else the one the heading names."""
    counts = dict.fromkeys(RECORD_TRACKS, 0)
    for _, cells in rows:
        for cell in cells.values():
            for _, target in _links(cell):
                parts = _records_parts(target)
                if parts and parts[0] in counts:
                    counts[parts[0]] += 1
    best = max(counts.values())
    leaders = [t for t, c in counts.items() if c == best]
    if best > 0 and len(leaders) == 1:
        return leaders[0]
    h = " ".join(heading.lower().split())
    if "medium" in h or "track 2" in h:
        return TRACK_2
    if "world record" in h or "small" in h or "short" in h or "track 1" in h:
        return TRACK_1
    return None


def _row(
    track: str, position: int, line_no: int, cells: dict[str, str], previous: str | None, section: list[str]
) -> UpstreamRow:
    notes: list[str] = []
    number = printable(_plain(cells["#"]))
    time_text = printable(_plain(cells["time"]))
    time_s, mark = _seconds(time_text)
    if mark:
        explained = next((_plain(s.lstrip(" >")) for s in section if f"({mark})" in s), None)
        notes.append(f"time marked {mark!r}" + (f": {printable(explained)}" if explained else ""))
    elif time_s is None:
        notes.append(f"time {time_text!r} is not a number of hours, minutes or seconds")
    description_cell = cells.get("description", "")
    description_urls = [t for _, t in _links(description_cell) if _is_web_or_path(t)]
    date_cell = _plain(cells.get("date", ""))
    date = _iso_date(date_cell)
    if date is None and date_cell.lower() not in _EMPTY_CELLS:
        notes.append(f"date {printable(date_cell[:40])!r} is not MM/DD/YY")
    log_cell = cells.get("log", "")
    log_links: list[str] = []
    pr: tuple[int, str] | None = None
    for _, target in _links(log_cell):
        if _records_parts(target) is not None:
            log_links.append(printable(target))
        elif (found := _pull(target)) is not None:
            pr = pr or found
        else:
            notes.append(f"the Log cell links {printable(target)}, outside records/")
    if not _links(log_cell) and _plain(log_cell).lower() not in _EMPTY_CELLS:
        notes.append(f"the Log cell says {printable(_plain(log_cell)[:200])!r} and links nothing")
    for kind in ("description", "contributors", "date", "time", "#"):
        for _, target in _links(cells.get(kind, "")):
            pr = pr or _pull(target)
    contributors = printable(_plain(cells.get("contributors", "")))
    if contributors.lower() in _EMPTY_CELLS:
        contributors = ""
    elif "@" not in contributors:
        notes.insert(0, contributors)  # "not a new record, just re-timing #21 with latest torch"
        contributors = ""
    return UpstreamRow(
        track=track,
        position=position,
        line=line_no,
        number=number,
        time_text=time_text,
        time_s=time_s,
        description=printable(_plain(description_cell)),
        description_url=printable(description_urls[0]) if description_urls else None,
        date=date,
        log_links=tuple(log_links),
        pr_number=pr[0] if pr else None,
        pr_url=printable(pr[1]) if pr else None,
        contributors=contributors,
        retiming=previous is not None and number == previous,
        note="; ".join(notes),
    )


def _links(cell: str) -> list[tuple[str, str]]:
    """``(text, target)`` of every Markdown link in ``cell``."""
    return [(m.group(1), m.group(2)) for m in _LINK_RE.finditer(cell)]


def _plain(cell: str) -> str:
    """A cell as plain text: each link reduced to its text, whitespace runs made one space."""
    return " ".join(_LINK_RE.sub(lambda m: m.group(1), cell).split())


def _is_web_or_path(target: str) -> bool:
    """An http(s) address or a path: a link a page may show (not ``javascript:``, ``data:``, ...)."""
    scheme, colon, _ = target.partition(":")
    return target.startswith(("https://", "http://")) or not colon or "/" in scheme


def _records_parts(target: str) -> tuple[str, ...] | None:
    """The parts after ``records/`` of a link into the records folder (relative, ``./`` or ``/`` rooted,
    percent-decoded, without ``#fragment`` or ``?query``), or None for any other link. The parts are as
    written: ``..`` is refused when the link is resolved, not here."""
    if "://" in target or target.startswith(("#", "mailto:")):
        return None
    path = unquote(target.split("#", 1)[0].split("?", 1)[0])
    while path.startswith("./"):
        path = path[2:]
    parts = PurePosixPath(path.lstrip("/")).parts
    return tuple(parts[1:]) if len(parts) >= 2 and parts[0] == "records" else None


def _pull(target: str) -> tuple[int, str] | None:
    m = _PULL_RE.match(target)
    return (int(m.group(1)), target) if m else None


def _seconds(time_text: str) -> tuple[float | None, str]:
    """Seconds of ``"2.997 minutes"``, ``"5.8 hours"``, and the mark written after the unit (``"*"``)."""
    m = _TIME_RE.fullmatch(time_text.strip())
    if m is None or m.group(2).lower() not in _SECONDS_PER_UNIT:
        return None, ""
    return round(float(m.group(1)) * _SECONDS_PER_UNIT[m.group(2).lower()], 6), m.group(3).strip()


def _iso_date(cell: str) -> str | None:
    """``MM/DD/YY`` (or ``M/D/YYYY``) as ``YYYY-MM-DD``; None when it is not a date of the calendar."""
    parts = cell.split("/")
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 4 for p in parts):
        return None
    month, day, year = (int(p) for p in parts)
    if len(parts[2]) == 2:
        year += 2000
    elif len(parts[2]) != 4:
        return None
    try:
        return dt.date(year, month, day).isoformat()
    except ValueError:
        return None


# --- the records tree --------------------------------------------------------------------------------------


def resolve(rows: Sequence[UpstreamRow], records_root: Path) -> list[Resolved]:
    """Where each row's log links lead under ``records_root`` (the folder holding the track folders, or
    one track folder).

    A link is found at its path first; else, when no other file under its track folder has its file name,
    there (its folder was renamed since the table was written: UUID names are unique); else it is
    missing. A folder link stands for the logs (``*.txt``) directly in it. Nothing outside ``records_root`` is
    ever read: a link with ``..`` or through a symbolic link is refused, and the search by name follows
    no link.
    """
    names: dict[Path, dict[str, list[Path]]] = {}  # track folder -> entry name -> entries, built once
    out: list[Resolved] = []
    for row in rows:
        files: list[Path] = []
        how: list[str] = []
        missing: list[str] = []
        folders: set[Path | None] = set()
        for link in row.log_links:
            found, why, track_dir = _resolve_link(link, row.track, records_root, names)
            how.append(f"{link}: {why}")
            if not found:
                missing.append(link)
            for f in found:
                if f not in files:
                    files.append(f)
                rel = f.relative_to(track_dir).parts if track_dir is not None else ()
                folders.add(track_dir / rel[0] if track_dir is not None and len(rel) > 1 else None)
        folder = folders.pop() if len(folders) == 1 else None
        out.append(Resolved(row, tuple(files), folder, tuple(how), tuple(missing)))
    return out


def _track_dir(records_root: Path, track: str) -> Path | None:
    if records_root.name == track:
        return records_root
    if records_root.name in TRACKS:
        return None  # the root is another track's folder
    return records_root / track


def _resolve_link(
    link: str, row_track: str, records_root: Path, names: dict[Path, dict[str, list[Path]]]
) -> tuple[list[Path], str, Path | None]:
    """The files ``link`` leads to, how they were found (or why none was), and their track folder."""
    parts = _records_parts(link) or ()
    if not parts or any(p in ("..", ".") or "\\" in p or "\x00" in p for p in parts):
        return [], "refused: a link into records/ may not hold '..', '.' or '\\'", None
    if parts[0] in TRACKS and len(parts) == 1:
        return [], "missing: a link to a track folder, not to a record in it", None
    track = parts[0] if parts[0] in TRACKS else row_track  # records/<not a track>/...: looked for by name only
    track_dir = _track_dir(records_root, track)
    if track_dir is None or not track_dir.is_dir() or not _inside(track_dir, records_root):
        return [], f"missing: no {track} folder in {printable(records_root)}", None
    if parts[0] in TRACKS:
        path = track_dir.joinpath(*parts[1:])
        if _inside(path, records_root):
            if path.is_file():
                return [path], "at its path", track_dir
            if path.is_dir():
                logs = _folder_logs(path)
                if logs:
                    return logs, f"a folder link: {_count_logs(logs)} in it", track_dir
                return [], f"missing: a folder link, with no logs (*{LOG_SUFFIX}) in it", None
        elif path.exists() or path.is_symlink():
            return [], "refused: its path goes through a symbolic link", None
    if track_dir not in names:
        index: dict[str, list[Path]] = {}
        for entry, is_dir in walk(track_dir):
            if not is_dir and entry.is_file() and not entry.is_symlink():
                index.setdefault(entry.name, []).append(entry)
        names[track_dir] = index
    name, shown = parts[-1], f"records/{track}"
    same_name = names[track_dir].get(name, [])
    if len(same_name) > 1:
        return [], f"missing: not at its path, and {len(same_name)} files named {printable(name)} under {shown}", None
    if not same_name:
        return [], f"missing: not at its path, and no file named {printable(name)} under {shown}", None
    now = f"{shown}/{printable(same_name[0].relative_to(track_dir).as_posix())}"
    return same_name[0:1], f"by file name: not at its path, the one file of that name under {shown} is {now}", track_dir


def _inside(path: Path, root: Path) -> bool:
    """``path`` exists under ``root`` and no part of it below ``root`` is a symbolic link."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink() or not os.path.lexists(current):
            return False
    return path.resolve().is_relative_to(root.resolve())


def _count_logs(logs: list[Path]) -> str:
    return f"{len(logs)} log{'s' if len(logs) != 1 else ''} (*{LOG_SUFFIX})"


def _folder_logs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == LOG_SUFFIX and p.is_file() and not p.is_symlink())
