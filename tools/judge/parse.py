"""Read one record log (docs/log-format.md) into facts.

A log is untrusted input. It is read as bytes and decoded as text; nothing in it is executed,
imported or evaluated (JSON lines go through ``json.loads``, nothing else). No content, however
broken, makes ``parse_log`` raise: what is wrong is recorded in ``ParsedLog.structure_issues`` and
judged by the ``structure`` rule. Only an unreadable path (missing file, a folder) raises
``ValueError``.

Forms accepted, newest first:
- this repository's logs: source, ``=``*100, environment block with ``config:``/``data:`` JSON lines,
  ``=``*100, metric lines;
- the public speedrun's logs since late 2024 (same layout, no config/data lines);
- files a trainer appends to its own code: after a line of 40 ``-`` and ``# <file name>`` (train_scale.py), or,
  as the public trainers write since 2026, between blank lines and a second line of 40 ``-``; each file of the
  code is one ``CodeFile`` of ``ParsedLog.code_files``;
- 2024 logs: ``step:N/M train_loss:X train_time:Tms step_avg:Sms`` lines, a source section that is
  empty because the file starts with the separator (the code then sits in the next section), a
  third separator before the metric lines;
- ``train_time:12.345s`` (seconds instead of milliseconds);
- llm.c ``main.log`` lines ``s:N trl:X`` (train, since 2024-10 followed by ``lr:X norm:X``) and ``s:N tel:X``
  (val), which carry no time;
- the anchor corpus's ``# training source omitted from this copy: sha256=<hex> lines=<n>`` line in
  place of the source, whose hex is taken as the source hash.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import hashlib
import io
import itertools
import json
import math
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tools.common.cache import Store, salt_of
from tools.common.text import printable
from tools.judge import sourcecheck
from tools.judge.sourcecheck import MAX_CODE_CHARS

SEPARATOR = "=" * 100
# A record log of the short track is ~0.1-2 MB; anything past this is not a log of a training run.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Bounds that keep any file under DEFAULT_MAX_BYTES within seconds and well under 1 GB (bench/bench_hostile.py):
# each is far above what a real log has, and a log past one gets a structure issue instead of being read.
MAX_METRIC_LINES = 250_000  # the longest run of the public corpus has 20,508
MAX_ENV_FACT_LINES = 10_000  # lines of nvidia-smi/version/config form in the environment block (real: ~50)
MAX_JSON_LINE_CHARS = 1024 * 1024  # a config: or data: line (real: ~2-20 KB)
_FINDALL_SLICE = 1 << 20  # characters of metric lines matched at once
_HASH_SLICE = 1 << 22  # characters of a section encoded at once for its hash

_SEPARATOR_RE = re.compile(r"^={100}\r?$", re.M)
# A file a trainer appends to its own code: after a line of 40 '-' and a line '# <file name>' (this harness's
# train_scale.py), and in the public speedrun's trainers since 2026 between blank lines and a second line of 40 '-':
#     code += f"\n\n{'-'*40}\n# triton_kernels.py\n{'-'*40}\n\n" + f.read()
# Group 1 is the name, group 2 the second '-' line and the blank line after it. The name must be a plain file name
# with an extension, so a line of '-' and a '# Heading' comment inside a docstring is never taken for a separator.
# It starts with the newline before the '-' line: a literal prefix the regex engine finds by a fast scan.
_DASHES = "-" * 40
_APPENDED_RE = re.compile(
    "\n" + _DASHES + r"\r?\n# ([A-Za-z0-9_][A-Za-z0-9_+-]{0,150}(?:\.[A-Za-z0-9_+-]{1,40}){1,4})\r?\n"
    "(" + _DASHES + r"\r?\n(?:\r?\n)?)?"
)
MAX_APPENDED_FILES = 16  # files appended to one trainer (real logs: 0 or 1)
_OMITTED_RE = re.compile(r"^# training source omitted from this copy: sha256=([0-9a-fA-F]{64}) lines=(\d{1,9})\s*$")
# Numbers as Python and numpy print them; bounded so a hand-edited log cannot feed int() a huge literal.
# Possessive (?+, {m,n}+): what follows a number never starts with a digit, '.', 'e' or a sign, so giving back part of
# it can never let a line match; the regex engine then keeps no state to backtrack to (15% faster).
_NUM = r"[-+]?+(?:[0-9]{1,20}+(?:\.[0-9]{0,20}+)?+(?:[eE][-+]?+[0-9]{1,3}+)?+|nan|inf)"
# The groups: step, total, "v" for a val line, loss, train_time, "s" for seconds, step_avg, "s" for seconds. The
# one-character groups cost findall nothing (Python keeps one copy of each such string): 20% less than the words.
_METRIC_RE = re.compile(
    r"^step:([0-9]{1,12}+)/([0-9]{1,12}+)"
    rf"(?: (?:(v)al_loss|train_loss):({_NUM}))?+"
    r" train_time:([0-9]{1,15}+(?:\.[0-9]{0,9}+)?+)(?:ms|(s))"
    rf"(?: step_avg:({_NUM})(?:ms|(s)))?+[ \t\r]*$",
    re.M,
)
# A line that starts like a metric line but is not one (for the first few examples of malformed lines).
_MALFORMED_STEP_RE = re.compile(rf"^(?!{_METRIC_RE.pattern[1:]})step:[^\n]*", re.M)
# llm.c's train_gpt2.cu: "s:%d tel:%.4f" and "s:%d trl:%.6f", later "s:%d trl:%.4f lr:%.6f norm:%.2f".
_LLMC_RE = re.compile(rf"^s:([0-9]{{1,12}}) (trl|tel):({_NUM})(?: lr:({_NUM}))?(?: norm:({_NUM}))?[ \t\r]*$", re.M)
# The same, matched with the newline before the line instead of '^': a pattern that starts with a literal
# is searched for by the regex engine's fast literal scan, 6x faster through a file of junk lines.
_METRIC_NL_RE, _MALFORMED_STEP_NL_RE, _LLMC_NL_RE = (
    re.compile("\n" + r.pattern[1:], re.M) for r in (_METRIC_RE, _MALFORMED_STEP_RE, _LLMC_RE)
)
_PEAK_MEMORY_RE = re.compile(r"^peak memory allocated: (\d{1,12}) MiB reserved: (\d{1,12}) MiB", re.M)
_PEAK_MEMORY_NL_RE = re.compile("\n" + _PEAK_MEMORY_RE.pattern[1:])  # as the *_NL_RE patterns below: 10x faster
_PYTHON_RE = re.compile(r"Running Python (\S+)")
_TORCH_RE = re.compile(r"Running [Pp]y[Tt]orch (\S+) compiled for (?:CUDA (\S+)|CPU)")
# One GPU row of the nvidia-smi table, "|   0  NVIDIA H100 80GB HBM3          On  |   0000...", read in two
# parts by _smi_gpu_row: the index, then the persistence mode that ends the name.
_SMI_ROW_HEAD_RE = re.compile(r"\|[^\S\n]+(\d{1,3})[^\S\n]++")
_SMI_ROW_STATE_RE = re.compile(r"(?<=\s)(?:On|Off)[^\S\n]++\|")
_SMI_NOT_AVAILABLE = "nvidia-smi: not available"
# The first line of nvidia-smi's output: the machine's local time when the run started,
# "Sat Jan 10 23:36:12 2026" (C's asctime format: the day of the month is padded with a space).
_WEEKDAYS = "Mon Tue Wed Thu Fri Sat Sun".split()  # date.weekday()'s order
_MONTHS = {name: i for i, name in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
_SMI_TIME_RE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([A-Z][a-z]{2}) {1,2}(\d{1,2}) \d{2}:\d{2}:\d{2} (\d{4})\s*$"
)


@dataclass(frozen=True, slots=True)
class ValPoint:
    step: int
    val_loss: float
    train_time_ms: float | None  # None only for llm.c lines, which carry no time


@dataclass(frozen=True, slots=True)
class CodeFile:
    """One file of the code that ran, as the log holds it (``ParsedLog.code_files``)."""

    name: str  # "" for the trainer itself, else the appended file's name as the log writes it
    text: str  # the file as logged, cut at MAX_CODE_CHARS + 1 characters (what the compile-flags rule reads, and one)
    line: int  # 1-based line of the log where text starts


@dataclass
class Metrics:
    """Every step/val metric line, in file order, as columns (one row per line).

    Columns rather than one object per line: a 2024 log has 20,000 lines, the corpus 1.4M, and
    this keeps parsing the whole corpus within the benchmark budget (bench/bench_tools.py).
    """

    step: np.ndarray  # int64 [n]
    total: np.ndarray  # int64 [n]; -1 where the line form has no total (llm.c)
    train_time_ms: np.ndarray  # float64 [n]; NaN where the line form has no time (llm.c)
    step_avg_ms: np.ndarray  # float64 [n]; NaN when absent or printed as nan
    has_step_avg: np.ndarray  # bool [n]
    loss: np.ndarray  # float64 [n]; NaN when the line has no loss
    is_val: np.ndarray  # bool [n]
    lr: np.ndarray  # float64 [n]; the learning rate of an llm.c train line (lr:X), NaN where the line has none
    grad_norm: np.ndarray  # float64 [n]; the gradient norm of an llm.c train line (norm:X), NaN where none

    @classmethod
    def empty(cls) -> Metrics:
        f, i, b = np.zeros(0, np.float64), np.zeros(0, np.int64), np.zeros(0, bool)
        return cls(i, i, f, f, b, f, b, f, f)

    def __len__(self) -> int:
        return int(self.step.shape[0])

    def describe(self, row: int) -> str:
        """One metric line, rebuilt from its fields, for evidence."""
        total = f"/{self.total[row]}" if self.total[row] >= 0 else ""
        parts = [f"step:{self.step[row]}{total}"]
        if self.is_val[row]:
            parts.append(f"val_loss:{self.loss[row]:.4f}")
        elif not math.isnan(self.loss[row]):
            parts.append(f"train_loss:{self.loss[row]:.4f}")
        if not math.isnan(self.train_time_ms[row]):
            parts.append(f"train_time:{self.train_time_ms[row]:.0f}ms")
        if self.has_step_avg[row]:
            parts.append(f"step_avg:{self.step_avg_ms[row]:.2f}ms")
        if not math.isnan(self.lr[row]):
            parts.append(f"lr:{self.lr[row]:.6f}")
        if not math.isnan(self.grad_norm[row]):
            parts.append(f"norm:{self.grad_norm[row]:.2f}")
        return " ".join(parts)


@dataclass
class ParsedLog:
    path: str
    size_bytes: int
    file_sha256: str
    source_sha256: str | None = None  # sha256 of the source section, or the hex of the "omitted" line
    source_lines: int = 0
    source_omitted: bool = False  # the anchor corpus's one-line stand-in for the source
    source_text: str = ""  # the source section's first file (the whole section but for appended files; "" if omitted)
    # code beside the source: the files the trainer appended to its own, each as "# <name>" and its text (the
    # separator lines dropped), or code between the source section and the environment block (2024 logs)
    extra_code: str = ""
    appended_files: list[str] = field(default_factory=list)  # the names of the appended files, in order
    code_sha256: str | None = None  # identity of "the code of this run": source plus any extra code
    # every file of the code that ran, in order: the trainer (name ""), then each file appended to it; none when
    # the log has no code (an "omitted" line, an llm.c log)
    code_files: list[CodeFile] = field(default_factory=list)
    has_separator: bool = False
    has_environment: bool = False
    python_version: str | None = None
    torch_version: str | None = None
    cuda_version: str | None = None
    nvidia_smi: str = "missing"  # "table", "not available" or "missing"
    gpu_names: list[str] = field(default_factory=list)  # one per GPU row of nvidia-smi, by index
    run_date: str | None = None  # YYYY-MM-DD of nvidia-smi's timestamp (local time of the node), if any
    config: dict[str, Any] | None = None
    config_error: str | None = None
    data: dict[str, Any] | None = None
    data_error: str | None = None
    host_id: str | None = None  # the `host:` line's salted hash of the machine id (16 hex digits)
    gpu_uuids: list[str] = field(default_factory=list)  # the `host:` line's GPU UUIDs, in rank order
    host_error: str | None = None  # why the `host:` line was not read (absent in logs before it existed: None)
    val_curve: list[ValPoint] = field(default_factory=list)
    metrics: Metrics = field(default_factory=Metrics.empty)
    metrics_form: str = "none"  # "speedrun" (step:N/M lines), "llm.c" (s:N lines) or "none"
    total_steps: int | None = None
    peak_memory_mib: int | None = None
    malformed_lines: list[str] = field(
        default_factory=list
    )  # the first few lines that start like a metric but are not one
    malformed_count: int = 0
    structure_issues: list[str] = field(default_factory=list)

    @property
    def num_gpus(self) -> int:
        return len(self.gpu_names)

    @property
    def gpu_name(self) -> str | None:
        """The GPU model, or ``"mixed: A, B"`` when the node has several models."""
        names = sorted(set(self.gpu_names))
        if not names:
            return None
        return names[0] if len(names) == 1 else "mixed: " + ", ".join(names)

    @property
    def final(self) -> ValPoint | None:
        return self.val_curve[-1] if self.val_curve else None

    @property
    def final_step(self) -> int | None:
        return self.val_curve[-1].step if self.val_curve else None

    @property
    def final_val_loss(self) -> float | None:
        return self.val_curve[-1].val_loss if self.val_curve else None

    @property
    def train_time_ms(self) -> float | None:
        """The run's time: ``train_time`` of the last val line (the one at ``step == total``)."""
        return self.val_curve[-1].train_time_ms if self.val_curve else None

    @property
    def uses_harness_format(self) -> bool:
        """True for this repository's logs, which carry ``config:``/``data:`` lines."""
        return self.config is not None or self.config_error is not None

    def to_json(self) -> dict[str, Any]:
        """The facts ``python -m tools parse --json`` prints (one object per log)."""
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "file_sha256": self.file_sha256,
            "source_sha256": self.source_sha256,
            "source_lines": self.source_lines,
            "source_omitted": self.source_omitted,
            "code_sha256": self.code_sha256,
            "final_step": self.final_step,
            "total_steps": self.total_steps,
            "final_val_loss": _json_float(self.final_val_loss),
            "train_time_ms": _json_float(self.train_time_ms),
            "num_val_lines": len(self.val_curve),
            "num_gpus": self.num_gpus,
            "gpu_name": self.gpu_name,
            "nvidia_smi": self.nvidia_smi,
            "run_date": self.run_date,
            "python_version": self.python_version,
            "torch_version": self.torch_version,
            "cuda_version": self.cuda_version,
            "config": self.config,
            "data": self.data,
            "host_id": self.host_id,
            "gpu_uuids": self.gpu_uuids,
            "peak_memory_mib": self.peak_memory_mib,
            "structure_issues": self.structure_issues,
            "val_curve": [[p.step, _json_float(p.val_loss), _json_float(p.train_time_ms)] for p in self.val_curve],
        }


def _json_float(x: float | None) -> float | str | None:
    """JSON has no NaN/inf: print them as strings so the output stays valid JSON."""
    if x is None or math.isfinite(x):
        return x
    return str(x)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_log_bytes(path: Path, max_bytes: int) -> tuple[bytes, int]:
    """The first ``max_bytes + 1`` bytes of the file and its size; ``ValueError`` if it cannot be read."""
    if path.is_symlink():  # a record holds its logs; a link could point anywhere on the machine
        raise ValueError(f"{path}: a symbolic link, not a log file; copy the log itself into the record folder")
    if not path.exists():
        raise ValueError(f"{path}: no such file; give the path of a log (.txt, or .log for llm.c) or a record folder")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file; give the path of a log (.txt or .log)")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            return f.read(max_bytes + 1), size
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror}); check its permissions") from e


def parse_log(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> ParsedLog:
    """Parse the log at ``path``. Raises ``ValueError`` only when the path itself cannot be read.

    What a log gives depends only on its bytes: it is kept in the cache (tools/common/cache.py) under their sha256,
    and a log read before, under any path, is read from there."""
    p = Path(path)
    raw, size = read_log_bytes(p, max_bytes)
    if size > max_bytes or len(raw) != size:  # past the limit (nothing to keep), or changed while it was read
        return parse_bytes(raw, str(path), size=size, max_bytes=max_bytes)
    digest = _sha256(raw)
    store = Store(_CACHE_NAMESPACE, _cache_salt())
    log = _from_cache(store, digest, str(path), size)
    if log is None:
        log = _parse_bytes(raw, str(path), size, max_bytes, digest)
        _to_cache(store, digest, log)
    return log


def parse_bytes(
    raw: bytes, path: str = "<bytes>", size: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES
) -> ParsedLog:
    """Parse a log given as bytes. Never raises on content."""
    return _parse_bytes(raw, path, len(raw) if size is None else size, max_bytes, _sha256(raw[:max_bytes]))


def _parse_bytes(raw: bytes, path: str, size: int, max_bytes: int, file_sha256: str) -> ParsedLog:
    log = ParsedLog(path=path, size_bytes=size, file_sha256=file_sha256)
    if size > max_bytes:
        log.structure_issues.append(
            f"the file is {size:,} bytes, over the {max_bytes:,}-byte limit for a log: not a training log"
        )
        return log
    if not raw.strip():
        log.structure_issues.append("the file is empty")
        return log
    nul = raw.find(b"\x00")
    if nul >= 0:
        log.structure_issues.append(f"binary content: NUL byte at offset {nul}; a log is UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        log.structure_issues.append(f"not UTF-8: invalid byte 0x{raw[e.start]:02x} at offset {e.start}")
        text = raw.decode("utf-8", errors="replace")

    seps = _separators(text)
    log.has_separator = bool(seps)
    metrics_from = 0
    if seps:
        env = _find_environment(text, seps)
        source_end = seps[0][0]
        if env is not None and source_end > 0 and not _is_omitted_line(text, source_end):
            # Our logs are "source, separator, environment": a separator line before the one that opens the
            # environment block is a line of the source itself (inside a docstring), so the source runs to there.
            source_end = next(s for s, e in seps if e == env[0])
        _read_source(log, text, source_end)
        if env is None:
            log.structure_issues.append(
                "no environment block (no 'Running PyTorch', nvidia-smi or config line after the first separator)"
            )
            metrics_from = seps[0][1]
        else:
            start, end = env
            log.has_environment = True
            code_from = seps[0][1] if source_end == seps[0][0] else start
            _read_extra_code(log, text, code_from, start)
            _read_environment(log, text, start, end)
            metrics_from = start
    else:
        log.structure_issues.append("no separator line (100 '=' characters) after the source section")
    _read_metrics(log, text, metrics_from)
    if not len(log.metrics):
        log.structure_issues.append("no metric lines (step:N/M ... train_time:...ms)")
    return log


def _separators(text: str) -> list[tuple[int, int]]:
    """(start, end) of every separator line; str.find is ~10x faster than a multiline regex here."""
    out = []
    i = text.find(SEPARATOR)
    while i >= 0:
        end = i + len(SEPARATOR)
        at_line_start = i == 0 or text[i - 1] == "\n"
        rest = text[end : end + 2]
        if at_line_start and (
            rest == "" or rest[0] == "\n" or rest == "\r\n" or (rest == "\r" and end + 1 == len(text))
        ):
            out.append((i, end))
        i = text.find(SEPARATOR, end)
    return out


def _is_omitted_line(text: str, end: int) -> bool:
    """The section ``text[:end]`` is the anchor corpus's one-line stand-in for the source."""
    return (
        end < 256 and _OMITTED_RE.match(text[:end].rstrip("\r\n")) is not None and "\n" not in text[:end].rstrip("\r\n")
    )


def _sha256_of(text: str, start: int, end: int, prefix: bytes = b"") -> str:
    """sha256 of ``text[start:end]`` as UTF-8, hashed a slice at a time: no copy of a large section."""
    h = hashlib.sha256(prefix)
    for i in range(start, end, _HASH_SLICE):
        h.update(text[i : min(i + _HASH_SLICE, end)].encode("utf-8", errors="surrogateescape"))
    return h.hexdigest()


def _read_source(log: ParsedLog, text: str, end: int) -> None:
    if _is_omitted_line(text, end):
        m = _OMITTED_RE.match(text[:end].rstrip("\r\n"))
        assert m is not None
        log.source_omitted = True
        log.source_sha256 = log.code_sha256 = m.group(1).lower()
        log.source_lines = int(m.group(2))
        return
    # The hash covers the bytes before the separator line, newline included: for a source file that
    # ends with a newline (as train_gpt.py does) it equals `sha256sum train_gpt.py`. With appended files it
    # covers them too: the whole section is the code identity of the run.
    log.source_sha256 = log.code_sha256 = _sha256_of(text, 0, end)
    log.source_lines = text.count("\n", 0, end) + (0 if end == 0 or text[end - 1] == "\n" else 1)
    # Each file is Python of its own: the first is source_text, the appended ones extra_code (the separator lines
    # between two files are not Python).
    _read_code_files(log, text, 0, end)
    if log.code_files:
        log.source_text = log.code_files[0].text
        appended = log.code_files[1:]
        log.appended_files = [f.name for f in appended]
        if appended:
            parts = [f"# {f.name}\n{f.text}" if f.text.endswith("\n") else f"# {f.name}\n{f.text}\n" for f in appended]
            log.extra_code = "".join(parts)[: MAX_CODE_CHARS + 1]


def _read_code_files(log: ParsedLog, text: str, start: int, end: int) -> None:
    """Append to ``code_files`` the files of the code in ``text[start:end]``: the trainer, then each appended file.

    Each text is kept up to one character past what the compile-flags rule reads, which fails a longer code."""
    if start >= end:
        return
    name, begin, line = "", start, text.count("\n", 0, start) + 1
    for n, m in enumerate(_APPENDED_RE.finditer(text, start, end)):
        if n == MAX_APPENDED_FILES:
            log.structure_issues.append(
                f"the code has over {MAX_APPENDED_FILES} appended files (a line of 40 '-' and a '# <file name>' "
                "line); a trainer appends one or two: the rest is read as part of the last one"
            )
            break
        cut = m.start() + 1  # the '-' line
        if m.group(2) is not None:  # the public form: the two newlines it writes before the first '-' line
            if cut - 4 >= begin and text.startswith("\r\n\r\n", cut - 4):
                cut -= 4
            elif cut - 2 >= begin and text.startswith("\n\n", cut - 2):
                cut -= 2
        log.code_files.append(CodeFile(name, text[begin : min(cut, begin + MAX_CODE_CHARS + 1)], line))
        line += text.count("\n", begin, m.end())
        name, begin = m.group(1), m.end()
    log.code_files.append(CodeFile(name, text[begin : min(end, begin + MAX_CODE_CHARS + 1)], line))


def _read_extra_code(log: ParsedLog, text: str, start: int, end: int) -> None:
    """Code between the source section and the environment block: the 2024 logs print their source there.

    ``text[start:end]`` runs from the end of the first separator line to the end of the separator line that opens
    the environment block."""
    if start >= end:
        return
    first = start + (2 if text.startswith("\r\n", start) else 1 if text.startswith("\n", start) else 0)
    before = len(log.code_files)
    _read_code_files(log, text, first, max(first, end - len(SEPARATOR)))
    log.appended_files += [f.name for f in log.code_files[before + 1 :]]
    if end - start > MAX_CODE_CHARS:  # not a training script; the compile-flags rule fails it on its size
        log.extra_code = text[start : start + MAX_CODE_CHARS + 1]
        if log.source_sha256 is not None:
            log.code_sha256 = _sha256_of(text, start, end, prefix=f"{log.source_sha256} and ".encode())
        return
    log.extra_code = _SEPARATOR_RE.sub("", text[start:end]).strip("\r\n")
    if log.extra_code and log.source_sha256 is not None:
        both = (log.source_text + "\n" + log.extra_code).encode("utf-8", errors="replace")
        log.code_sha256 = _sha256(both)


_ENV_LINE_RE = re.compile(
    r"^(?:Running Python|Running [Pp]y[Tt]orch|config: |data: |host: |nvidia-smi|\| NVIDIA-SMI)", re.M
)
# The lines of an environment block that say something (read below); the others are skipped in C, so a
# block of millions of lines costs one regex scan. Linear: one attempt per line start, no nested repeats.
_ENV_FACT_RE = re.compile(
    r"^(?:Running |config: |data: |host: |[^\S\n]*nvidia-smi: not available|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) |\|[^\S\n]+\d)[^\n]*"
    r"|^[^\n]*?Processes:[^\n]*",
    re.M,
)


def _find_environment(text: str, seps: list[tuple[int, int]]) -> tuple[int, int] | None:
    """Character range of the environment block: the first section after the source with an environment line."""
    bounds = [end for _, end in seps]
    ends = [start for start, _ in seps[1:]] + [len(text)]
    for a, b in zip(bounds, ends, strict=True):
        if _ENV_LINE_RE.search(text, a, b):
            return a, b
    return None


def _read_environment(log: ParsedLog, text: str, start: int, end: int) -> None:
    in_processes = False
    for n, m in enumerate(_ENV_FACT_RE.finditer(text, start, end)):
        if n == MAX_ENV_FACT_LINES:
            log.structure_issues.append(
                f"the environment block has over {MAX_ENV_FACT_LINES:,} lines of nvidia-smi, version or config form; "
                "a real one has a few dozen: the rest is not read"
            )
            return
        line = m.group(0).rstrip("\r")
        if log.python_version is None and (pm := _PYTHON_RE.match(line)):
            log.python_version = pm.group(1)
        elif log.torch_version is None and (pm := _TORCH_RE.match(line)):
            log.torch_version = pm.group(1)
            log.cuda_version = pm.group(2)
        elif line.startswith("config: "):
            log.config, log.config_error = _read_json_object(line[len("config: ") :], "config", log.config)
        elif line.startswith("data: "):
            log.data, log.data_error = _read_json_object(line[len("data: ") :], "data", log.data)
        elif line.startswith("host: "):
            _read_host(log, line[len("host: ") :])
        elif line.strip() == _SMI_NOT_AVAILABLE:
            log.nvidia_smi = "not available"
        elif log.run_date is None and not log.gpu_names and (pm := _SMI_TIME_RE.match(line)):
            log.run_date = _smi_date(pm)
        elif "Processes:" in line:
            in_processes = True
        elif not in_processes and (row := _smi_gpu_row(line)):
            log.nvidia_smi = "table"
            index, name = row
            if index == len(log.gpu_names):  # rows in index order; a repeated table is not more GPUs
                log.gpu_names.append(name)


_HOST_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# nvidia-smi -L: GPU-<uuid> for a GPU; MIG-<uuid> for a MIG instance (MIG-GPU-<uuid>/<gi>/<ci> in older drivers)
_GPU_UUID_RE = re.compile(rf"^(?:GPU-{_UUID}|MIG-{_UUID}|MIG-GPU-{_UUID}/[0-9]{{1,3}}/[0-9]{{1,3}})$")
MAX_GPU_UUIDS = 65_536  # far above any cluster a log could come from


def _read_host(log: ParsedLog, text: str) -> None:
    """``host: {"host_id": "<16 hex>", "gpu_uuids": ["GPU-...", ...]}``: the node and the GPUs the run used."""
    if log.host_id is not None or log.host_error is not None:
        log.host_error = log.host_error or "more than one 'host:' line; the first one is used"
        return
    host, error = _read_json_object(text, "host", None)
    if host is not None:
        host_id, uuids = host.get("host_id"), host.get("gpu_uuids")
        if not (isinstance(host_id, str) and _HOST_ID_RE.match(host_id)):
            error = f"the 'host:' line's host_id {str(host_id)[:40]!r} is not 16 lowercase hex digits"
        elif not isinstance(uuids, list) or len(uuids) > MAX_GPU_UUIDS:
            error = f"the 'host:' line's gpu_uuids is not a list of at most {MAX_GPU_UUIDS:,} GPU UUIDs"
        elif bad := [u for u in uuids if not (isinstance(u, str) and _GPU_UUID_RE.match(u))]:
            error = f"the 'host:' line's gpu_uuids holds {str(bad[0])[:60]!r}, not a GPU UUID (GPU-... or MIG-...)"
        else:
            log.host_id, log.gpu_uuids = host_id, list(uuids)
    log.host_error = error


def _smi_gpu_row(line: str) -> tuple[int, str] | None:
    """(index, name) of an nvidia-smi GPU row: ``|   0  NVIDIA H100 80GB HBM3          On  |   0000...``.

    Two linear scans with possessive repeats: one regex with a lazy name between two runs of spaces
    backtracks quadratically on a line of spaces.
    """
    head = _SMI_ROW_HEAD_RE.match(line)
    if head is None:
        return None
    state = _SMI_ROW_STATE_RE.search(line, head.end() + 1)
    if state is None:
        return None
    return int(head.group(1)), " ".join(line[head.end() : state.start()].split())


def _smi_date(m: re.Match[str]) -> str | None:
    """``YYYY-MM-DD`` of nvidia-smi's timestamp; None for a date that does not exist or falls on another
    day of the week than the line says (an edited line: nvidia-smi prints both from one clock)."""
    month = _MONTHS.get(m.group(2))  # not strptime("%b"): that reads month names of the current locale
    if month is None:
        return None
    try:
        date = dt.date(int(m.group(4)), month, int(m.group(3)))
    except ValueError:
        return None
    return date.isoformat() if _WEEKDAYS[date.weekday()] == m.group(1) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all distinct: json.dumps never writes a key twice, and with two a
    reader that takes the first and one that takes the last see two different runs."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {key!r} appears more than once")
        out[key] = value
    return out


def _read_json_object(
    text: str, what: str, previous: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, str | None]:
    if previous is not None:
        return previous, f"more than one '{what}:' line; the first one is used"
    if len(text) > MAX_JSON_LINE_CHARS:  # json.loads of a huge list builds an object per element: GBs
        return None, f"the '{what}:' line is {len(text):,} characters, over the {MAX_JSON_LINE_CHARS:,} it may have"
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:
        return None, f"the '{what}:' line is not valid JSON ({type(e).__name__}: {str(e)[:120]})"
    if not isinstance(value, dict):
        return None, f"the '{what}:' line is JSON but not an object"
    return value, None


def _chunks(regex: re.Pattern[str], text: str, start: int) -> Iterator[list[Any]]:
    """``findall`` of a line pattern over the lines of ``text`` from ``start``, a slice of whole lines at a
    time: the tuples of strings findall builds cost ~10x the text, so only one slice's worth lives at once.
    ``regex`` is one of the *_NL_RE patterns; the line at ``start`` itself is matched with its '^' form."""
    pos, n = start, len(text)
    if pos < n and text[pos] != "\n":  # the first line of a log with no separator
        first_end = text.find("\n", pos)
        first_end = n if first_end < 0 else first_end
        anchored = _ANCHORED[regex]
        if m := anchored.match(text, pos, first_end):
            yield [m.groups(default="")]  # findall's form: "" for a group that did not take part
        pos = first_end
    while pos < n:
        end = text.find("\n", pos + _FINDALL_SLICE)
        end = n if end < 0 else end  # the next slice starts with this newline, which its first match needs
        rows = regex.findall(text, pos, end)
        if rows:
            yield rows
        pos = end


_ANCHORED = {_METRIC_NL_RE: _METRIC_RE, _LLMC_NL_RE: _LLMC_RE}


def _floats(column: list[str]) -> np.ndarray:
    """``float(x)`` of each string of ``column``, bit for bit, and NaN for "" (most lines of a log have no loss)."""
    present = [x for x in column if x and x != "nan"]  # "nan" is NaN as "" is, the same bits as float("nan")
    values = _fixed_point(present)
    if values is None:
        values = np.array(present, dtype=np.float64)
    n = len(column)
    if len(present) == n:
        return values
    out = np.full(n, np.nan)
    out[np.fromiter(map(bool, column), bool, n) & ~np.fromiter(map("nan".__eq__, column), bool, n)] = values
    return out


def _fixed_point(numbers: list[str]) -> np.ndarray | None:
    """``float(x)`` of each string when all are plain decimals of at most 15 digits with one number of digits after
    the point (what a log prints: "1234", "12.34", "3.2810"); else None.

    They are read as integers (numpy reads a joined string of them 7x faster than ``float`` reads each) and divided
    by a power of ten: bit for bit ``float(x)``, as both round the same rational number to the nearest double (the
    integer and the power of ten are exact doubles, and IEEE division is correctly rounded). No sign: "-0.00" is -0.0.
    """
    joined = " ".join(numbers)
    if not numbers or any(c in joined for c in "+-eEn"):  # a sign, an exponent, nan or inf
        return None
    chars = np.frombuffer(joined.encode("ascii"), np.uint8)
    ends = np.append(np.flatnonzero(chars == ord(" ")), len(chars))
    starts = np.append(0, ends[:-1] + 1)
    dots = np.flatnonzero(chars == ord("."))
    if len(dots) == 0:
        places = 0
    elif len(dots) == len(numbers) and ((after := ends - dots - 1) == after[0]).all():
        places = int(after[0])  # one point per number (the regex allows no more): each number's own
    else:
        return None
    if int((ends - starts).max()) > 15 + (len(dots) > 0):  # 15 digits: integers below 2**53, exact doubles
        return None
    try:
        integers = np.fromstring(joined.replace(".", ""), dtype=np.int64, sep=" ")
    except ValueError:
        return None
    return integers / 10.0**places if len(integers) == len(numbers) else None


def _ints(column: list[str]) -> np.ndarray:
    """``int(x)`` of each string of at most 12 digits in ``column``; as ``_floats``, 2x faster than one at a time."""
    if column.count(column[0]) == len(column):  # a log's total: one number on every line
        return np.full(len(column), int(column[0]), dtype=np.int64)
    try:
        out = np.fromstring(" ".join(column), dtype=np.int64, sep=" ")
        if len(out) == len(column):
            return out
    except ValueError:
        pass
    return np.array(column, dtype=np.int64)


def _speedrun_columns(rows: list[tuple[str, ...]]) -> tuple[np.ndarray, ...]:
    # A column at a time: zip(*rows) over a log's 20,000 rows costs 3x more.
    step, total, val, loss, tt, tt_s, sa, sa_s = ([row[i] for row in rows] for i in range(8))
    n = len(rows)
    time_ms = _floats(tt)
    if "s" in tt_s:
        time_ms[np.fromiter(map("s".__eq__, tt_s), bool, n)] *= 1000.0
    has_sa = np.fromiter(map(bool, sa), bool, n)
    step_avg = _floats(sa)
    if "s" in sa_s:
        step_avg[np.fromiter(map("s".__eq__, sa_s), bool, n)] *= 1000.0
    return (
        _ints(step),
        _ints(total),
        time_ms,
        step_avg,
        has_sa,
        _floats(loss),
        np.fromiter(map("v".__eq__, val), bool, n),
        np.full(n, np.nan),
        np.full(n, np.nan),
    )


def _llmc_columns(rows: list[tuple[str, ...]]) -> tuple[np.ndarray, ...]:
    step, kind, loss, lr, norm = zip(*rows, strict=True)
    n = len(step)
    return (
        np.array(step, dtype=np.int64),
        np.full(n, -1, dtype=np.int64),
        np.full(n, np.nan),
        np.full(n, np.nan),
        np.zeros(n, bool),
        np.array(loss, dtype=np.float64),
        np.fromiter(map("tel".__eq__, kind), bool, n),
        np.array([x or "nan" for x in lr], dtype=np.float64),
        np.array([x or "nan" for x in norm], dtype=np.float64),
    )


def _metrics_of(parts: list[tuple[np.ndarray, ...]]) -> Metrics:
    return Metrics(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def _val_curve(cols: Metrics, form: str) -> list[ValPoint]:
    has_time = form == "speedrun"
    return [
        ValPoint(int(cols.step[i]), float(cols.loss[i]), float(cols.train_time_ms[i]) if has_time else None)
        for i in np.flatnonzero(cols.is_val)
    ]


def _read_metrics(log: ParsedLog, text: str, start: int) -> None:
    n_step_lines = text.count("\nstep:", max(start - 1, 0)) + (1 if start == 0 and text.startswith("step:") else 0)
    n_llmc_lines = text.count("\ns:", max(start - 1, 0)) + (1 if start == 0 and text.startswith("s:") else 0)
    if max(n_step_lines, n_llmc_lines) > MAX_METRIC_LINES:  # counted first: reading them would cost GBs
        log.structure_issues.append(
            f"{max(n_step_lines, n_llmc_lines):,} metric lines, over the {MAX_METRIC_LINES:,} a log may have "
            "(the longest real run has ~20,000): not read"
        )
        return
    parts = [_speedrun_columns(rows) for rows in _chunks(_METRIC_NL_RE, text, start)]
    n_rows = sum(len(p[0]) for p in parts)
    if n_rows != n_step_lines:
        log.malformed_count = n_step_lines - n_rows
        first = _MALFORMED_STEP_RE.match(text, start) if start == 0 else None
        found = itertools.chain([first] if first else [], _MALFORMED_STEP_NL_RE.finditer(text, start))
        log.malformed_lines = [bad.group(0).lstrip("\n")[:200] for bad in itertools.islice(found, 5)]
    if parts:
        log.metrics_form = "speedrun"
        log.metrics = _metrics_of(parts)
        log.total_steps = int(log.metrics.total[-1])
    elif n_llmc_lines:
        llmc = [_llmc_columns(rows) for rows in _chunks(_LLMC_NL_RE, text, start)]
        if llmc:
            log.metrics_form = "llm.c"
            log.metrics = _metrics_of(llmc)
    log.val_curve = _val_curve(log.metrics, log.metrics_form)
    lo = max(start, len(text) - 65536)  # the line is written once, at the end
    peak = _PEAK_MEMORY_RE.match(text) if lo == 0 else None
    peak = peak or _PEAK_MEMORY_NL_RE.search(text, max(lo - 1, 0))
    if peak:
        log.peak_memory_mib = int(peak.group(1))


# --- the cache of parse results (tools/common/cache.py) --------------------------------------------------

# A parse result depends on the bytes of the log and on the code of these modules (sourcecheck: MAX_CODE_CHARS).
_CACHE_NAMESPACE = "parse"
_CACHE_FORMAT = b"speedrun-parse-v1\n"
# An entry holds at most 2 + 17 texts of MAX_CODE_CHARS + 1 characters (4 bytes each at most in UTF-8) and 9 columns
# of MAX_METRIC_LINES numbers: a larger file in the cache folder is not one of ours, and is not read.
_MAX_ENTRY_BYTES = 4 * (MAX_APPENDED_FILES + 3) * (MAX_CODE_CHARS + 1) + 9 * 8 * MAX_METRIC_LINES + (1 << 20)
# The metric columns as one structured array: one .npy header to read per entry, not nine.
_METRIC_ROW = np.dtype(
    [
        (f.name, bool if f.name in ("has_step_avg", "is_val") else np.int64 if f.name in ("step", "total") else float)
        for f in dataclasses.fields(Metrics)
    ]
)
# Fields kept apart from the entry's JSON: the caller's path and size, the texts (raw UTF-8 after the JSON, each
# once: source_text is most often the first code file's text), the metric columns, and the val curve, which is
# rebuilt from them as parsing builds it.
_NOT_IN_JSON = frozenset({"path", "size_bytes", "source_text", "extra_code", "code_files", "metrics", "val_curve"})


@functools.cache
def _cache_salt() -> str:
    return salt_of([Path(__file__), Path(sourcecheck.__file__)])


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    return type(v) is int


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _list_of(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(map(check, v))


# How an entry's JSON is checked, per ParsedLog field, by its annotation: a new field of another type raises here,
# at import, until it is given a check (or kept apart, as the texts are).
_FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": _is_str,
    "str | None": _optional(_is_str),
    "int": _is_int,
    "int | None": _optional(_is_int),
    "bool": lambda v: type(v) is bool,
    "list[str]": _list_of(_is_str),
    "dict[str, Any] | None": _optional(lambda v: isinstance(v, dict)),
}
_JSON_FIELDS = [
    (f.name, _FIELD_CHECKS[str(f.type)]) for f in dataclasses.fields(ParsedLog) if f.name not in _NOT_IN_JSON
]
_ENTRY_KEYS = {"facts", "text_bytes", "text_refs", "code_files", "rows"}


def _to_cache(store: Store, key: str, log: ParsedLog) -> None:
    """Keep ``log`` under ``key`` as one file: the format line, a CRC-32 of the rest, the length of a JSON header,
    the header (the fields, the texts' lengths), the texts, and the metric columns as one .npy."""
    if not store.enabled:
        return
    texts: dict[str, int] = {}  # each distinct text once, by its first index
    refs = [
        texts.setdefault(t, len(texts)) for t in [log.source_text, log.extra_code, *(f.text for f in log.code_files)]
    ]
    try:  # a config line json.loads read, json.dumps writes back (1e400 as Infinity, read back as inf)
        blobs = [t.encode("utf-8") for t in texts]
        header = {
            "facts": {name: getattr(log, name) for name, _ in _JSON_FIELDS},
            "text_bytes": [len(b) for b in blobs],
            "text_refs": refs,
            "code_files": [[f.name, f.line] for f in log.code_files],
            "rows": len(log.metrics),
        }
        head = json.dumps(header, ensure_ascii=True).encode("ascii")
    except (ValueError, TypeError, RecursionError):  # a log that cannot be kept is parsed again next time
        return
    rows = np.empty(len(log.metrics), _METRIC_ROW)
    for name in _METRIC_ROW.names or ():
        rows[name] = getattr(log.metrics, name)
    columns = io.BytesIO()
    np.lib.format.write_array(columns, rows, allow_pickle=False)
    body = b"".join([len(head).to_bytes(8, "little"), head, *blobs, columns.getvalue()])
    store.write(key, ".entry", _CACHE_FORMAT + b"%08x\n" % zlib.crc32(body) + body)


def _from_cache(store: Store, key: str, path: str, size: int) -> ParsedLog | None:
    """The ParsedLog kept under ``key``, with the caller's path and size; None when there is none or it cannot be
    read whole (a damaged or foreign entry is a miss, and parsing then writes it again)."""
    entry_path = store.path(key, ".entry")
    try:
        if entry_path is None or entry_path.stat().st_size > _MAX_ENTRY_BYTES:
            return None
    except OSError:
        return None
    entry = store.read(key, ".entry")
    start = len(_CACHE_FORMAT) + 9
    if (
        entry is None
        or not entry.startswith(_CACHE_FORMAT)
        or entry[start - 9 : start] != b"%08x\n" % zlib.crc32(memoryview(entry)[start:])
    ):
        return None
    try:  # whatever a damaged entry makes these raise, it is a miss
        n = int.from_bytes(entry[start : start + 8], "little")
        header = json.loads(entry[start + 8 : start + 8 + n])
        pos, texts = start + 8 + n, []
        for length in header["text_bytes"]:
            if not _is_int(length) or length < 0:
                return None
            texts.append(entry[pos : pos + length].decode("utf-8"))
            pos += length
        rows = np.lib.format.read_array(io.BytesIO(entry[pos:]), allow_pickle=False)
        facts, refs, files = header["facts"], header["text_refs"], header["code_files"]
        if not (
            set(header) == _ENTRY_KEYS
            and set(facts) == {name for name, _ in _JSON_FIELDS}
            and all(check(facts[name]) for name, check in _JSON_FIELDS)
            and facts["file_sha256"] == key
            and _list_of(lambda f: isinstance(f, list) and len(f) == 2 and _is_str(f[0]) and _is_int(f[1]))(files)
            and _list_of(lambda i: _is_int(i) and 0 <= i < len(texts))(refs)
            and len(refs) == 2 + len(files)
            and rows.dtype == _METRIC_ROW
            and rows.shape == (header["rows"],)
        ):
            return None
        source_text, extra_code, *code_texts = (texts[i] for i in refs)
    except Exception:
        return None
    metrics = Metrics(**{name: np.ascontiguousarray(rows[name]) for name in _METRIC_ROW.names or ()})
    return ParsedLog(
        path=path,
        size_bytes=size,
        source_text=source_text,
        extra_code=extra_code,
        code_files=[CodeFile(name, text, line) for (name, line), text in zip(files, code_texts, strict=True)],
        metrics=metrics,
        val_curve=_val_curve(metrics, facts["metrics_form"]),
        **facts,
    )


# --- command line: python -m tools parse ------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("logs", nargs="+", metavar="LOG", type=Path, help="record log files (.txt; llm.c logs: .log)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def run(args: argparse.Namespace) -> int:
    logs = [parse_log(p) for p in args.logs]
    if args.json:
        for log in logs:
            sys.stdout.write(json.dumps(log.to_json()) + "\n")
        return 0
    header = f"{'log':<60} {'steps':>11} {'val loss':>8} {'time':>10} {'gpus':<28} issues"
    print(header)
    print("-" * len(header))
    for log in logs:
        steps = f"{log.final_step}/{log.total_steps}" if log.final_step is not None else "—"
        loss = f"{log.final_val_loss:.4f}" if log.final_val_loss is not None else "—"
        t = log.train_time_ms
        time_s = f"{t / 1000:.3f} s" if t is not None and math.isfinite(t) else "—"
        gpus = f"{log.num_gpus}× {log.gpu_name}" if log.gpu_name else log.nvidia_smi
        issues = "; ".join(log.structure_issues) or "-"
        line = f"{printable(log.path)[-60:]:<60} {steps:>11} {loss:>8} {time_s:>10} {printable(gpus)[:28]:<28} {issues}"
        print(printable(line))
    return 0
