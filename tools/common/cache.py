"""A content-addressed cache of what the judge computes from one file or one code section.

Judging the public speedrun's tree reads 831 logs (164 MB) whose code sections are 145 distinct ones:
parsing them and reading their code takes ~18 s of CPU, and every ``verify``, ``leaderboard`` and
``check`` did it again. What the judge computes from a file depends only on the file's bytes and on the
judge's own code, so it is kept here under the sha256 of both: ``<root>/<namespace>/<salt>/<key>``, where

- ``key`` is the sha256 of the input (a log's bytes, a code section's text) and never a path: a moved or
  renamed file hits, an edited one misses;
- ``salt`` is the sha256 of the source files of the modules that compute the entry (``salt_of``): any
  change to them starts an empty folder, so an entry is never read by code that did not write it.

Entries are written whole into a temporary file and renamed into place, so a reader sees a whole entry
or none; one that cannot be read or decoded is a miss (and is replaced), never an error. Nothing read
from the cache is executed: entries are JSON or ``numpy.load(allow_pickle=False)`` arrays, decoded by
the module that owns them.

The root is ``$SPEEDRUN_CACHE`` if set, else ``$XDG_CACHE_HOME/speedrun-tools``, else
``~/.cache/speedrun-tools``; ``SPEEDRUN_CACHE=off`` (or ``0``) turns the cache off. Folders of an older
salt are left behind; ``prune`` removes them (``python -m tools cache --prune``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

ENV = "SPEEDRUN_CACHE"
_OFF = frozenset({"off", "0", "no", "false"})
_HEX = frozenset("0123456789abcdef")


def root() -> Path | None:
    """The cache folder, or None when the cache is off."""
    value = os.environ.get(ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF or not value.strip() else Path(value)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "speedrun-tools"


def salt_of(files: Iterable[Path]) -> str:
    """The sha256 of the given source files (sorted by name), with their names: what an entry depends on."""
    h = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


class Store:
    """One namespace of the cache (``parse``, ``compile-flags``), under one salt."""

    def __init__(self, namespace: str, salt: str, base: Path | None = None) -> None:
        top = root() if base is None else base
        self.folder = None if top is None else top / namespace / salt[:32]

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def path(self, key: str, suffix: str) -> Path | None:
        if self.folder is None or len(key) != 64 or not set(key) <= _HEX:
            return None
        return self.folder / key[:2] / f"{key}{suffix}"

    def read(self, key: str, suffix: str) -> bytes | None:
        """The entry's bytes, or None (no entry, cache off, or unreadable)."""
        path = self.path(key, suffix)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    def write(self, key: str, suffix: str, data: bytes) -> None:
        """Store the entry; a cache that cannot be written (read-only home, full disk) is silently skipped."""
        path = self.path(key, suffix)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            return


def prune(keep: dict[str, str], base: Path | None = None) -> list[Path]:
    """Remove every salt folder but ``keep[namespace]`` under each namespace; return what was removed."""
    top = root() if base is None else base
    removed: list[Path] = []
    if top is None or not top.is_dir():
        return removed
    for namespace, salt in keep.items():
        folder = top / namespace
        if not folder.is_dir() or folder.is_symlink():
            continue
        for entry in sorted(folder.iterdir()):
            if entry.name != salt[:32] and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    return removed
