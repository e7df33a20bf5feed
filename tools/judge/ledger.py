"""The ledger: the order in which records entered the main branch, read from git history.

A record's date is its submitter's word, and so is the timestamp in its logs: ordering by them let a
run made after a record's date take that date, and a copy of an open pull request's logs, filed one
day earlier, push the honest pull request out. What the submitter cannot write is when the record
was merged. So records are ordered by the ledger:

- a record *landed* when its folder ``records/<track>/<name>/`` is on the first-parent history of the
  judged branch (``HEAD`` of the ledger repository). It landed with the first first-parent commit whose
  tree held any of its logs, by content: git's blob id of the file, which survives moves. The public
  speedrun filed its first records at other paths (``records/120824_Name/``) and moved 58 of them into
  ``records/track_*/`` in one merge; by path they would all have landed there, by content each landed
  when its logs first reached main. A log that another record folder holds too (a copy) does not date a
  folder that has logs of its own.
- records that landed with the same commit are ordered by their runs' evidence: a folder dated before its
  own runs (nvidia-smi's timestamps, ``Ledger.settle``) comes after one that is not, then by (date, name).
- a record that is not in that history (the pull request being judged) is *pending*: it comes after
  every landed record, whatever its logs; pending records are ordered by (date, name) among themselves.

The first parent of a merge commit is the branch before the merge, so the first-parent history is
the sequence of states the branch went through. Each landing keeps its commit's time, which says which
rules were in force (tools/judge/rulebook.py).

Where the records folder is not in a git repository (a folder made by a test, a download without its
history) or the history is shallow, every record is pending: (date, name) order, and ``Ledger.note``
says so. ``python -m tools check --ledger-repo PATH`` names the repository whose history is the ledger
(CI: the base branch's checkout, with its full history) when the records folder is a checkout of its own.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import re
import subprocess
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tools.common import cache
from tools.judge import upstream
from tools.judge.records import README, Record, files_under
from tools.judge.tracks import TRACKS

# The folder of records inside a repository of this project.
RECORDS_DIR = "records"
_GIT_TIMEOUT_S = 120
_COMMIT_RE = re.compile(r"commit:([0-9a-f]{40}|[0-9a-f]{64}) ([0-9]{1,12})")
_RAW_RE = re.compile(r":[0-7]{6} [0-7]{6} [0-9a-f]{40,64} ([0-9a-f]{40,64}) ([ACDMRTUX])[0-9]{0,3}")
# The first cell of a row of a record table ("17 | 3.57 minutes | ..."): which versions of the README to read.
_ROW_NUMBER_RE = re.compile(r"^[ \t]*\|?[ \t]*([0-9]{1,4})[ \t]*\|", re.M)
_MAX_README_VERSIONS = 5000

# A row of the maintainers' table, as the ledger knows it across versions of the README: (track, its "#" cell,
# which row of that number it is). Numbers are kept from version to version; re-timing rows repeat one.
RowKey = tuple[str, str, int]


def row_keys(rows: Sequence[upstream.UpstreamRow]) -> list[RowKey]:
    seen: dict[tuple[str, str], int] = defaultdict(int)
    keys = []
    for row in rows:
        keys.append((row.track, row.number, seen[(row.track, row.number)]))
        seen[(row.track, row.number)] += 1
    return keys


class LedgerError(ValueError):
    """The ledger repository named on the command line cannot give an order (the message says why)."""


@dataclass(frozen=True)
class Landed:
    position: float  # index of the commit on the first-parent history, oldest first (a half: between two)
    commit: str
    when: dt.datetime | None = None  # the commit's committer time (UTC): which rules were in force


@dataclass
class Ledger:
    """Where each record of one records folder stands; ``key`` orders records."""

    note: str  # one line for the output: where the order comes from
    # (track, record folder) -> the commit that first added a file under that folder path
    landed: dict[tuple[str, str], Landed] = field(default_factory=dict)
    from_history: bool = False  # False: no git history was read, every record is ordered by (date, name)
    repo: Path | None = None  # the repository whose history this is, at commit `head`, records under `prefix`
    head: str = ""
    prefix: str = RECORDS_DIR
    blobs: dict[str, Landed] = field(default_factory=dict)  # git blob id -> the first commit whose tree held it
    object_format: str = "sha1"
    # Fixed by `settle`: (track, record folder) -> its landing by content, and whether its runs' evidence puts it
    # after the other records that landed with the same commit.
    settled: dict[tuple[str, str], Landed] = field(default_factory=dict)
    demoted: dict[tuple[str, str], str] = field(default_factory=dict)
    # Rows of the maintainers' table (the README beside the records folder, a public repository's) -> the first
    # commit whose README listed them: when the maintainers accepted a record whose logs reached main later.
    listed: dict[RowKey, Landed] = field(default_factory=dict)
    how: dict[tuple[str, str], str] = field(default_factory=dict)  # how each settled landing was found, in words
    commits: list[Landed] = field(default_factory=list)  # every first-parent commit, oldest first

    def entry(self, record: Record) -> Landed | None:
        ident = record_ident(record)
        if ident is None or ident not in self.landed:
            return None
        return self.settled.get(ident, self.landed[ident])

    def key(self, record: Record) -> tuple[int, float, int, str, str]:
        """Landed records first, in commit order; then pending ones; then the runs' evidence and (date, name)."""
        ident = record_ident(record)
        late = 1 if ident is not None and ident in self.demoted else 0
        landed = self.entry(record)
        if landed is None:
            return (1, 0, late, record.date or "", record.name)
        return (0, landed.position, late, record.date or "", record.name)

    def describe(self, record: Record) -> str:
        landed = self.entry(record)
        if landed is not None and not landed.commit and landed.when is not None:
            return f"placed at {landed.when.date().isoformat()} by the maintainers' table"
        if landed is not None:
            when = f" ({landed.when.date().isoformat()})" if landed.when else ""
            return f"landed in {landed.commit[:12]}{when}"
        return "pending (not in the ledger's history)" if self.from_history else "no ledger: (date, name) order"

    def when(self, record: Record) -> dt.datetime | None:
        """When the record landed on the judged branch; None for a pending record or without history."""
        landed = self.entry(record)
        return landed.when if landed is not None else None

    def blob_id(self, path: Path) -> str | None:
        """git's id of the file's bytes in this repository's object format (None when it cannot be read)."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        digest = hashlib.sha256() if self.object_format == "sha256" else hashlib.sha1()
        digest.update(b"blob %d\0" % len(data))
        digest.update(data)
        return digest.hexdigest()

    def settle(
        self,
        records: Sequence[Record],
        logs_of: Callable[[Record], Sequence[Path]],
        dated_late: Callable[[Record], str | None],
        row_of: Callable[[Record], RowKey | None] = lambda r: None,
        table_date: Callable[[Record], str | None] = lambda r: None,
    ) -> None:
        """Fix each landed record's landing by content: the first commit whose tree held one of its logs
        (``logs_of``), counting only the logs no other record folder holds where it has such logs, or the first
        whose README's record table listed its row (``row_of``), if that came earlier; and note the records whose
        own evidence dates them after their folder's date (``dated_late``: why, or None), which come after the
        others of their commit.

        A record whose logs carry neither a time nor a date (llm.c's logs: the maintainers' word is its only
        evidence) is placed where the maintainers' table dates it (``table_date``, YYYY-MM-DD): at the first commit
        of that day or later, before the records that landed with that commit."""
        if not self.from_history:
            for r in records:
                ident = record_ident(r)
                if ident is not None and (why := dated_late(r)):
                    self.demoted[ident] = why
            return
        blobs: dict[tuple[str, str], list[str]] = {}
        holders: dict[str, set[tuple[str, str]]] = defaultdict(set)
        for r in records:
            ident = record_ident(r)
            if ident is None or ident not in self.landed:
                continue
            ids = [b for p in logs_of(r) if (b := self.blob_id(p)) is not None]
            blobs[ident] = ids
            for b in ids:
                holders[b].add(ident)
        rows = {record_ident(r): row_of(r) for r in records}
        for ident, ids in blobs.items():
            own = [b for b in ids if len(holders[b]) == 1] or ids
            firsts = [self.blobs[b] for b in own if b in self.blobs]
            if firsts:
                first = min(firsts, key=lambda x: x.position)
                self.settled[ident] = first
                self.how[ident] = f"its logs first reached the branch in {_when(first)}"
            row = rows.get(ident)
            listed = self.listed.get(row) if row is not None else None
            if listed is not None and (ident not in self.settled or listed.position < self.settled[ident].position):
                logs_at = (
                    f", before its logs reached it in {_when(self.settled[ident])}" if ident in self.settled else ""
                )
                self.settled[ident] = listed
                number = row[1] if row is not None else "?"
                self.how[ident] = f"the maintainers' table listed it (#{number}) in {_when(listed)}{logs_at}"
        for r in records:
            ident = record_ident(r)
            if ident is None or ident not in self.landed:
                continue
            if (why := dated_late(r)) is not None:
                self.demoted[ident] = why
            if (day := table_date(r)) is not None:
                start = dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC)
                after = next((x for x in self.commits if x.when is not None and x.when >= start), None)
                # Between the commit before that day and the first of it or after, the earlier the date the earlier.
                days = (after.when - start).days if after is not None and after.when is not None else 0
                base = after.position if after is not None else len(self.commits)
                self.settled[ident] = Landed(base - 1 + 1 / (2 + days), "", start)
                self.how[ident] = (
                    f"its logs carry no time and no date: placed where the maintainers' table dates it, {day}"
                )


def _when(landed: Landed) -> str:
    return landed.commit[:12] + (f" ({landed.when.date().isoformat()})" if landed.when else "")


def record_ident(record: Record) -> tuple[str, str] | None:
    """(track, folder under the track folder) of a record: what the ledger knows it by."""
    track_dir = _track_dir(record)
    if track_dir is None:
        return None
    rel = record.path.relative_to(track_dir).parts
    return (record.track.name, rel[0]) if rel else None


def _track_dir(record: Record) -> Path | None:
    if record.layout == "log":
        return None
    for parent in record.path.parents:
        if parent.name == record.track.name:
            return parent
    return None


def by_date(note: str) -> Ledger:
    return Ledger(note=note)


def _git(repo: Path, *args: str) -> str:
    """Run git read-only in ``repo``; no pager, no fsmonitor hook, output as text."""
    # --literal-pathspecs: a records folder named like ":(exclude)x" is a path, never pathspec magic.
    cmd = ["git", "-c", "core.fsmonitor=false", "--no-pager", "--literal-pathspecs", "-C", str(repo), *args]
    # GIT_DIR and friends (set inside a git hook) would point git at another repository than ``repo``.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=_GIT_TIMEOUT_S, check=False, env=env)
    except FileNotFoundError:
        raise LedgerError("git is not installed: the ledger is read from git history") from None
    except subprocess.TimeoutExpired:
        raise LedgerError(f"git took over {_GIT_TIMEOUT_S} s in {repo}") from None
    if proc.returncode != 0:
        first = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["(no message)"])[0][:200]
        raise LedgerError(f"git {args[0]} failed in {repo}: {first}")
    return proc.stdout.decode("utf-8", "surrogateescape")


def from_git(repo: Path, records_prefix: str = RECORDS_DIR) -> Ledger:
    """The ledger of the repository ``repo`` (its ``HEAD``), whose records sit under ``records_prefix``.

    ``LedgerError`` when it has no readable history or a shallow one (a shallow clone has no commit
    before its cut, so every record would seem to land there).
    """
    if not repo.is_dir():
        raise LedgerError(f"{repo}: no such folder; give a git checkout of the branch that judges (--ledger-repo)")
    top = _git(repo, "rev-parse", "--show-toplevel", "--is-shallow-repository").splitlines()
    if len(top) < 2:
        raise LedgerError(f"{repo}: git did not say where the repository starts")
    if top[1].strip() == "true":
        raise LedgerError(
            f"{repo} is a shallow clone: its history stops at the cut, so it cannot say when each record landed. "
            "Fetch the whole history (git fetch --unshallow; in GitHub Actions, actions/checkout with fetch-depth: 0)"
        )
    head = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}").strip()
    prefix = records_prefix.strip("/")
    # Every file each first-parent commit added or changed, anywhere in the repository (a log may have reached
    # main at any path before it was filed where it is), as "<mode> <mode> <old id> <new id> <status>\0<path>\0".
    # --no-renames: a move is a delete and an add of the same blob, which is all the blob ids need. -z: paths
    # come NUL-terminated, exactly as committed; a token "commit:<id> <time>" is always a commit header, as
    # every other token is a raw line (starting with ':') or a path that follows one.
    out = _git(
        repo,
        "log",
        "--first-parent",
        "--diff-merges=first-parent",
        "--raw",
        "--no-abbrev",
        "--no-renames",
        "--reverse",
        "-z",
        "--format=commit:%H %ct",
        head,
    )
    landed: dict[tuple[str, str], Landed] = {}
    blobs: dict[str, Landed] = {}
    by_commit: dict[str, Landed] = {}  # dicts keep their order: oldest first
    current: Landed | None = None
    position = -1
    strip = len(prefix) + 1 if prefix else 0
    pending_blob: tuple[str, str] | None = None  # (blob id, status) of the raw line whose path comes next
    for token in out.split("\0"):
        token = token.strip("\n")
        if not token:
            continue
        if (m := _COMMIT_RE.fullmatch(token)) is not None:
            position += 1
            when = dt.datetime.fromtimestamp(int(m.group(2)), tz=dt.UTC)
            current, pending_blob = Landed(position, m.group(1), when), None
            by_commit[current.commit] = current
            continue
        if (m := _RAW_RE.fullmatch(token)) is not None:
            pending_blob = (m.group(1), m.group(2))
            continue
        if pending_blob is None or current is None:
            continue
        blob, status = pending_blob
        pending_blob = None
        if status == "D":
            continue
        blobs.setdefault(blob, current)
        if prefix and not token.startswith(prefix + "/"):
            continue
        parts = token[strip:].split("/")
        if status == "A" and len(parts) >= 3 and parts[0] in TRACKS and parts[1]:
            landed.setdefault((parts[0], parts[1]), current)
    where = f"{top[0]}" + (f" ({prefix}/)" if prefix else "")
    return Ledger(
        note=f"records ordered by the ledger: the first-parent git history of {where} at {head[:12]} "
        f"({len(landed)} record folder(s) landed, each when its logs first reached the branch; any other record "
        "is pending and comes after them)",
        landed=landed,
        from_history=True,
        repo=Path(top[0]),
        head=head,
        prefix=prefix,
        blobs=blobs,
        object_format="sha256" if len(head) == 64 else "sha1",
        listed=_listings(Path(top[0]), head, prefix, by_commit),
        commits=list(by_commit.values()),
    )


def _listings(repo: Path, head: str, prefix: str, by_commit: dict[str, Landed]) -> dict[RowKey, Landed]:
    """The first first-parent commit whose README (beside the records folder) listed each row of its record tables.

    Only versions whose sequence of row numbers changed are parsed (a row is added or moved): the public README
    changed 455 times, its tables about a hundred."""
    readme = str(PurePosixPath(prefix).parent / README) if prefix else README
    readme = readme.removeprefix("./")
    log = _git(repo, "log", "--first-parent", "--reverse", "--format=%H", head, "--", readme).split()
    commits = [c for c in log if c in by_commit][-_MAX_README_VERSIONS:]
    if not commits:
        return {}
    listed: dict[RowKey, Landed] = {}
    previous: list[str] | None = None
    store = cache.Store("readme-rows", _ROWS_SALT())
    for commit, text in zip(commits, _blobs_at(repo, commits, readme), strict=True):
        if text is None:
            continue
        numbers = _ROW_NUMBER_RE.findall(text)
        if numbers == previous:
            continue
        previous = numbers
        for key in _row_keys_of(text, store):
            listed.setdefault(key, by_commit[commit])
    return listed


@functools.cache
def _ROWS_SALT() -> str:  # noqa: N802 - a constant, computed once
    return cache.salt_of([Path(upstream.__file__), Path(__file__)])


def _row_keys_of(text: str, store: cache.Store) -> list[RowKey]:
    """The row keys of a README version's record tables, kept in the cache by the text's sha256 (a README version
    never changes, and parsing its tables is most of the ledger's time on the public history)."""
    key = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
    raw = store.read(key, ".json")
    if raw is not None:
        try:
            data = json.loads(raw)
            if isinstance(data, list) and all(
                isinstance(k, list)
                and len(k) == 3
                and isinstance(k[0], str)
                and isinstance(k[1], str)
                and isinstance(k[2], int)
                for k in data
            ):
                return [(k[0], k[1], k[2]) for k in data]
        except ValueError:
            pass
    keys = row_keys(upstream.parse_tables(text).rows)
    store.write(key, ".json", json.dumps(keys).encode())
    return keys


def _blobs_at(repo: Path, commits: Sequence[str], path: str) -> list[str | None]:
    """The text of ``path`` at each commit (None where it is missing or over the README limit), read by one
    ``git cat-file --batch``."""
    request = "".join(f"{c}:{path}\n" for c in commits).encode()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    cmd = ["git", "-c", "core.fsmonitor=false", "-C", str(repo), "cat-file", "--batch"]
    try:
        proc = subprocess.run(cmd, input=request, capture_output=True, timeout=_GIT_TIMEOUT_S, check=False, env=env)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        raise LedgerError(f"git cat-file failed in {repo}: {e}") from None
    out, pos = proc.stdout, 0
    texts: list[str | None] = []
    for _ in commits:
        nl = out.find(b"\n", pos)
        if nl < 0:
            break
        header = out[pos:nl].split()
        if len(header) != 3 or header[1] != b"blob":
            texts.append(None)
            pos = nl + 1
            continue
        size = int(header[2])
        body = out[nl + 1 : nl + 1 + size]
        texts.append(body.decode("utf-8", "replace") if size <= upstream.MAX_README_BYTES else None)
        pos = nl + 1 + size + 1
    texts.extend([None] * (len(commits) - len(texts)))
    return texts


# A landed record's files a pull request may remove (a maintainer's mark; records.yml refuses one it adds).
_REMOVABLE = frozenset({"reproduced.json"})


def _same_blob(path: Path, size: int, sha: str) -> bool:
    """Whether a file's bytes are the blob ``sha`` of ``size`` bytes: the git object id is the sha1 (40 hex
    digits), or in a sha256 repository the sha256, of ``blob <size>\\0<bytes>``. A file of another size
    differs without being read (a pull request may swap a landed log for one of gigabytes); the rest is
    hashed in 1 MiB pieces."""
    if path.stat().st_size != size:
        return False
    digest = hashlib.sha1() if len(sha) == 40 else hashlib.sha256()
    digest.update(b"blob %d\0" % size)
    with path.open("rb") as f:
        while piece := f.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest() == sha


def landed_changes(ledger: Ledger, records_root: Path) -> list[tuple[Path, str]]:
    """``(path, why)`` for each file of a landed record that differs between ``records_root`` (the tree
    judged: a pull request's) and the ledger's commit: a file edited, removed or added. A pull request adds
    records; editing a landed one would rewrite evidence that was judged when it landed (a run taken from
    it, or its times made slower so that a new record beats it). Nothing without a history to compare."""
    if ledger.repo is None or not ledger.landed:
        return []
    tracks = sorted({track for track, _ in ledger.landed})
    prefix = ledger.prefix
    out = _git(
        ledger.repo,
        "ls-tree",
        "-r",
        "-l",
        "-z",
        "--full-tree",
        ledger.head,
        "--",
        *(f"{prefix}/{t}" if prefix else t for t in tracks),
    )
    committed: dict[tuple[str, str], dict[str, tuple[str, int]]] = {}
    strip = len(prefix) + 1 if prefix else 0
    for entry in out.split("\0"):
        if not entry:
            continue
        meta, _, name = entry.partition("\t")
        parts = name[strip:].split("/")
        if len(parts) >= 3 and (parts[0], parts[1]) in ledger.landed:
            fields = meta.split()  # mode, type, object id, size ("-" for a submodule)
            size = int(fields[3]) if fields[3].isdigit() else -1
            committed.setdefault((parts[0], parts[1]), {})["/".join(parts[2:])] = (fields[2], size)
    changes: list[tuple[Path, str]] = []
    for (track, name), files in sorted(committed.items()):
        folder = records_root / track / name
        have = {p.relative_to(folder).as_posix(): p for p in files_under(folder)} if folder.is_dir() else {}
        landed_at = ledger.landed[(track, name)].commit[:12]
        if not have:
            changes.append(
                (
                    folder,
                    f"the record that landed in {landed_at} is missing: a pull request adds records, it removes none "
                    "(one made before that record landed must merge the base branch first, to be judged against it)",
                )
            )
            continue
        for rel, (sha, size) in sorted(files.items()):
            path = folder / rel
            if rel not in have:
                if PurePosixPath(rel).name not in _REMOVABLE:
                    changes.append((path, f"removed from a record that landed in {landed_at}"))
            elif not _same_blob(have[rel], size, sha):
                changes.append((path, f"differs from the file that landed in {landed_at}"))
        changes.extend(
            (have[rel], f"added to a record that landed in {landed_at}") for rel in sorted(have.keys() - files.keys())
        )
    return changes


def for_records(records: Iterable[Record], strict: bool = False) -> Ledger:
    """The ledger of the git repository the records sit in, found from their folder; (date, name) order,
    with the reason in ``note``, where there is none. ``strict`` (``check``, what CI runs): a shallow clone
    is a ``LedgerError``, not (date, name) order: a checkout without its history (CI's checkout of a pull
    request) must be judged with ``--ledger-repo``, or a backdated record would jump the queue."""
    roots = {d.parent.resolve() for r in records if (d := _track_dir(r)) is not None}
    if not roots:
        return by_date("records ordered by (date, name): no record folder")
    if len(roots) > 1:
        return by_date("records ordered by (date, name): they come from several records folders")
    root = roots.pop()
    try:
        top = _git(root, "rev-parse", "--show-toplevel").strip()
    except LedgerError:
        return by_date(f"records ordered by (date, name): {root} is not in a git repository, so there is no ledger")
    if strict and _git(root, "rev-parse", "--is-shallow-repository").strip() == "true":
        raise LedgerError(
            f"{root} is in a shallow clone, whose history cannot say when each record landed: pass --ledger-repo "
            "with a checkout of the judging branch with its whole history (CI: the base branch's checkout), or "
            "fetch the whole history (git fetch --unshallow)"
        )
    try:
        prefix = root.relative_to(Path(top).resolve()).as_posix()
        return from_git(Path(top), "" if prefix == "." else prefix)
    except (LedgerError, ValueError) as e:
        return by_date(f"records ordered by (date, name): no ledger ({e})")
