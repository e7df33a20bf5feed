"""The ledger: the order in which records entered the main branch, read from git history.

A record's date is its submitter's word, and so is the timestamp in its logs: ordering by them let a
run made after a record's date take that date, and a copy of an open pull request's logs, filed one
day earlier, push the honest pull request out. What the submitter cannot write is when the record
was merged. So records are ordered by the ledger:

- a record *landed* at the commit, on the first-parent history of the judged branch (``HEAD`` of the
  ledger repository), that first added a file under its folder ``records/<track>/<name>/``; landed
  records are ordered by that commit (records added by one commit: by date, then name);
- a record that is not in that history (the pull request being judged) is *pending*: it comes after
  every landed record; pending records are ordered by (date, name) among themselves.

The first parent of a merge commit is the branch before the merge, so the first-parent history is
the sequence of states the branch went through, and the commit that added a folder there is the merge
(or the direct commit) that brought the record into it.

Where the records folder is not in a git repository (the public corpus, a folder made by a test) or
the history is shallow, every record is pending: (date, name) order, and ``Ledger.note`` says so.
``python -m tools check --ledger-repo PATH`` names the repository whose history is the ledger (CI:
the base branch's checkout, with its full history) when the records folder is a checkout of its own.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tools.records import Record, files_under
from tools.tracks import TRACKS

# The folder of records inside a repository of this project.
RECORDS_DIR = "records"
_GIT_TIMEOUT_S = 120
_COMMIT_RE = re.compile(r"commit:([0-9a-f]{40}|[0-9a-f]{64})")


class LedgerError(ValueError):
    """The ledger repository named on the command line cannot give an order (the message says why)."""


@dataclass(frozen=True)
class Landed:
    position: int  # index of the commit on the first-parent history, oldest first
    commit: str


@dataclass
class Ledger:
    """Where each record of one records folder stands; ``key`` orders records."""

    note: str  # one line for the output: where the order comes from
    landed: dict[tuple[str, str], Landed] = field(default_factory=dict)  # (track, record folder) -> landing
    from_history: bool = False  # False: no git history was read, every record is ordered by (date, name)
    repo: Path | None = None  # the repository whose history this is, at commit `head`, records under `prefix`
    head: str = ""
    prefix: str = RECORDS_DIR

    def entry(self, record: Record) -> Landed | None:
        ident = record_ident(record)
        return self.landed.get(ident) if ident else None

    def key(self, record: Record) -> tuple[int, int, str, str]:
        """Landed records first, in commit order; then pending ones; (date, name) breaks ties."""
        landed = self.entry(record)
        if landed is None:
            return (1, 0, record.date or "", record.name)
        return (0, landed.position, record.date or "", record.name)

    def describe(self, record: Record) -> str:
        landed = self.entry(record)
        if landed is not None:
            return f"landed in {landed.commit[:12]}"
        return "pending (not in the ledger's history)" if self.from_history else "no ledger: (date, name) order"


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
    pathspecs = [f"{prefix}/{t}" if prefix else t for t in TRACKS]
    # -z: paths come NUL-terminated, exactly as committed. Every path token starts with a pathspec
    # (a track folder), so a token "commit:<sha>" is always a commit header.
    out = _git(
        repo,
        "log",
        "--first-parent",
        "--diff-merges=first-parent",
        "--diff-filter=A",
        "--name-only",
        "--reverse",
        "-z",
        "--format=commit:%H",
        head,
        "--",
        *pathspecs,
    )
    landed: dict[tuple[str, str], Landed] = {}
    position, commit = -1, ""
    strip = len(prefix) + 1 if prefix else 0
    for token in out.split("\0"):
        token = token.lstrip("\n")
        if (m := _COMMIT_RE.fullmatch(token)) is not None:
            position, commit = position + 1, m.group(1)
            continue
        parts = token[strip:].split("/")
        if commit and len(parts) >= 3 and parts[0] in TRACKS and parts[1]:
            landed.setdefault((parts[0], parts[1]), Landed(position, commit))
    where = f"{top[0]}" + (f" ({prefix}/)" if prefix else "")
    return Ledger(
        note=f"records ordered by the ledger: the first-parent git history of {where} at {head[:12]} "
        f"({len(landed)} record folder(s) landed; any other record is pending and comes after them)",
        landed=landed,
        from_history=True,
        repo=Path(top[0]),
        head=head,
        prefix=prefix,
    )


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
