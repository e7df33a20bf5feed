"""A record's page, as data: its statistics card, the diff of its code against its baseline's, its stack.

The statistics card is what the public speedrun's best submissions write by hand in a ``statistics.md``:
each run's final val loss and time, their mean and standard deviation, the one-sided t-test of the mean
loss against the track's target, and the Welch t-test of its time against its baseline (the same-node
baseline runs where the record has them, else its baseline record's runs), with the slowest run beside
the baseline's fastest. Every number of the comparison is the record row's ``tools.judge.stats.Comparison``.

The code diff compares the source a record's logs carry with the source of its baseline record's logs
(docs/log-format.md: every log embeds its trainer). Both are untrusted text: the diff is computed only on
sources of a sane length, and at most MAX_DIFF_LINES lines of it are shown, each cut at MAX_LINE_CHARS. Lines are
split where Python splits them (``code_lines``), and every character that renders as nothing, as a blank or that
reorders the line (a Hangul filler, a variation selector, a zero-width space, a bidirectional override) is shown as its
escape (``\\u3164``) and named above the diff: the diff shows the code Python runs, not the code it seems to be.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tools.common.text import escape_char, is_hidden, visible
from tools.judge import stats
from tools.judge.ledger import record_ident
from tools.judge.parse import CodeFile
from tools.judge.records import ROLE_RUN, Role
from tools.judge.rules import Run
from tools.judge.verify import Verdict
from tools.site.board import Row, rel, seconds

MAX_DIFF_LINES = 1500  # lines of the unified diff shown on a page; the rest is counted
MAX_LINE_CHARS = 300  # a longer line is cut (minified code, or text made to blow up the page)
MAX_DIFF_INPUT_LINES = 6000  # sources longer than this are not diffed (difflib is quadratic at worst)
DIFF_CONTEXT = 3


@dataclass(frozen=True)
class RunLine:
    """One run as the card lists it."""

    name: str  # the log's file name
    link: str  # relative to the page
    seed: str
    final_loss: float | None
    time_s: float | None
    steps: int | None


@dataclass(frozen=True)
class DiffLine:
    kind: str  # "file" (--- / +++), "hunk" (@@), "add", "del" or "same"
    text: str


@dataclass(frozen=True)
class CodeDiff:
    """The unified diff of a record's code against its baseline's, ready to show."""

    old_name: str
    new_name: str
    lines: list[DiffLine]
    added: int
    removed: int
    hidden: int  # diff lines beyond MAX_DIFF_LINES, not shown
    note: str  # why there is no diff to show ("" when there is one)
    # Every file of the two codes: (its name, "changed" / "new" / "removed" / "same", lines added, lines removed),
    # shown above the diff, so a file past the shown lines is still named with its size.
    files: tuple[tuple[str, str, int, int], ...] = ()
    # The characters of the shown lines that render as nothing or as a blank, or reorder the line (tabs aside), each
    # shown as its escape: (the escape, the character's Unicode name, how many), in the order of their code points.
    hidden_chars: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class Card:
    """Everything a record's page shows beyond its row."""

    runs: list[RunLine]
    reference_runs: list[RunLine]
    reference_what: str  # "3 same-node baseline runs of X", "the 3 runs of X (the baseline record)", ""
    comparison: stats.Comparison  # the row's vs_baseline: the runs (candidate) against the reference runs
    target: float | None
    p_value: float | None  # the one-sided t-test of the mean final loss against the target
    slowest: RunLine | None
    reference_fastest: RunLine | None
    diff: CodeDiff
    stack: list[tuple[str, str]]  # (what, versions in words), e.g. ("PyTorch", "2.11.0+cu130 (3 runs)")
    gpus: str
    logs: list[tuple[str, str]]  # (file name, link) of every log: the runs, then the baseline runs
    supporting: list[tuple[str, str]]  # other logs in the record folder (never judged)
    roles: list[tuple[str, str, str, str]]  # (path in the folder, link, what it is taken as, why) of every log
    landing: str  # how the ledger placed the record, in words ("" without history)


def card(row: Row, page_dir: Path) -> Card:
    """The card of ``row``'s record; links are relative to ``page_dir``, the folder of its page."""
    v = row.verdict
    runs = [_run_line(r, page_dir) for r in v.runs]
    if v.same_node is not None:
        ref_runs = v.baseline_runs
        named = v.record.meta.baseline if v.record.meta and v.record.meta.baseline else "its baseline"
        what = f"{len(ref_runs)} same-node baseline run(s) of {named}, made on the node of the record's runs"
    elif row.baseline is not None:
        ref_runs = row.baseline.runs
        what = f"the {len(ref_runs)} run(s) of {row.baseline.record.name} ({row.baseline_why}), made on its own node"
    else:
        ref_runs, what = [], ""
    reference = [_run_line(r, page_dir) for r in ref_runs]
    comparison = row.vs_baseline
    return Card(
        runs=runs,
        reference_runs=reference,
        reference_what=what,
        comparison=comparison,
        target=v.record.track.target_val_loss,
        p_value=v.p_value,
        slowest=_extreme(runs, slowest=True),
        reference_fastest=_extreme(reference, slowest=False),
        diff=code_diff(row.baseline, v),
        stack=_stack(v.runs),
        gpus=_gpus(v.runs),
        logs=[(r.path.name, rel(r.path, page_dir)) for r in [*v.runs, *v.baseline_runs]],
        supporting=[(p.relative_to(v.record.path).as_posix(), rel(p, page_dir)) for p in v.record.supporting],
        roles=[(_in_folder(r.path, v), rel(r.path, page_dir), r.kind, r.why) for r in _roles(v)],
        landing=_landing(v),
    )


def _in_folder(path: Path, v: Verdict) -> str:
    try:
        return path.relative_to(v.record.path).as_posix() or path.name
    except ValueError:
        return path.name


def _roles(v: Verdict) -> list[Role]:
    """Every log of the record and what it was taken as: its roles, or for a bare log, the log as its one run."""
    if v.record.roles:
        return v.record.roles
    return [Role(r.path, ROLE_RUN, "the log given") for r in v.runs]


def _landing(v: Verdict) -> str:
    ident = record_ident(v.record)
    return v.ledger.how.get(ident, "") if ident is not None else ""


def _run_line(run: Run, page_dir: Path) -> RunLine:
    seed = (run.log.config or {}).get("seed")
    return RunLine(
        name=run.path.name,
        link=rel(run.path, page_dir),
        seed="—" if seed is None else str(seed),
        final_loss=_finite(run.log.final_val_loss),
        time_s=seconds(_finite(run.log.train_time_ms)),
        steps=run.log.final_step,
    )


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _extreme(runs: Sequence[RunLine], slowest: bool) -> RunLine | None:
    timed = [r for r in runs if r.time_s is not None]
    if not timed:
        return None
    return (max if slowest else min)(timed, key=lambda r: (r.time_s or 0.0, r.name))


def _counted(values: Sequence[str | None], n: int) -> str:
    """``2.11.0 (3 runs)``, or every value with its count when the runs differ; "—" when no log says."""
    counts = Counter(v for v in values if v)
    if not counts:
        return "—"
    return ", ".join(f"{v} ({c} of {n} runs)" if len(counts) > 1 or c != n else v for v, c in sorted(counts.items()))


def _stack(runs: Sequence[Run]) -> list[tuple[str, str]]:
    n = len(runs)
    return [
        ("Python", _counted([r.log.python_version for r in runs], n)),
        ("PyTorch", _counted([r.log.torch_version for r in runs], n)),
        ("CUDA", _counted([r.log.cuda_version for r in runs], n)),
    ]


def _gpus(runs: Sequence[Run]) -> str:
    return _counted([f"{r.log.num_gpus}× {r.log.gpu_name}" if r.log.gpu_name else None for r in runs], len(runs))


# --- the code diff ----------------------------------------------------------------------------


TRAINER = "the trainer"  # how the diff names a log's own file (its name is not in the log; appended files' are)


def code_of(v: Verdict) -> list[CodeFile] | None:
    """The files of the code most of the record's runs carry (their code hash's): the trainer, then each file it
    appended to its log; None when no log carries code (llm.c logs; copies that replaced it with its sha256)."""
    hashes = Counter(r.log.code_sha256 for r in v.runs if r.log.code_sha256 and _has_code(r))
    if not hashes:
        return None
    best = min(hashes, key=lambda h: (-hashes[h], h))
    return next(r.log.code_files for r in v.runs if r.log.code_sha256 == best and _has_code(r))


def _has_code(run: Run) -> bool:
    return any(f.text.strip() for f in run.log.code_files)


def code_diff(baseline: Verdict | None, v: Verdict) -> CodeDiff:
    """The unified diff of every file of the record's code against its baseline's, file by file (an appended
    kernel file is part of the change), at most MAX_DIFF_LINES lines shown."""
    new_name = v.record.name
    if baseline is None:
        return CodeDiff(
            "", new_name, [], 0, 0, 0, "the first record of its class: there is no baseline to diff against"
        )
    old_name = baseline.record.name
    new, old = code_of(v), code_of(baseline)
    missing = [r for r, code in ((v, new), (baseline, old)) if code is None]
    if missing or new is None or old is None:
        omitted = any(run.log.source_omitted for r in missing for run in r.runs)
        return CodeDiff(
            old_name,
            new_name,
            [],
            0,
            0,
            0,
            f"the logs of {' and '.join(r.record.name for r in missing)} carry no source code to compare"
            + (" (these copies of them replace it with a line that holds its sha256)" if omitted else ""),
        )
    olds = {f.name: f.text for f in old}
    news = {f.name: f.text for f in new}
    if olds == news:
        return CodeDiff(old_name, new_name, [], 0, 0, 0, f"the same code as {old_name}, byte for byte")
    names = list(dict.fromkeys([*news, *olds]))  # the record's files in its order, then files it dropped
    if any(len(code_lines(t)) > MAX_DIFF_INPUT_LINES for t in [*olds.values(), *news.values()]):
        return CodeDiff(
            old_name,
            new_name,
            [],
            0,
            0,
            0,
            f"a file of over {MAX_DIFF_INPUT_LINES:,} lines is not diffed here: extract both "
            "(python -m tools reproduce LOG --extract FILE) and diff them",
        )
    lines: list[DiffLine] = []
    added = removed = 0
    summary: list[tuple[str, str, int, int]] = []
    hidden: Counter[str] = Counter()
    for name in names:
        shown = name or TRAINER
        a = code_lines(olds.get(name, ""))
        b = code_lines(news.get(name, ""))
        if a == b:
            summary.append((shown, "same", 0, 0))
            continue
        file_added, file_removed = added, removed
        before = f"{old_name}: {shown} (baseline)" if name in olds else "/dev/null"
        after = f"{new_name}: {shown}" if name in news else "/dev/null"
        for i, text in enumerate(difflib.unified_diff(a, b, before, after, n=DIFF_CONTEXT, lineterm="")):
            if i < 2:  # the --- and +++ lines that name the two sides
                kind = "file"
            elif text.startswith("@@"):
                kind = "hunk"
            elif text.startswith("+"):
                kind, added = "add", added + 1
            elif text.startswith("-"):
                kind, removed = "del", removed + 1
            else:
                kind = "same"
            cut = _cut(text)
            if len(lines) < MAX_DIFF_LINES:  # the lines shown: their hidden characters are named above the diff
                hidden.update(ch for ch in cut if ch != "\t" and is_hidden(ch))
            lines.append(DiffLine(kind, _cut(visible(cut, keep="\t"))))
        status = "new" if name not in olds else "removed" if name not in news else "changed"
        summary.append((shown, status, added - file_added, removed - file_removed))
    hidden_lines = max(0, len(lines) - MAX_DIFF_LINES)
    named = tuple((escape_char(ch), unicodedata.name(ch, "unnamed"), n) for ch, n in sorted(hidden.items()))
    return CodeDiff(old_name, new_name, lines[:MAX_DIFF_LINES], added, removed, hidden_lines, "", tuple(summary), named)


# Python ends a line of code at \r\n, \r or \n only; str.splitlines() also splits at \x0b, \x0c, \x1c-\x1e, \x85,
# U+2028 and U+2029, which Python reads as characters of the line (in a comment or a string): split so, a comment
# holding U+2028 would show as a comment and a line of code that Python never runs.
_PYTHON_NEWLINE = re.compile(r"\r\n|\r|\n")


def code_lines(text: str) -> list[str]:
    """The lines of ``text`` as Python reads them (without their line ends)."""
    lines = _PYTHON_NEWLINE.split(text)
    if lines[-1] == "":
        lines.pop()
    return lines


def _cut(text: str) -> str:
    return text if len(text) <= MAX_LINE_CHARS else text[: MAX_LINE_CHARS - 1] + "…"
