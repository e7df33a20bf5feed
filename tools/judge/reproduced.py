"""A record folder's reproduced.json: the maintainers' mark that its runs were run again (docs/reproduce.md).

``python -m tools reproduce RECORD --write-verdict`` (tools/reproduce/runner.py) writes it; the judge reads it
here, validated key by key and checked against the logs now in the folder, to show the mark (never as a verdict
of the record: a record does not vouch for it). The format lives with its reader, so the judge never imports
the runner.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPRODUCED_FILE = "reproduced.json"
# /2 adds, per run, what the run-time probe saw ("probe") and the static reading of the code ("static"), and the
# bubblewrap sandbox; files of /1 (before the probe) are still read.
REPRODUCED_FORMAT = "speedrun-reproduced/2"
_FORMATS = ("speedrun-reproduced/1", REPRODUCED_FORMAT)
SANDBOXES = ("bwrap", "docker", "none")
MAX_REPRODUCED_BYTES = 64 * 1024
REPRODUCED = "reproduced"  # the verdict of a run that reproduced
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")


def strict_int(value: Any, low: int, high: int) -> int | None:
    """``value`` if it is an int (not a bool) within [low, high], else None."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return value
    return None


@dataclass(frozen=True)
class ProbeSummary:
    """What the run-time probe saw (tools/reproduce/probe.py): clean, or the rules broken and what was missing."""

    clean: bool
    findings: tuple[str, ...]


@dataclass(frozen=True)
class ReproducedRun:
    log: str  # file name of the record's log
    log_sha256: str
    verdict: str
    reproduced: bool
    reproduction_sha256: str | None
    probe: ProbeSummary | None = None  # None in a file written before the probe (format /1)
    static: tuple[str, ...] = ()  # the compile-flags rule's reading of the code, as reproduce showed it


@dataclass
class Reproduced:
    """A record folder's reproduced.json, validated, and checked against the logs now in the folder."""

    path: Path
    date: str
    tools_commit: str | None
    machine: dict[str, Any]
    runs: list[ReproducedRun]
    stale: list[str] = field(default_factory=list)  # runs whose log changed or vanished since
    missing: list[str] = field(default_factory=list)  # logs of the record no run covers

    @property
    def all_reproduced(self) -> bool:
        """True when every log of the record, as it is now, was reproduced: the leaderboard's mark."""
        return bool(self.runs) and all(r.reproduced for r in self.runs) and not self.stale and not self.missing


_LOG_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\.txt$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}(-dirty)?$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_VERDICT_RE = re.compile(
    r"^(reproduced|run failed|code differs|data differs|loss differs( at step \d{1,12})?|config differs( \(.{0,200}\))?|"
    r"(slower|faster) than claimed( by \d{1,9}\.\d %)?|probe report incomplete|"
    r"(rule broken at run time|stopped at a limit)( \(.{0,200}\))?)$"
)


def validate_reproduced(data: Any, where: str) -> tuple[str, str | None, dict[str, Any], list[ReproducedRun]]:
    def bad(why: str) -> ValueError:
        return ValueError(
            f"{where}: {why}; this file is written by `python -m tools reproduce RECORD --write-verdict` only "
            "(maintainers): remove it or write it again"
        )

    if not isinstance(data, dict):
        raise bad("not a JSON object")
    want = {"format", "date", "tools_commit", "machine", "runs"}
    if set(data) != want:
        raise bad(f"its keys are {sorted(data)[:10]}, not {sorted(want)}")
    if data["format"] not in _FORMATS:
        raise bad(f"format {str(data['format'])[:40]!r} is not {REPRODUCED_FORMAT!r}")
    probed = data["format"] == REPRODUCED_FORMAT
    date = data["date"]
    try:
        ok_date = isinstance(date, str) and bool(_DATE_RE.match(date)) and dt.date.fromisoformat(date) is not None
    except ValueError:
        ok_date = False
    if not ok_date:
        raise bad(f"date {str(date)[:20]!r} is not a YYYY-MM-DD date")
    commit = data["tools_commit"]
    if commit is not None and not (isinstance(commit, str) and _COMMIT_RE.match(commit)):
        raise bad("tools_commit is neither null nor a git commit hash")
    machine = data["machine"]
    if not isinstance(machine, dict) or set(machine) != {"gpus", "nproc", "sandbox", "python", "torch"}:
        raise bad("machine must have exactly gpus, nproc, sandbox, python and torch")
    gpus = machine["gpus"]
    if not isinstance(gpus, list) or len(gpus) > 1024 or not all(isinstance(g, str) and len(g) <= 100 for g in gpus):
        raise bad("machine.gpus must be a list of GPU names")
    if strict_int(machine["nproc"], 1, 4096) is None or machine["sandbox"] not in SANDBOXES:
        raise bad(f"machine.nproc must be a number of processes and machine.sandbox one of {', '.join(SANDBOXES)}")
    for k in ("python", "torch"):
        if machine[k] is not None and not (isinstance(machine[k], str) and len(machine[k]) <= 200):
            raise bad(f"machine.{k} must be a version string or null")
    runs = data["runs"]
    if not isinstance(runs, list) or not 1 <= len(runs) <= 1000:
        raise bad("runs must be a list of 1 to 1000 runs")
    out = []
    seen = set()
    for r in runs:
        keys = {"log", "log_sha256", "verdict", "reproduced", "reproduction_sha256"} | (
            {"probe", "static"} if probed else set()
        )
        if not isinstance(r, dict) or set(r) != keys:
            raise bad(f"each run must have exactly {sorted(keys)}")
        if not (isinstance(r["log"], str) and _LOG_NAME_RE.match(r["log"])) or r["log"] in seen:
            raise bad(f"run log {str(r['log'])[:60]!r} is not the plain, unique file name of a log of the record")
        seen.add(r["log"])
        if not (isinstance(r["log_sha256"], str) and _HEX64_RE.match(r["log_sha256"])):
            raise bad(f"{r['log']}: log_sha256 is not a sha256")
        rep = r["reproduction_sha256"]
        if rep is not None and not (isinstance(rep, str) and _HEX64_RE.match(rep)):
            raise bad(f"{r['log']}: reproduction_sha256 is neither null nor a sha256")
        if not (isinstance(r["verdict"], str) and _VERDICT_RE.match(r["verdict"])):
            raise bad(f"{r['log']}: verdict {str(r['verdict'])[:60]!r} is not one reproduce gives")
        if not isinstance(r["reproduced"], bool) or r["reproduced"] != (r["verdict"] == REPRODUCED):
            raise bad(f"{r['log']}: reproduced must be true exactly when the verdict is 'reproduced'")
        if r["reproduced"] and rep is None:
            raise bad(f"{r['log']}: a reproduced run needs the sha256 of its reproduction log")
        probe, static = _probe_fields(r, probed, bad)
        out.append(ReproducedRun(r["log"], r["log_sha256"], r["verdict"], r["reproduced"], rep, probe, static))
    return date, commit, machine, out


def _texts(value: Any, limit: int) -> bool:
    return isinstance(value, list) and len(value) <= limit and all(isinstance(x, str) and len(x) <= 300 for x in value)


def _probe_fields(
    r: dict[str, Any], probed: bool, bad: Callable[[str], ValueError]
) -> tuple[ProbeSummary | None, tuple[str, ...]]:
    """The run's probe summary and static reading (format /2), validated; (None, ()) for a /1 file."""
    if not probed:
        return None, ()
    probe = r["probe"]
    if not isinstance(probe, dict) or set(probe) != {"clean", "findings"} or not isinstance(probe["clean"], bool):
        raise bad(f"{r['log']}: probe must have exactly clean (true or false) and findings")
    if not _texts(probe["findings"], 20) or not _texts(r["static"], 20):
        raise bad(f"{r['log']}: probe.findings and static must be lists of at most 20 short texts")
    if r["reproduced"] and (not probe["clean"] or probe["findings"]):
        raise bad(f"{r['log']}: a reproduced run needs a clean probe report")
    return ProbeSummary(probe["clean"], tuple(probe["findings"])), tuple(r["static"])


def read_reproduced(record: Path) -> Reproduced | None:
    """The record folder's reproduced.json, validated; None when there is none.

    Raises ValueError (one paragraph) for a file that is not what ``--write-verdict`` writes: a link,
    too big, not JSON, any key missing, extra or of the wrong type. A valid file whose runs no longer
    match the record's logs (a log edited, added or removed since) is returned with ``stale`` /
    ``missing`` filled, so that ``all_reproduced`` is False.
    """
    path = record / REPRODUCED_FILE
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_symlink() or not path.is_file():
        raise ValueError(f"{path}: not a regular file; {REPRODUCED_FILE} must be the file reproduce wrote")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_REPRODUCED_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror}); check its permissions") from e
    if len(raw) > MAX_REPRODUCED_BYTES:
        raise ValueError(f"{path}: larger than {MAX_REPRODUCED_BYTES:,} bytes, not a file reproduce writes")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{path}: not valid JSON ({type(e).__name__}); remove it or write it again") from None
    date, commit, machine, runs = validate_reproduced(data, str(path))
    rep = Reproduced(path, date, commit, machine, runs)
    logs = {p.name: p for p in record.glob("*.txt") if p.is_file() and not p.is_symlink()}
    for r in runs:
        p = logs.get(r.log)
        if p is None:
            rep.stale.append(f"{r.log}: reproduced, but no longer in the record")
        elif _file_sha256(p) != r.log_sha256:
            rep.stale.append(f"{r.log}: changed since it was reproduced (sha256 differs)")
    rep.missing = sorted(set(logs) - {r.log for r in runs})
    return rep


def _file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks: verify reads every record's reproduced.json, and a log may be large."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
