"""Find records on disk: what a record folder holds, its README, its track and date.

Two layouts are read (records/README.md, docs/log-format.md):

- **harness** records (this repository's submissions): ``records/<track>/<YYYY-MM-DD>_<ShortName>/README.md``
  with YAML front matter, plus one ``<run-uuid>.txt`` per run directly in the folder. The logs directly in
  its ``baseline/`` subfolder are its same-node baseline runs (the named baseline record's code, run on
  the node of the record's runs: judged by tools/judge/samenode.py, never as runs of the record). Anything
  else in subfolders is supporting material (notes, plots) and is never judged.
- **public** records, as the public speedrun (github.com/KellerJordan/modded-nanogpt) files them: a folder
  under a track folder with a plain README.md or none, whose logs (``*.txt``, and ``*.log`` where the
  maintainers linked one) sit in the folder or in subfolders of any name, beside baseline runs of the
  previous record, ablations, profiles and images. The folder is one record. Which of its logs are its
  runs, which are baseline runs and which are supporting material is decided from the logs themselves
  (their code, hardware and completeness; tools/judge/layout.py), because the names were never chosen for a
  machine; ``Record.candidates`` holds every log until then.

A bare log file is a record of one run (``verify logs/<uuid>.txt --track smoke``).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tools.judge.tracks import TRACKS, HardwareClass, Track, get_track

README = "README.md"
LOG_SUFFIX = ".txt"
# The public speedrun also links `.log` files (llm.c's main.log, a 2024 AdamW log) as records' logs.
PUBLIC_LOG_SUFFIXES = (".txt", ".log")
BASELINE_DIR = "baseline"  # a record folder's same-node baseline runs
# A date at the start of a folder name: 2025-01-16_Sub3Min, 2026-01-26-UntieValueEmbeddings, 2025-01-18 alone,
# 2026-04-4_FuseCEFwdAndBwd (a one-digit day, as the public repository has it).
_DATE_PREFIX_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?=$|[_-])")
_HARNESS_FOLDER_RE = re.compile(r"^\d{4}-\d{2}-\d{2}_[A-Za-z0-9][A-Za-z0-9._-]*$")
# Names a submitter gives what is not a run of the record: runs of another code to compare against
# (baseline, comparison, before, prior, master, original, retime, reference) and left-overs (extra).
SUPPORTING_NAME_RE = re.compile(r"baseline|comparison|before|prior|master|original|retime|reference|extra", re.I)
# A README is a short text; a bigger one is not read (untrusted input).
MAX_README_BYTES = 256 * 1024
# Front matter is a few short keys; YAML nested past this depth or this long is not one.
MAX_FRONT_MATTER_CHARS = 16 * 1024
MAX_YAML_DEPTH = 8


@dataclass(frozen=True)
class FrontMatter:
    title: str
    date: str  # YYYY-MM-DD
    authors: tuple[str, ...]
    description: str
    baseline: str | None  # folder name of the record this one improves on (same track)
    systems_only: bool
    hardware: HardwareClass | None  # optional: claim a non-official hardware class


@dataclass(frozen=True)
class Role:
    """How one log of a record folder is taken: as a run of the record, a baseline run, or not judged."""

    path: Path
    kind: str  # one of ROLE_KINDS
    why: str


# What a log of a record folder is (the record page lists them in this order).
ROLE_RUN = "run"
ROLE_BASELINE = "baseline run"
ROLE_VARIANT = "variant"  # a run of other code, made beside the record's runs (an ablation, an earlier attempt)
ROLE_STOPPED = "stopped run"
ROLE_OTHER_HARDWARE = "other hardware"
ROLE_COPY = "copy"  # byte for byte a run of a record that landed before (or with) this one
ROLE_NOT_A_RUN = "not a run log"
ROLE_SUPPORTING = "supporting"  # a harness record's log outside the folder and baseline/: notes, never judged
ROLE_KINDS = (
    ROLE_RUN,
    ROLE_BASELINE,
    ROLE_VARIANT,
    ROLE_STOPPED,
    ROLE_OTHER_HARDWARE,
    ROLE_COPY,
    ROLE_NOT_A_RUN,
    ROLE_SUPPORTING,
)


@dataclass
class Record:
    """A set of runs judged together."""

    path: Path  # the record folder, or the log file of a one-run record
    name: str  # e.g. "2025-01-16_Sub3Min" or "2026-04-22_MuddFormer/this_pr_v3"
    track: Track
    logs: list[Path]
    layout: str  # "harness", "public" or "log"
    date: str | None = None
    meta: FrontMatter | None = None
    meta_errors: list[str] = field(default_factory=list)
    supporting: list[Path] = field(default_factory=list)  # logs in the folder that are judged as neither
    baseline_runs: list[Path] = field(
        default_factory=list
    )  # same-node baseline runs (harness: <record>/baseline/*.txt)
    # A public record's every log under its folder, before tools/judge/layout.py decides their roles (then `logs`,
    # `baseline_runs` and `supporting` hold them); empty for the other layouts, whose roles the layout fixes.
    candidates: list[Path] = field(default_factory=list)
    readme: str | None = None  # a public record's plain README.md (bounded, decoded), None without one
    roles: list[Role] = field(default_factory=list)  # how each log of the folder was taken, and why

    @property
    def title(self) -> str:
        return self.meta.title if self.meta else self.name


def track_from_path(path: Path) -> Track | None:
    """The track named by the nearest enclosing folder called like a track (``records/<track>/...``)."""
    for part in reversed(path.resolve().parts):
        if part in TRACKS:
            return TRACKS[part]
    return None


def resolve_track(path: Path, track: str | None) -> Track:
    if track is not None:
        return get_track(track)
    found = track_from_path(path)
    if found is None:
        raise ValueError(
            f"{path}: cannot tell its track from the path (no folder named {', '.join(TRACKS)}); pass --track"
        )
    return found


def _logs_in(folder: Path) -> list[Path]:
    # Symbolic links are kept so that the parser can reject them by name (never follow them).
    return sorted(p for p in folder.iterdir() if p.suffix == LOG_SUFFIX and (p.is_file() or p.is_symlink()))


def _date_of(name: str) -> str | None:
    """The date a folder name starts with, as ``YYYY-MM-DD``, if it is a date of the calendar (``2026-02-30`` is
    not): ``2025-01-16_Sub3Min``, ``2025-01-18``, ``2026-01-26-UntieValueEmbeddings``, ``2026-04-4_Fuse`` (April 4)."""
    m = _DATE_PREFIX_RE.match(name)
    if m is None:
        return None
    text = f"{m.group(1)}-{int(m.group(2)):02d}-{int(m.group(3)):02d}"
    return text if _is_calendar_date(text) else None


def _is_calendar_date(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) is not None  # fromisoformat also takes 20260801


def _has_readme(folder: Path) -> bool:
    """A README.md entry, even a link (``read_front_matter`` then refuses it by name)."""
    readme = folder / README
    return readme.is_symlink() or readme.exists()


def _is_harness_folder(folder: Path) -> bool:
    """A record folder of this repository's layout: its README.md opens with front matter (a line ``---``), or is
    no plain file (a link, a folder: ``read_front_matter`` then says what is wrong with it). A plain README, or
    none, is the public speedrun's layout."""
    readme = folder / README
    if readme.is_symlink() or (readme.exists() and not readme.is_file()):
        return True
    if not readme.exists():
        return False
    try:
        with readme.open("rb") as f:
            head = f.read(64)
    except OSError:
        return True  # unreadable: judged as a harness README, whose reader reports why
    first = head.decode("utf-8", errors="replace").lstrip("\ufeff").splitlines()[:1]
    return bool(first) and first[0].strip() == "---"


def read_plain_readme(readme: Path) -> str | None:
    """A public record's README.md as text (at most MAX_README_BYTES, invalid UTF-8 replaced); None if absent,
    a link or unreadable. It is shown on the record page, never parsed for a verdict."""
    if readme.is_symlink() or not readme.is_file():
        return None
    try:
        with readme.open("rb") as f:
            raw = f.read(MAX_README_BYTES)
    except OSError:
        return None
    return raw.decode("utf-8", errors="replace").lstrip("\ufeff")


def walk(root: Path) -> Iterator[tuple[Path, bool]]:
    """``(path, is_dir)`` for every entry under the folder ``root``, links not followed (a link is an entry,
    never a folder); iterative, as a folder nested thousands deep (a pull request's notes/) overflowed
    the recursion of os.walk and Path.rglob (Python 3.11)."""
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as entries:
                found = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)
        except (NotADirectoryError, FileNotFoundError):
            continue
        for name, is_dir in found:
            path = folder / name
            yield path, is_dir
            if is_dir:
                stack.append(path)


def files_under(root: Path, suffix: str = "") -> list[Path]:
    """The regular files (not links) under ``root`` whose name ends with ``suffix``, sorted."""
    return sorted(
        p for p, is_dir in walk(root) if not is_dir and p.name.endswith(suffix) and p.is_file() and not p.is_symlink()
    )


def refuse_links(root: Path, what: str = "records/ and leaderboard/") -> None:
    """``ValueError`` naming every symbolic link at or under ``root``, found without following any.

    A link in a pull request's records/ or leaderboard/ can point anywhere on the machine that judges
    it: walked, a link to / never ends; written through, the leaderboard would land (and stale plots be
    deleted) outside the repository. Records are files and folders; links are refused, not followed.
    """
    links: list[str] = []
    if root.is_symlink():
        links.append(str(root))
    elif root.is_dir():
        links.extend(str(p) for p, is_dir in walk(root) if not is_dir and p.is_symlink())
    if links:
        shown = ", ".join(sorted(links)[:10]) + (" ..." if len(links) > 10 else "")
        raise ValueError(  # printed by tools.cli, which escapes control characters of names
            f"{len(links)} symbolic link(s) under {root}: {shown}. {what} may hold no symbolic links "
            "(a link can point anywhere on the machine that judges it): replace each with the file or folder itself"
        )


def load_records(path: Path, track: str | None = None) -> list[Record]:
    """The records at ``path``: a log file, a record folder, a folder inside one (its record), a track folder
    or a whole records folder.

    ``ValueError`` for a path that is none of these, and for a folder that holds a symbolic link.
    """
    if not path.exists() and not path.is_symlink():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_dir():
        refuse_links(path)
    if is_records_folder(path):
        return discover(path)  # a track folder or a whole records folder: the folder names give the tracks
    tr = resolve_track(path, track)
    if path.is_file():
        if path.suffix not in PUBLIC_LOG_SUFFIXES:
            raise ValueError(f"{path}: not a log (.txt or .log) or a record folder")
        return [Record(path=path, name=path.name, track=tr, logs=[path], layout="log")]
    if not path.is_dir():
        raise ValueError(f"{path}: not a regular file or folder")
    folder = record_folder_of(path)
    refuse_links(folder)
    record = _record_of(folder, tr)
    if record.layout == "public" and not record.candidates and record.readme is None:
        raise ValueError(
            f"{folder}: no logs (*.txt, *.log) and no {README} here or in its subfolders: not a record folder"
        )
    return [record]


def record_folder_of(path: Path) -> Path:
    """The record folder a path is in: the folder right under its track folder (``records/<track>/<record>``);
    ``path`` itself where no enclosing folder is named like a track."""
    resolved = path.resolve()
    parts = resolved.parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in TRACKS:
            return Path(*parts[: i + 2])
    return path


def _record_of(folder: Path, track: Track) -> Record:
    return _harness_record(folder, track) if _is_harness_folder(folder) else _public_record(folder, track)


def is_records_folder(path: Path) -> bool:
    """A whole records folder (it holds a track folder) or one track folder (named like its track)."""
    return path.is_dir() and (path.name in TRACKS or any((path / t).is_dir() for t in TRACKS))


# Files that may sit beside the track folders and beside the record folders: the layout's own README,
# and the empty file git needs to keep a track folder that has no record yet.
_TOP_LEVEL_FILES = (README,)
_TRACK_LEVEL_FILES = (README, ".gitkeep")


@dataclass
class Tree:
    """What a records folder holds: its records, and every entry that is not one (with why)."""

    records: list[Record]  # in (track, date, name) order
    misplaced: list[tuple[Path, str]]  # entries that fail: a stray file, a folder that holds no record
    # Folders that are not a track of this harness (the public repository's track_3_optimization, a different
    # competition): listed, not judged. `check` fails on them in this repository's records/, `verify` notes them.
    other_tracks: list[tuple[Path, str]] = field(default_factory=list)


def scan(records_root: Path) -> Tree:
    """Walk a records folder (``records/<track>/<record>/``) or one track folder once: the one place that knows
    the layout. Every entry is either read as a record or listed in ``misplaced`` with why: an unknown track
    folder, a stray file, a hidden folder, a folder with neither README.md nor logs. A record that was only
    skipped would be a record nobody judged: ``check`` and ``verify`` fail on the misplaced entries.

    ``records_root`` may be one track folder (named like its track), as in the public speedrun's
    ``records/`` folder, whose only child is ``track_1_short``. ``ValueError`` for a missing folder and for
    one that holds a symbolic link.
    """
    if not records_root.is_dir():
        raise ValueError(f"{records_root}: no such folder; give the records folder (e.g. records/)")
    refuse_links(records_root)
    records: list[Record] = []
    stray: list[tuple[Path, str]] = []
    other: list[tuple[Path, str]] = []
    if records_root.name in TRACKS:
        track_dirs = [records_root]
    else:
        track_dirs = []
        for entry in sorted(records_root.iterdir()):
            if entry.name in _TOP_LEVEL_FILES and entry.is_file():
                continue
            if entry.name in TRACKS and entry.is_dir():
                track_dirs.append(entry)
            elif entry.is_dir():
                other.append(
                    (entry, f"not a track folder (the tracks are {', '.join(TRACKS)}): nothing in it is judged")
                )
            else:
                stray.append((entry, f"a stray {_kind(entry)}: a records folder holds only track folders and {README}"))
    for td in track_dirs:
        track = TRACKS[td.name]
        for entry in sorted(td.iterdir()):
            if entry.name in _TRACK_LEVEL_FILES and entry.is_file():
                continue
            if not entry.is_dir():
                why = f"a stray {_kind(entry)}: a track folder holds only record folders <YYYY-MM-DD>_<ShortName>/"
                stray.append((entry, why))
            elif entry.name.startswith("."):
                stray.append((entry, "a hidden folder: a record folder is named <YYYY-MM-DD>_<ShortName>"))
            elif _is_harness_folder(entry):
                records.append(_harness_record(entry, track))
            else:
                record = _public_record(entry, track)
                if record.candidates or record.readme is not None:
                    records.append(record)
                else:
                    stray.append((entry, f"no {README} and no logs (*.txt, *.log): not a record folder"))
    return Tree(sorted(records, key=lambda r: (r.track.name, r.date or "", r.name)), stray, other)


def misplaced(records_root: Path) -> list[tuple[Path, str]]:
    """``(path, why)`` for every entry of a records folder (or of one track folder) that is not a record
    (``scan``)."""
    return scan(records_root).misplaced


def _kind(entry: Path) -> str:
    return "symbolic link" if entry.is_symlink() else "folder" if entry.is_dir() else "file"


def discover(records_root: Path) -> list[Record]:
    """Every record under ``records_root`` (``records/<track>/<record>/``), in (track, date, name) order (``scan``)."""
    return scan(records_root).records


def _public_record(folder: Path, track: Track) -> Record:
    """A record folder as the public speedrun files it: every log under it is a candidate, its README is text."""
    candidates = sorted(
        p
        for p, is_dir in walk(folder)
        if not is_dir
        and p.suffix in PUBLIC_LOG_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and (p.is_file() or p.is_symlink())
    )
    return Record(
        folder,
        folder.name,
        track,
        [],
        "public",
        _date_of(folder.name),
        candidates=candidates,
        readme=read_plain_readme(folder / README),
    )


def _harness_record(folder: Path, track: Track) -> Record:
    rec = Record(folder, folder.name, track, _logs_in(folder), "harness", _date_of(folder.name))
    baseline_dir = folder / BASELINE_DIR
    if baseline_dir.is_dir() and not baseline_dir.is_symlink():
        rec.baseline_runs = _logs_in(baseline_dir)
    judged = set(rec.baseline_runs)
    rec.supporting = sorted(
        p for d in folder.iterdir() if d.is_dir() for p in files_under(d, LOG_SUFFIX) if p not in judged
    )
    rec.roles = [
        *(Role(p, ROLE_RUN, f"a log directly in the record folder ({README} has front matter)") for p in rec.logs),
        *(Role(p, ROLE_BASELINE, f"a log in {BASELINE_DIR}/: the same-node baseline runs") for p in rec.baseline_runs),
        *(Role(p, ROLE_SUPPORTING, "a log in a subfolder other than baseline/: never judged") for p in rec.supporting),
    ]
    if not _HARNESS_FOLDER_RE.match(folder.name) or rec.date is None:
        rec.meta_errors.append(
            f"folder name {folder.name!r} is not <YYYY-MM-DD>_<ShortName> with a date of the calendar"
        )
    rec.meta, errors = read_front_matter(folder / README)
    rec.meta_errors.extend(errors)
    if rec.meta is not None:
        if rec.date is not None and rec.meta.date != rec.date:
            rec.meta_errors.append(f"front matter date {rec.meta.date} differs from the folder name's {rec.date}")
        rec.date = rec.meta.date
        rec.meta_errors.extend(_baseline_problems(folder, rec.meta, track))
    return rec


def _baseline_problems(folder: Path, meta: FrontMatter, track: Track) -> list[str]:
    """What is wrong with the README's ``baseline``: a record folder of the same track (that it is earlier in
    the ledger, not by date, is checked by tools/judge/verify.py).

    ``systems_only: true`` waives the p-value because the math is its baseline's, so there it is
    required, and the baseline's README must parse (tools.judge.verify also requires it to be valid).
    """
    name = meta.baseline
    if name is None:
        if meta.systems_only:
            return [
                "systems_only: true needs a 'baseline': the record folder of this track whose math this one keeps "
                "(the p-value is waived only because that record already passed it)"
            ]
        return []
    fix = f"name the folder of {track.name} it improves on, e.g. 2026-07-20_PreviousRecord"
    # A plain folder name: no path (`..`, `/abs`, `a/b`) may point outside this track folder.
    if not _HARNESS_FOLDER_RE.match(name):
        return [f"baseline {name!r} is not a record folder name <YYYY-MM-DD>_<ShortName> ({fix})"]
    if name == folder.name:
        return [f"baseline {name!r} is this record itself ({fix})"]
    target = folder.parent / name
    if target.is_symlink() or not target.is_dir() or not (target / README).is_file():
        return [f"baseline {name!r} is not a record folder of {track.name} ({fix})"]
    if meta.systems_only:
        base_meta, errors = read_front_matter(target / README)
        if base_meta is None:
            return [f"baseline {name!r} of a systems_only record is not a valid record: {'; '.join(errors)[:200]}"]
    return []


def read_front_matter(readme: Path) -> tuple[FrontMatter | None, list[str]]:
    """Parse the YAML front matter of a record README (safe loader only: a README is untrusted).

    Never raises: every problem is returned as a message naming the README (a ``structure`` failure).
    """
    # Like a log (tools/judge/parse.py), a README is the file itself: a link could point anywhere on the
    # machine (/dev/zero would never end), and only the first MAX_README_BYTES + 1 bytes are read.
    if readme.is_symlink():
        return None, [f"{README} is a symbolic link; put the README file itself in the record folder"]
    try:
        if not stat.S_ISREG(readme.stat().st_mode):
            return None, [f"{README} is not a regular file"]
        with readme.open("rb") as f:
            raw = f.read(MAX_README_BYTES + 1)
    except OSError as e:
        return None, [f"{README} cannot be read ({e.strerror})"]
    if len(raw) > MAX_README_BYTES:
        return None, [f"{README} is over {MAX_README_BYTES:,} bytes"]
    try:
        text = raw.decode("utf-8-sig")  # editors on Windows save a byte-order mark: it is not content
    except UnicodeDecodeError as e:
        return None, [f"{README} is not UTF-8 (invalid byte at offset {e.start})"]
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in (ln.strip() for ln in lines[1:]):
        return None, [f"{README} does not start with YAML front matter between '---' lines"]
    end = next(i for i, ln in enumerate(lines[1:], 1) if ln.strip() == "---")
    front = "\n".join(lines[1:end])
    if len(front) > MAX_FRONT_MATTER_CHARS:
        return None, [f"{README} front matter is over {MAX_FRONT_MATTER_CHARS:,} characters: keep the details below it"]
    try:
        data = _load_yaml(front)
    except Exception as e:  # not only YAMLError: `date: 2026-13-45` raises ValueError while it is built
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        return None, [f"{README} front matter is not valid YAML: {first}"]
    if not isinstance(data, dict):
        return None, [f"{README} front matter is not a mapping of keys to values"]
    return _front_matter_from(data)


def _load_yaml(text: str) -> object:
    """``yaml.safe_load`` of plain data: no anchors or aliases, nesting at most MAX_YAML_DEPTH deep.

    An alias repeats a node by reference, so a few hundred bytes of nested aliases expand to billions of
    nodes when loaded (a "billion laughs" bomb: 682 bytes took ~70 GB). Front matter never needs one.
    The events are read first, without building anything.
    """
    import yaml  # imported here: keeps `import tools` light

    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ValueError("YAML anchors and aliases (&name, *name) are not allowed: write each value out")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ValueError(f"nested more than {MAX_YAML_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return yaml.safe_load(text)


def _front_matter_from(data: dict[object, object]) -> tuple[FrontMatter | None, list[str]]:
    errors: list[str] = []

    def text(key: str, required: bool = True) -> str | None:
        v = data.get(key)
        if v is None:
            if required:
                errors.append(f"front matter: '{key}' is missing")
            return None
        if not isinstance(v, str) or not v.strip():
            errors.append(f"front matter: '{key}' must be a non-empty string")
            return None
        return v.strip()

    title, description = text("title"), text("description")
    baseline = text("baseline", required=False)
    raw_date = data.get("date")
    date: str | None = None
    if isinstance(raw_date, dt.date):
        date = raw_date.isoformat()[:10]
    elif isinstance(raw_date, str) and _is_calendar_date(raw_date.strip()):
        date = raw_date.strip()
    elif raw_date is None:
        errors.append("front matter: 'date' is missing")
    else:
        errors.append(f"front matter: 'date' {str(raw_date)[:40]!r} is not a date YYYY-MM-DD (e.g. 2026-08-01)")
    raw_authors = data.get("authors")
    authors: tuple[str, ...] = ()
    if isinstance(raw_authors, str) and raw_authors.strip():
        authors = (raw_authors.strip(),)
    elif isinstance(raw_authors, list) and raw_authors and all(isinstance(a, str) and a.strip() for a in raw_authors):
        authors = tuple(a.strip() for a in raw_authors)
    else:
        errors.append("front matter: 'authors' must be a name or a list of names")
    systems_only = data.get("systems_only")
    if not isinstance(systems_only, bool):
        errors.append("front matter: 'systems_only' must be true or false")
    hardware: HardwareClass | None = None
    if data.get("hardware") is not None:
        try:
            hardware = HardwareClass.from_label(str(data["hardware"]))
        except ValueError as e:
            errors.append(f"front matter: {e}")
    if errors or title is None or description is None or date is None or not isinstance(systems_only, bool):
        return None, errors
    return FrontMatter(title, date, authors, description, baseline, systems_only, hardware), []
