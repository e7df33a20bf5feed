"""``python -m tools reproduce LOG|RECORD``: run a record's logs again on this machine and judge the claims.

Every number in a log is text its submitter wrote; verification checks that a log agrees with
itself, never that it is true. A log of train_gpt.py holds everything needed to run it again: the
exact code (the source section, byte for byte), the seed and settings (the ``config:`` line) and the
data (the ``data:`` line's sha256 list). For each log this command

1. extracts the source section to ``train_gpt.py`` and checks its sha256 against the log;
2. checks that the data folder holds every shard the log lists, with the same sha256, before
   spending a GPU-hour;
3. runs the code with the log's seed, preset and overrides (``torchrun``, the log's number of
   processes or ``--nproc``) in a sandbox (tools/reproduce/sandbox.py): bubblewrap (``--sandbox bwrap``, the
   default where it works) or the project's Docker image (``--sandbox docker``); only ``--sandbox none``, said in
   so many words, runs it unsandboxed. Every process runs under the probe (tools/reproduce/probe.py), which
   records what the run really used: compile settings, modules, data files, programs (tools/reproduce/report.py
   judges it by the rules of the record's date); the runner watches the limits (tools/reproduce/watch.py);
4. compares the new log with the claimed one: code hash, config and data lines, the val-loss
   curve point by point (exactly on CPU; on GPU within the run-to-run spread of real logs,
   tools/reproduce/tolerances.py) and the time per step (within a hardware tolerance); and shows the
   static reading of the code (tools/judge/sourcecheck.py) beside the probe's;
5. prints one verdict per run and exits 1 when any run was not reproduced.

The new logs stay under ``reproductions/<record>/`` (outside records/). ``--write-verdict`` (for
maintainers) records the verdicts in the record folder as ``reproduced.json``; ``read_reproduced``
reads and validates such a file. ``--extract FILE`` runs nothing: it writes a log's code to FILE, and
each file its trainer appended to its code beside FILE (a submitter's same-node baseline runs run the
previous record's code, records/README.md); it reads every log form that carries its code.
docs/reproduce.md has the tolerances and what a reproduction can and cannot prove.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tools.common.text import printable
from tools.judge.parse import DEFAULT_MAX_BYTES, SEPARATOR, ParsedLog, parse_bytes, parse_log, read_log_bytes
from tools.judge.reproduced import (
    REPRODUCED,
    REPRODUCED_FILE,
    REPRODUCED_FORMAT,
    strict_int,
    validate_reproduced,
)
from tools.judge.rulebook import rulebook_for
from tools.judge.sourcecheck import MAX_CODE_CHARS, find_compile_flags
from tools.reproduce import report, sandbox
from tools.reproduce.watch import Watch, WatchFacts

# --- tolerances (docs/reproduce.md) -------------------------------------------------------------

# On GPU: the largest |val loss difference| between two honest runs of the same code, per phase of
# training, over the public speedrun's logs; derived by
#   python -m tools.reproduce.tolerances modded-nanogpt/records  (a checkout of the public speedrun)
# (tests/test_tools_reproduce.py re-derives them and fails if they drift). Step 0 depends only on the
# seed and the code: one unit of the printed precision.
GPU_LOSS_TOLERANCE: dict[str, float] = {
    "0": 0.0001,
    "0-10%": 0.0581,
    "10-20%": 0.1151,
    "20-30%": 0.0643,
    "30-40%": 0.0726,
    "40-50%": 0.0314,
    "50-60%": 0.0233,
    "60-70%": 0.0242,
    "70-80%": 0.0198,
    "80-90%": 0.0201,
    "90-100%": 0.0189,
    "final": 0.0188,
}
# On GPU: time per step within (1 + 8.18 %) x (1 + 1.21 %) - 1: the spread between providers on the
# public speedrun (80.7 s vs 74.6 s) times the largest spread of runs of one submission on one node.
GPU_TIME_TOLERANCE = 0.095
# On CPU the time depends on whatever else the machine runs and on its thread settings (on the 2-core
# development VM, smoke runs made with one thread and reproduced with two under other jobs' load took 1.5x
# and 15x longer): only a factor of 3 either way is judged.
CPU_TIME_TOLERANCE = 2.0

# --- what is compared ---------------------------------------------------------------------------

TRAINER_NAME = "train_gpt.py"
# Config keys that are where and how a run was kept, not what it computed: the run settings (the "run" object;
# logs older than it had data_path and the checkpoint settings at the top).
IGNORED_CONFIG_KEYS = frozenset(
    {"run_id", "run", "data_path", "checkpoint_dir", "checkpoint_every", "checkpoint_keep", "resumed_from"}
)
# Keys a different --nproc changes (the global batch stays: more gradient accumulation per process).
NPROC_CONFIG_KEYS = frozenset({"world_size", "grad_accum_steps"})
# Variables of the caller's environment that would change the run: never passed to the trainer.
_RUN_VARIABLE_RE = re.compile(
    r"^(SPEEDRUN_.*|SEED|DATA_PATH|LOG_DIR|RANK|LOCAL_RANK|WORLD_SIZE|LOCAL_WORLD_SIZE|GROUP_RANK|ROLE_RANK|"
    r"ROLE_WORLD_SIZE|GROUP_WORLD_SIZE|MASTER_ADDR|MASTER_PORT|TORCHELASTIC_.*)$"
)
_PRESET_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SHARD_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}\.bin$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_STEP_LINE_RE = re.compile(r"^step:(\d+)/(\d+) (val_loss|train_loss):(\S+) train_time:(\d+)ms")
# SPEEDRUN_OVERRIDES goes to the trainer as one environment variable; Linux caps one at 128 KiB.
_MAX_OVERRIDES_CHARS = 16 * 1024
_QUIET_PREFIXES = ("config: ", "data: ", "parameters: ")
_HASH_CHUNK = 16 * 1024 * 1024
# Verdicts, in the order one is chosen when a run shows several findings.
RULE_BROKEN = "rule broken at run time"
STOPPED = "stopped at a limit"
PROBE_INCOMPLETE = "probe report incomplete"
RUN_FAILED = "run failed"
CODE_DIFFERS = "code differs"
CONFIG_DIFFERS = "config differs"
DATA_DIFFERS = "data differs"
LOSS_DIFFERS = "loss differs"
SLOWER = "slower than claimed"
FASTER = "faster than claimed"
_ORDER = (
    RULE_BROKEN,
    STOPPED,
    RUN_FAILED,
    PROBE_INCOMPLETE,
    CODE_DIFFERS,
    CONFIG_DIFFERS,
    DATA_DIFFERS,
    LOSS_DIFFERS,
    SLOWER,
    FASTER,
)
PROBE_FILE = Path(__file__).resolve().parent / "probe.py"
REPOSITORY = Path(__file__).resolve().parents[2]
# Variables of the caller's environment that change how torch compiles: never passed to an unsandboxed run (the
# cache folders excepted: where compiled code is kept, not how it is made).
_COMPILE_VARIABLE_RE = re.compile(r"^(TORCHINDUCTOR_|TORCHDYNAMO_|TORCH_COMPILE|INDUCTOR_|TORCH_LOGS)")
_KEPT_COMPILE_VARIABLES = frozenset({"TORCHINDUCTOR_CACHE_DIR"})
NONE_WARNING = (
    "warning: --sandbox none: the logs' code runs unsandboxed, as you ({user}), on this machine: it can read and "
    "write every file you can (your home, keys, tokens), use the network, start any program and leave processes "
    "behind; only your environment's run settings and compile variables are withheld. The probe still records what "
    "the run did, but the code can do anything before it is judged. Use it only for code you trust (your own runs, "
    "the CPU tests); for anyone else's, use --sandbox bwrap or docker"
)


def phase_of(step: int, total: int) -> str:
    """The key of GPU_LOSS_TOLERANCE for a val step: step 0, a tenth of training, or the final step."""
    if step == 0:
        return "0"
    if step >= total:
        return "final"
    tenth = min(int(10 * step / total), 9)
    return f"{10 * tenth}-{10 * (tenth + 1)}%"


def loss_tolerance(step: int, total: int, device: str) -> float:
    """How far a reproduction's val loss may be from the claimed one: 0 on CPU (runs are exact)."""
    return 0.0 if device == "cpu" else GPU_LOSS_TOLERANCE[phase_of(step, total)]


# --- the claim: what a log says, checked before anything runs ------------------------------------


@dataclass(frozen=True)
class ShardClaim:
    name: str
    split: str
    tokens: int
    sha256: str


@dataclass
class Claim:
    """One claimed run: the log, its exact code and the settings to run it again."""

    path: Path
    log: ParsedLog
    code: bytes  # the source section, byte for byte: the file train_gpt.py was
    config: dict[str, Any]
    seed: int
    preset: str
    overrides: dict[str, Any]
    world_size: int
    device: str  # "cpu" or "cuda"
    num_iterations: int
    data_path: str
    vocab_size: int | None
    shards: list[ShardClaim]


def extract_source(raw: bytes) -> bytes | None:
    """The bytes before the first separator line: the file the trainer ran (``None`` without a separator).

    The trainer writes ``code.removesuffix("\\n")``, a newline, then the separator; so for a file that
    ends with a newline the section is the file itself, and for one without it is the file plus the
    newline, which Python runs the same way and the trainer logs back identically.
    """
    sep = SEPARATOR.encode()
    start = 0
    while (i := raw.find(sep, start)) >= 0:
        end = i + len(sep)
        rest = raw[end : end + 2]
        if (i == 0 or raw[i - 1 : i] == b"\n") and (
            rest[:1] in (b"", b"\n") or rest == b"\r\n" or (rest == b"\r" and end + 1 == len(raw))
        ):
            return raw[:i]
        start = end
    return None


def load_claim(path: Path) -> Claim:
    """Read and check one claimed log; a log that cannot be run again raises ValueError (one paragraph)."""
    raw, size = read_log_bytes(path, DEFAULT_MAX_BYTES)
    if size > DEFAULT_MAX_BYTES:
        raise ValueError(f"{path}: {size:,} bytes, more than any training log; give the log train_gpt.py wrote")
    log = parse_bytes(raw, str(path), size=size)
    if not log.has_separator:
        raise ValueError(
            f"{path}: not a training log (no separator line of 100 '=' after a source section); give a log that "
            "train_gpt.py wrote (logs/<run-uuid>.txt or a record's <run-uuid>.txt)"
        )
    if log.source_omitted:
        raise ValueError(
            f"{path}: its training source was omitted from this copy (the '# training source omitted' line), so the "
            "code that ran is not in the log and cannot be run again; reproduce the original log, with its source"
        )
    code = extract_source(raw)
    if not code:
        raise ValueError(
            f"{path}: the source section before the first separator is empty (a 2024-style log keeps its code "
            "elsewhere), so there is no code to run again; only logs written by this repository's train_gpt.py can "
            "be reproduced"
        )
    if log.appended_files:
        raise ValueError(
            f"{path}: its code is more than one file (this source with {', '.join(log.appended_files)} appended: a "
            "train_scale.py run, never a record); reproduce runs logs of train_gpt.py, the record file"
        )
    if hashlib.sha256(code).hexdigest() != log.source_sha256:
        raise ValueError(
            f"{path}: the bytes of the source section do not hash to the log's source sha256 (the section is not "
            "valid UTF-8), so it is not a file train_gpt.py could have logged; use the log exactly as the trainer "
            "wrote it"
        )
    if log.config is None:
        why = log.config_error or "there is no 'config:' line"
        raise ValueError(
            f"{path}: {why}, so the run's seed and settings are unknown (a community log, or one older than the "
            "config line) and it cannot be run again; only logs written by this repository's train_gpt.py can be "
            "reproduced"
        )
    cfg = log.config
    problems = []
    seed = strict_int(cfg.get("seed"), 0, 2**63 - 1)
    if seed is None:
        problems.append(f"seed {cfg.get('seed')!r} is not a whole number >= 0")
    preset = cfg.get("preset")
    if not isinstance(preset, str) or not _PRESET_RE.match(preset):
        problems.append(f"preset {preset!r} is not a preset name")
    overrides = cfg.get("overrides", {})
    if not isinstance(overrides, dict):
        problems.append(f"overrides {str(overrides)[:100]!r} is not an object")
    elif len(json.dumps(overrides)) > _MAX_OVERRIDES_CHARS:
        problems.append(
            f"overrides take more than {_MAX_OVERRIDES_CHARS:,} characters (a Hyperparameters object is ~2,000)"
        )
    world_size = strict_int(cfg.get("world_size"), 1, 4096)
    if world_size is None:
        problems.append(f"world_size {cfg.get('world_size')!r} is not a number of processes")
    device = cfg.get("device")
    if device not in ("cpu", "cuda"):
        problems.append(f"device {device!r} is neither 'cpu' nor 'cuda'")
    iterations = strict_int(cfg.get("num_iterations"), 1, 10**9)
    if iterations is None:
        problems.append(f"num_iterations {cfg.get('num_iterations')!r} is not a number of steps")
    run = cfg.get("run")
    data_path = run.get("data_path") if isinstance(run, dict) else cfg.get("data_path")
    if not isinstance(data_path, str) or not data_path or "\x00" in data_path:
        problems.append(f"data_path {data_path!r} is not a folder name")
    if problems:
        raise ValueError(
            f"{path}: the config line cannot be run again: {'; '.join(problems)}; use the log exactly as "
            "train_gpt.py wrote it"
        )
    shards, vocab = _claimed_shards(path, log)
    assert seed is not None and world_size is not None and iterations is not None
    assert isinstance(preset, str) and isinstance(overrides, dict) and isinstance(data_path, str)
    return Claim(
        path=path,
        log=log,
        code=code,
        config=cfg,
        seed=seed,
        preset=preset,
        overrides=overrides,
        world_size=world_size,
        device=str(device),
        num_iterations=iterations,
        data_path=data_path,
        vocab_size=vocab,
        shards=shards,
    )


def _claimed_shards(path: Path, log: ParsedLog) -> tuple[list[ShardClaim], int | None]:
    if log.data is None:
        why = log.data_error or "there is no 'data:' line"
        raise ValueError(
            f"{path}: {why}, so the shards the run read are unknown and the data cannot be checked; use the log "
            "exactly as train_gpt.py wrote it"
        )
    entries = log.data.get("shards")
    if not isinstance(entries, list) or not entries or len(entries) > 100_000:
        raise ValueError(f"{path}: the 'data:' line lists no shards; use the log exactly as train_gpt.py wrote it")
    shards = []
    for e in entries:
        ok = (
            isinstance(e, dict)
            and isinstance(e.get("name"), str)
            and _SHARD_NAME_RE.match(e["name"]) is not None
            and e.get("split") in ("train", "val")
            and strict_int(e.get("tokens"), 0, 2**40) is not None
            and isinstance(e.get("sha256"), str)
            and _HEX64_RE.match(e["sha256"]) is not None
        )
        if not ok:
            raise ValueError(
                f"{path}: a shard of the 'data:' line is not a plain file name with split, tokens and sha256 "
                f"({str(e)[:200]}); use the log exactly as train_gpt.py wrote it"
            )
        assert isinstance(e, dict)
        shards.append(ShardClaim(e["name"], e["split"], e["tokens"], e["sha256"]))
    vocab = log.data.get("vocab_size")
    return shards, vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else None


def find_logs(target: Path) -> tuple[str, Path | None, list[Path]]:
    """(record name, record folder or None for a single log, the logs to reproduce in name order)."""
    if target.is_symlink():
        raise ValueError(f"{target}: a symbolic link; give the record folder or the log file itself")
    if target.is_dir():
        # A record's runs are the *.txt directly in its folder (records/README.md); links are listed so
        # that reading them reports the problem instead of skipping a run silently.
        logs = sorted(p for p in target.iterdir() if p.suffix == ".txt" and (p.is_file() or p.is_symlink()))
        if not logs:
            raise ValueError(f"{target}: no logs (*.txt) directly in this folder; give a record folder or a log file")
        return target.resolve().name or "record", target, logs
    if target.is_file():
        parent = target.parent
        name = parent.resolve().name if (parent / "README.md").is_file() else target.stem
        return name or "record", None, [target]
    raise ValueError(f"{target}: no such file or folder; give a record folder or a log file (.txt)")


# --- the data: every listed shard present with its sha256, before any GPU time ---------------------


def fetch_hint(claim: Claim, data_dir: Path) -> str:
    """The command that gets the shards this log read."""
    names = [s.name for s in claim.shards]
    trains = sum(s.split == "train" for s in claim.shards)
    if all(n.startswith("synthetic_") for n in names):
        return (
            f"make them with `python data/synthetic.py --out {data_dir}` with the arguments the original shards were "
            "made with (their meta.json), or give --data DIR with the run's own shards"
        )
    variant = " --variant edu10B" if all(n.startswith("finewebedu_") for n in names) else ""
    out = "" if variant or str(data_dir) == "data/fineweb10B" else f" --out {data_dir}"
    return f"download them with `python data/cached_fineweb10B.py {max(trains, 9)}{variant}{out}`, or give --data DIR"


class ShardHasher:
    """sha256 of shard files, each read once per invocation (a record's runs all list the same shards)."""

    def __init__(self, progress: bool = True) -> None:
        self.progress = progress
        self.cache: dict[tuple[str, int, int], str] = {}

    def hash_files(self, paths: Sequence[Path]) -> dict[Path, str]:
        keys = {p: (str(p.resolve()), (st := p.stat()).st_size, st.st_mtime_ns) for p in paths}
        todo = [p for p in paths if keys[p] not in self.cache]
        total = sum(keys[p][1] for p in todo)
        if todo:
            from tqdm import tqdm

            # A progress bar only when it is worth one: FineWeb's ~200 MB shards, not synthetic ones.
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                desc="checking shards",
                disable=not self.progress or total < 256 * 1024 * 1024,
                mininterval=1.0,
                file=sys.stderr,
            ) as bar:
                for p in todo:
                    h = hashlib.sha256()
                    try:
                        with p.open("rb") as f:
                            while chunk := f.read(_HASH_CHUNK):
                                h.update(chunk)
                                bar.update(len(chunk))
                    except OSError as e:
                        raise ValueError(f"{p}: cannot be read ({e.strerror}); check its permissions") from e
                    self.cache[keys[p]] = h.hexdigest()
        return {p: self.cache[keys[p]] for p in paths}


def check_data(claim: Claim, data_dir: Path, hasher: ShardHasher) -> None:
    """Raise ValueError unless ``data_dir`` holds the shards the log lists, as the trainer will pick them."""
    fix = fetch_hint(claim, data_dir)
    if not data_dir.is_dir():
        raise ValueError(f"{claim.path}: the data folder {data_dir} does not exist; {fix}")
    for split in ("val", "train"):
        listed = [s.name for s in claim.shards if s.split == split]
        present = sorted(p.name for p in data_dir.glob(f"*_{split}_*.bin"))
        missing = [n for n in listed if n not in present]
        if missing:
            raise ValueError(
                f"{claim.path}: the data folder {data_dir} lacks {data_dir / missing[0]}"
                f"{f' and {len(missing) - 1} more shard(s)' if len(missing) > 1 else ''}, which the run read; {fix}"
            )
        if listed != sorted(set(listed)):
            raise ValueError(
                f"{claim.path}: the 'data:' line lists its {split} shards twice or out of name order, which the "
                "trainer never does; use the log exactly as train_gpt.py wrote it"
            )
        if present[: len(listed)] != listed:
            extra = next(n for n in present[: len(listed)] if n not in listed)
            raise ValueError(
                f"{claim.path}: {data_dir / extra} sorts before the {split} shards the run read, so the trainer "
                f"(which reads the first shards by name) would read it instead; move it out of {data_dir} or give "
                "--data DIR with exactly the run's shards"
            )
    paths = [data_dir / s.name for s in claim.shards]
    for p in paths:
        if not p.is_file():
            raise ValueError(f"{claim.path}: {p} is not a regular file; {fix}")
    digests = hasher.hash_files(paths)
    for s, p in zip(claim.shards, paths, strict=True):
        if digests[p] != s.sha256:
            raise ValueError(
                f"{claim.path}: {p} has sha256 {digests[p][:16]}..., but the run read a {s.name} with sha256 "
                f"{s.sha256[:16]}...: not the same data; {fix}"
            )


# --- running the code ---------------------------------------------------------------------------


def trainer_env(claim: Claim, data_path: str, log_dir: str) -> dict[str, str]:
    """The only settings a reproduction gives the trainer: the log's seed, preset and overrides, and where
    the data and the new log are. Checkpoints are off: a reproduction keeps logs, not weights."""
    env = {
        "SEED": str(claim.seed),
        "SPEEDRUN_PRESET": claim.preset,
        "DATA_PATH": data_path,
        "LOG_DIR": log_dir,
        "SPEEDRUN_CHECKPOINT_EVERY": "-1",
    }
    if claim.overrides:
        env["SPEEDRUN_OVERRIDES"] = json.dumps(claim.overrides)
    return env


def local_env(base: Mapping[str, str], claim: Claim, data_dir: Path, log_dir: Path) -> dict[str, str]:
    """The environment of an unsandboxed run: the caller's, less anything that would change the run (its run
    settings, and the variables that change how torch compiles)."""
    env = {
        k: v
        for k, v in base.items()
        if not _RUN_VARIABLE_RE.match(k) and (not _COMPILE_VARIABLE_RE.match(k) or k in _KEPT_COMPILE_VARIABLES)
    }
    env.update(trainer_env(claim, str(data_dir.resolve()), str(log_dir.resolve())))
    if claim.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU log runs on CPU even on a machine with GPUs
    return env


def local_argv(code_file: Path, nproc: int, report_fifo: Path) -> list[str]:
    """torchrun of this Python (the same interpreter as the tools), each rank through the probe."""
    return sandbox.trainer_command(nproc, str(code_file.resolve()), str(PROBE_FILE), str(report_fifo), sys.executable)


@dataclass
class RunResult:
    returncode: int
    tail: list[str]
    log: Path | None
    watch: WatchFacts | None = None
    probe: report.ProbeVerdict | None = None


class TrainerConsole:
    """The trainer's console, condensed: one updating progress line on a terminal, val lines always."""

    def __init__(self, label: str, stream: IO[str]) -> None:
        self.label, self.stream = label, stream
        self.tty = stream.isatty()
        self.dirty = False

    def _clear(self) -> None:
        if self.dirty:
            self.stream.write("\r\033[K")
            self.dirty = False

    def line(self, text: str) -> None:
        m = _STEP_LINE_RE.match(text)
        if m and m.group(3) == "train_loss":
            if self.tty:
                step, total = int(m.group(1)), max(int(m.group(2)), 1)
                self._clear()
                self.stream.write(
                    f"{self.label}: step {step}/{total} ({100 * step // total}%), "
                    f"train_time {int(m.group(5)) / 1000:.1f} s"
                )
                self.dirty = True
                self.stream.flush()
            return
        if text.startswith(_QUIET_PREFIXES) or text == SEPARATOR:
            return  # long JSON lines, in the log and in console.log
        self._clear()
        self.stream.write(f"{self.label}: {text}\n" if m else f"  {text}\n")
        self.stream.flush()

    def close(self) -> None:
        self._clear()
        self.stream.flush()


def _stop(proc: subprocess.Popen[str], container: str | None) -> None:
    if container is not None:
        sandbox.kill_container(container)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def run_trainer(
    argv: list[str],
    env: Mapping[str, str] | None,
    cwd: Path,
    log_dir: Path,
    label: str,
    container: str | None = None,
    stream: IO[str] | None = None,
    limits: sandbox.Limits | None = None,
    cuda: bool = False,
    console_file: Path | None = None,
    pass_fds: Sequence[int] = (),
) -> RunResult:
    """Run one reproduction, keep its console in ``console_file`` (default ``log_dir/console.log``), find the log it
    wrote; with ``limits``, the runner watches them (tools/reproduce/watch.py) and stops the run past one."""
    progress = TrainerConsole(label, stream or sys.stderr)
    tail: deque[str] = deque(maxlen=20)
    watch: Watch | None = None
    with (console_file or log_dir / "console.log").open("w", encoding="utf-8") as console:
        try:
            proc = subprocess.Popen(
                argv,
                env=None if env is None else dict(env),
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
                bufsize=1,
                start_new_session=True,  # Ctrl-C reaches this process, which then stops the whole run
                pass_fds=tuple(pass_fds),
            )
        except OSError as e:
            raise ValueError(f"cannot start {argv[0]} ({e.strerror or e}); check that it is installed") from e
        assert proc.stdout is not None
        if limits is not None:
            kill = (lambda _pid: sandbox.kill_container(container)) if container is not None else None
            watch = Watch(proc.pid, log_dir, limits, count_processes=container is None, cuda=cuda, kill=kill)
        try:
            for raw in proc.stdout:
                text = raw.rstrip("\n")
                console.write(text[:10_000] + "\n")
                tail.append(text[:2_000])
                progress.line(text)
            returncode = proc.wait()
        except BaseException:
            progress.close()
            if watch is not None:
                watch.stop()
            _stop(proc, container)
            raise
        progress.close()
    facts = watch.stop() if watch is not None else None
    logs = sorted(p for p in log_dir.glob("*.txt") if p.is_file() and not p.is_symlink())
    return RunResult(returncode, list(tail), logs[0] if len(logs) == 1 else None, facts)


# --- comparing the new log with the claimed one ---------------------------------------------------


@dataclass
class Finding:
    kind: str  # one of _ORDER
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reproduction:
    """The judgement of one claimed run."""

    claimed: str
    claimed_sha256: str
    reproduction: str | None = None
    reproduction_sha256: str | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: str = ""  # what agreed, for a reproduced run
    nproc: int | None = None
    sandbox: str | None = None
    reused: bool = False
    gpu_names: list[str] = field(default_factory=list)
    python_version: str | None = None
    torch_version: str | None = None
    loss: dict[str, Any] = field(default_factory=dict)
    time: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] | None = None  # report.ProbeVerdict.to_json(): what the run really did, judged
    static: list[dict[str, Any]] = field(default_factory=list)  # the compile-flags rule's reading of the code
    watch: dict[str, Any] = field(default_factory=dict)  # limits, peaks, the GPUs seen in use

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def first(self) -> Finding | None:
        if not self.findings:
            return None
        return min(self.findings, key=lambda f: _ORDER.index(f.kind))

    @property
    def verdict(self) -> str:
        """``reproduced``, or the most telling finding, e.g. ``slower than claimed by 12.3 %``."""
        first = self.first
        if first is None:
            return REPRODUCED
        if first.kind in (SLOWER, FASTER) and "percent" in first.details:
            return f"{first.kind} by {first.details['percent']:.1f} %"
        if first.kind == CONFIG_DIFFERS and first.details.get("keys"):
            return f"{first.kind} ({', '.join(first.details['keys'][:3])})"
        if first.kind == LOSS_DIFFERS and "step" in first.details:
            return f"{first.kind} at step {first.details['step']}"
        if first.kind in (RULE_BROKEN, STOPPED) and first.details.get("what"):
            return f"{first.kind} ({', '.join(first.details['what'][:3])})"[:200]
        return first.kind

    def text(self) -> str:
        first = self.first
        lines = [f"{self.claimed}: {self.verdict}" + (f": {self.summary}" if first is None and self.summary else "")]
        if first is not None:
            lines.append(f"    {first.message}")
            lines += [f"    also: {f.message}" for f in self.findings if f is not first]
        lines += [f"    note: {n}" for n in self.notes]
        if self.reproduction:
            lines.append(f"    reproduction: {self.reproduction}" + (" (reused)" if self.reused else ""))
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = _json_safe(
            {
                "claimed": self.claimed,
                "claimed_sha256": self.claimed_sha256,
                "reproduction": self.reproduction,
                "reproduction_sha256": self.reproduction_sha256,
                "verdict": self.verdict,
                "reproduced": self.ok,
                "findings": [{"kind": f.kind, "message": f.message, **f.details} for f in self.findings],
                "notes": self.notes,
                "nproc": self.nproc,
                "sandbox": self.sandbox,
                "reused": self.reused,
                "loss": self.loss,
                "time": self.time,
                "probe": self.probe,
                "static": self.static,
                "watch": self.watch,
            }
        )
        return out


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity (a claimed log may print them): write those as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _short_version(version: str | None) -> str | None:
    """'3.12.3' of the log's 'Running Python 3.12.3 (main, ...)' line."""
    return version.split(" ")[0] if version else None


def _canonical(value: Any) -> str:
    """JSON text of a value, so that 1, 1.0 and true compare as different (as the trainer wrote them)."""
    return json.dumps(value, sort_keys=True)


def compare_logs(
    claimed: ParsedLog, new: ParsedLog, nproc_changed: bool = False, device: str | None = None
) -> tuple[list[Finding], list[str], dict[str, Any], dict[str, Any]]:
    """Judge a reproduction ``new`` against the ``claimed`` log: (findings, notes, loss facts, time facts).

    A pure function of the two parsed logs, so it can be tested on hand-made logs of any device.
    """
    findings: list[Finding] = []
    notes: list[str] = []
    ccfg, ncfg = claimed.config or {}, new.config or {}
    device = device or str(ccfg.get("device", "cuda"))

    if new.source_sha256 != claimed.source_sha256:
        findings.append(
            Finding(
                CODE_DIFFERS,
                f"the reproduction logged code with sha256 {str(new.source_sha256)[:16]}..., the claimed log "
                f"{str(claimed.source_sha256)[:16]}...: the claimed source section is not the file as the trainer "
                "logs it (an edit after the run, or line ends the trainer does not write)",
                {"claimed": claimed.source_sha256, "measured": new.source_sha256},
            )
        )

    ignored = IGNORED_CONFIG_KEYS | (NPROC_CONFIG_KEYS if nproc_changed else frozenset())
    keys = sorted(k for k in set(ccfg) | set(ncfg) if k not in ignored)
    differ = [k for k in keys if (k in ccfg) != (k in ncfg) or _canonical(ccfg.get(k)) != _canonical(ncfg.get(k))]
    if differ:

        def show(cfg: dict[str, Any], k: str) -> str:
            return _canonical(cfg[k])[:60] if k in cfg else "(absent)"

        shown = "; ".join(f"{k}: claimed {show(ccfg, k)}, ran {show(ncfg, k)}" for k in differ[:5])
        more = f" and {len(differ) - 5} more" if len(differ) > 5 else ""
        findings.append(
            Finding(
                CONFIG_DIFFERS,
                f"the config line differs: {shown}{more} (the code, run with the log's seed, preset and overrides, "
                "does not produce the claimed config)",
                {"keys": differ},
            )
        )

    def shard_list(data: dict[str, Any] | None) -> str:
        if data is None:
            return "null"
        return _canonical({"vocab_size": data.get("vocab_size"), "shards": data.get("shards")})

    if shard_list(claimed.data) != shard_list(new.data):
        findings.append(
            Finding(
                DATA_DIFFERS,
                "the data line differs: the reproduction read other shards (names, token counts or sha256) than the "
                "claimed run",
            )
        )

    loss = _compare_loss(claimed, new, device, findings)
    time = _compare_time(claimed, new, device, nproc_changed, findings, notes)

    for what, a, b in (
        ("PyTorch", claimed.torch_version, new.torch_version),
        ("Python", _short_version(claimed.python_version), _short_version(new.python_version)),
    ):
        if a != b:
            notes.append(f"{what} {b} here, {a} in the claimed run: numerics may differ")
    if device == "cuda" and claimed.gpu_name != new.gpu_name:
        notes.append(
            f"ran on {new.num_gpus}x {new.gpu_name}, the claimed run on {claimed.num_gpus}x {claimed.gpu_name}"
        )
    if ccfg.get("resumed_from"):
        notes.append("the claimed run was resumed from a checkpoint; the reproduction ran from scratch")
    return findings, notes, loss, time


def _compare_loss(claimed: ParsedLog, new: ParsedLog, device: str, findings: list[Finding]) -> dict[str, Any]:
    total = claimed.total_steps or (claimed.final_step or 1)
    measured: dict[int, float] = {}
    for p in new.val_curve:
        measured.setdefault(p.step, p.val_loss)
    claimed_steps = {p.step for p in claimed.val_curve}
    last = claimed.final_step if claimed.final_step is not None else -1
    problems: list[tuple[int, str, dict[str, Any]]] = []
    max_diff = 0.0
    for p in claimed.val_curve:
        tol = loss_tolerance(p.step, total, device)
        if p.step not in measured:
            problems.append((p.step, f"the claimed log has a val loss at step {p.step}, the reproduction none", {}))
            continue
        m = measured[p.step]
        diff = m - p.val_loss
        if math.isfinite(diff):
            max_diff = max(max_diff, abs(diff))
        if not math.isfinite(diff) or abs(diff) > tol + 1e-9:
            rule = "CPU runs must match exactly" if device == "cpu" else f"tolerance {tol:.4f} at this point"
            problems.append(
                (
                    p.step,
                    f"loss differs at step {p.step}: claimed {p.val_loss:.4f}, measured {m:.4f} ({diff:+.4f}; {rule})",
                    {"claimed": p.val_loss, "measured": m, "difference": diff, "tolerance": tol},
                )
            )
    for step in sorted(set(measured) - claimed_steps):
        if step <= last:  # a val line the claimed log lacks (points after a run that stopped early are expected)
            problems.append((step, f"the reproduction has a val loss at step {step}, the claimed log none", {}))
    if not claimed.val_curve:
        problems.append((0, "the claimed log has no val loss line", {}))
    if problems:
        problems.sort(key=lambda t: t[0])
        step, message, details = problems[0]
        if len(problems) > 1:
            message += f" ({len(problems) - 1} later val step(s) differ too)"
        findings.append(Finding(LOSS_DIFFERS, message, {"step": step, **details, "steps_differing": len(problems)}))
    return {
        "points": len(claimed.val_curve),
        "max_abs_difference": round(max_diff, 6),
        "exact": device == "cpu",
        "differing": len(problems),
    }


def _compare_time(
    claimed: ParsedLog,
    new: ParsedLog,
    device: str,
    nproc_changed: bool,
    findings: list[Finding],
    notes: list[str],
) -> dict[str, Any]:
    final = claimed.final
    tol = CPU_TIME_TOLERANCE if device == "cpu" else GPU_TIME_TOLERANCE
    facts: dict[str, Any] = {"judged": False, "tolerance": tol}
    if final is None or final.step <= 0 or final.train_time_ms is None:
        notes.append("time not judged: the claimed log has no timed val line after step 0")
        return facts
    other = next((p for p in new.val_curve if p.step == final.step), None)
    if other is None or other.train_time_ms is None:
        notes.append(f"time not judged: the reproduction has no val line at step {final.step}")
        return facts
    c_ms, m_ms = final.train_time_ms / final.step, other.train_time_ms / final.step
    facts.update(step=final.step, claimed_ms_per_step=round(c_ms, 3), measured_ms_per_step=round(m_ms, 3))
    if nproc_changed:
        notes.append("time not judged: the reproduction ran with another number of processes than the claimed run")
        return facts
    if device == "cuda" and (claimed.gpu_name != new.gpu_name or claimed.num_gpus != new.num_gpus):
        notes.append("time not judged: the reproduction ran on other GPUs than the claimed run")
        return facts
    facts["judged"] = True
    if not math.isfinite(c_ms) or c_ms <= 0:
        findings.append(
            Finding(SLOWER, f"the claimed log gives {final.train_time_ms:.0f} ms for {final.step} steps", {})
        )
        return facts
    ratio = m_ms / c_ms
    if not math.isfinite(ratio):
        notes.append(f"time not judged: the reproduction logged {other.train_time_ms} ms")
        return facts
    facts["ratio"] = round(ratio, 4)
    where = "on CPU" if device == "cpu" else "on GPU"
    detail = f"{m_ms:.2f} ms per step measured, {c_ms:.2f} ms claimed; tolerance {100 * tol:.1f} % {where}"
    if ratio > 1 + tol:
        pct = 100 * (ratio - 1)
        findings.append(Finding(SLOWER, f"slower than claimed by {pct:.1f} % ({detail})", {"percent": pct}))
    elif ratio < 1 / (1 + tol):
        pct = 100 * (1 - ratio)
        findings.append(Finding(FASTER, f"faster than claimed by {pct:.1f} % ({detail})", {"percent": pct}))
    return facts


def describe_agreement(loss: dict[str, Any], time: dict[str, Any]) -> str:
    how = "equal" if loss.get("exact") else f"within tolerance (largest difference {loss['max_abs_difference']:.4f})"
    parts = [f"{loss['points']} val losses {how}"]
    if "ratio" in time:
        parts.append(
            f"time per step {time['measured_ms_per_step']:.2f} ms vs {time['claimed_ms_per_step']:.2f} ms claimed "
            f"({100 * (time['ratio'] - 1):+.1f} %)"
        )
    return ", ".join(parts)


def static_reading(claim: Claim) -> list[dict[str, Any]]:
    """The compile-flags rule's reading of the claimed code (tools/judge/sourcecheck.py): the fast first reading,
    shown beside what the probe saw."""
    code = claim.code.decode("utf-8", "replace")
    found = find_compile_flags(code, _short_version(claim.log.python_version))
    return [{"line": f.line, "what": f.what[:300], "kind": f.kind, "option": f.option} for f in found]


def probe_findings(v: Reproduction, probe: report.ProbeVerdict | None, ran: bool) -> None:
    """The probe's judgement as findings of ``v``: rules broken (the verdict), an incomplete report."""
    if probe is None:
        if ran:
            v.findings.append(Finding(PROBE_INCOMPLETE, "the run left no probe report", {}))
        return
    v.probe = probe.to_json()
    if probe.findings:
        what = report.verdict_options(probe)
        shown = "; ".join(f"{f.rule}: {f.message}" for f in probe.findings[:5])
        more = f" and {len(probe.findings) - 5} more" if len(probe.findings) > 5 else ""
        v.findings.append(Finding(RULE_BROKEN, f"the probe saw the run break the rules: {shown}{more}", {"what": what}))
    if probe.incomplete:
        shown = "; ".join(probe.incomplete[:3])
        v.findings.append(
            Finding(
                PROBE_INCOMPLETE,
                f"the probe's report cannot be trusted whole: {shown} (the code may have attacked the probe)",
                {"problems": probe.incomplete[:20]},
            )
        )
    v.notes += [f"probe: {n}" for n in probe.notes]


def gpu_findings(nproc: int, seen: Sequence[str], logged: Sequence[str]) -> list[Finding]:
    """The ``hardware`` rule on a CUDA reproduction: the GPUs nvidia-smi saw its processes on (``seen``, from outside
    the code) must be ``nproc`` distinct ones, and the ``host:`` line the code wrote (``logged``) must name exactly
    them, each once: one GPU's UUID written eight times is one GPU."""
    out = []
    if len(set(seen)) != nproc:
        out.append(
            Finding(
                RULE_BROKEN,
                f"hardware: nvidia-smi saw the run's processes on {len(set(seen))} GPU(s), the run has {nproc} "
                "process(es)",
                {"what": ["hardware"]},
            )
        )
    if logged and (len(set(logged)) != len(logged) or set(logged) != set(seen)):
        out.append(
            Finding(
                RULE_BROKEN,
                f"hardware: the reproduction's host line names {len(logged)} GPU(s) ({len(set(logged))} distinct), "
                f"not the {len(set(seen))} nvidia-smi saw the run on: the code wrote a host line of its own",
                {"what": ["hardware"]},
            )
        )
    return out


def judge_reproduction(
    claim: Claim, result: RunResult | None, new_log: Path | None, nproc: int, saved_probe: Path | None = None
) -> Reproduction:
    """The verdict of one claimed run from its reproduction (``result`` is None for a reused log, whose probe
    report was saved beside it as ``saved_probe``)."""
    v = Reproduction(claimed=str(claim.path), claimed_sha256=claim.log.file_sha256, nproc=nproc)
    v.static = static_reading(claim)
    if result is not None and result.watch is not None:
        w = result.watch
        v.watch = {
            "peak_processes": w.peak_processes,
            "peak_memory_bytes": w.peak_memory,
            "output_bytes": w.output_bytes,
            "seconds": round(w.seconds, 1),
            "gpu_uuids": w.gpu_uuids,
            "gpu_samples": w.gpu_samples,
        }
        if w.stopped is not None:
            v.findings.append(
                Finding(STOPPED, f"the sandbox stopped the run: {w.stopped.message}", {"what": [w.stopped.limit]})
            )
        if claim.device == "cuda" and w.gpu_samples == 0:
            v.notes.append("the GPUs used were not seen: nvidia-smi did not answer the runner during the run")
    if result is not None:
        probe_findings(v, result.probe, ran=True)
    else:
        probe_findings(v, _read_saved_probe(saved_probe), ran=True)
    if result is not None and (result.returncode != 0 or result.log is None):
        last = "\n".join(f"      | {t}" for t in result.tail[-12:])
        why = f"exit code {result.returncode}" if result.returncode != 0 else "it wrote no log"
        if not any(f.kind == STOPPED for f in v.findings):
            v.findings.append(
                Finding(
                    RUN_FAILED,
                    f"the reproduction failed ({why}); its last lines:\n{last}",
                    {"exit_code": result.returncode},
                )
            )
        return v
    assert new_log is not None
    new = parse_log(new_log)
    v.reproduction, v.reproduction_sha256 = str(new_log), new.file_sha256
    v.gpu_names, v.python_version, v.torch_version = list(new.gpu_names), new.python_version, new.torch_version
    if result is not None and result.watch is not None and claim.device == "cuda" and result.watch.gpu_samples:
        v.findings += gpu_findings(nproc, result.watch.gpu_uuids, new.gpu_uuids)
    if new.final_step is None or new.final_step != new.total_steps:
        v.findings.append(
            Finding(RUN_FAILED, f"the reproduction's log {new_log} stops at step {new.final_step} of {new.total_steps}")
        )
        return v
    findings, notes, loss, time = compare_logs(claim.log, new, nproc_changed=nproc != claim.world_size)
    v.findings += findings
    v.notes += notes
    v.loss, v.time = loss, time
    if nproc != claim.world_size:
        v.notes.insert(0, f"ran with {nproc} processes, the claimed run with {claim.world_size} (same global batch)")
    v.summary = describe_agreement(loss, time)
    return v


# --- reproduced.json: the maintainers' record of a reproduction -----------------------------------


def tools_commit() -> str | None:
    """The git commit of the tools that judged (``-dirty`` when tools/ or the trainer have local changes)."""
    here = Path(__file__).resolve().parent
    root = here.parents[1]  # tools/reproduce/ -> the repository
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=30)
        if head.returncode != 0 or not re.match(r"^[0-9a-f]{40}$", head.stdout.strip()):
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "tools"], cwd=root, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


MAX_SUMMARY_ITEMS = 20


def _probe_summary(v: Reproduction) -> dict[str, Any]:
    """What reproduced.json keeps of the probe: clean or not, and in words what it saw broken or missing."""
    if v.probe is None:  # a verdict made without a run (judge_reproduction adds a finding when the probe is missing)
        return {"clean": v.ok, "findings": [] if v.ok else [f"{v.verdict}: no probe report"]}
    said = [f"{f['rule']}: {f['message']}"[:300] for f in v.probe.get("findings", [])]
    said += [f"incomplete: {x}"[:300] for x in v.probe.get("incomplete", [])]
    return {"clean": bool(v.probe.get("clean")), "findings": said[:MAX_SUMMARY_ITEMS]}


def write_reproduced(
    record: Path, claims: Sequence[Claim], verdicts: Sequence[Reproduction], sandbox_kind: str
) -> Path:
    """Write ``record/reproduced.json`` (what --write-verdict does) and return its path."""
    first = next((v for v in verdicts if v.reproduction_sha256), None)
    data = {
        "format": REPRODUCED_FORMAT,
        "date": dt.datetime.now(dt.UTC).date().isoformat(),
        "tools_commit": tools_commit(),
        "machine": {
            # GPU names as nvidia-smi printed them in the reproduction's log; no host name, nothing private
            "gpus": first.gpu_names if first else [],
            "nproc": verdicts[0].nproc or 1,
            "sandbox": sandbox_kind,
            "python": _short_version(first.python_version) if first else None,
            "torch": first.torch_version if first else None,
        },
        "runs": [
            {
                "log": c.path.name,
                "log_sha256": c.log.file_sha256,
                "verdict": v.verdict,
                "reproduced": v.ok,
                "reproduction_sha256": v.reproduction_sha256,
                "probe": _probe_summary(v),
                "static": [f"line {f['line']}: {f['what']}"[:300] for f in v.static[:MAX_SUMMARY_ITEMS]],
            }
            for c, v in zip(claims, verdicts, strict=True)
        ],
    }
    validate_reproduced(data, f"{record / REPRODUCED_FILE} (about to be written)")
    path = record / REPRODUCED_FILE
    tmp = record / f".{REPRODUCED_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# --- the command ---------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="LOG|RECORD", type=Path, help="a log file, or a record folder (its *.txt logs)")
    p.add_argument("--runs", type=int, metavar="N", help="reproduce the first N logs of the record (default: all)")
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="processes (GPUs) to use (default: the log's world_size; the global batch stays, time is not judged)",
    )
    p.add_argument("--data", type=Path, metavar="DIR", help="the shard folder (default: the log's data_path)")
    p.add_argument(
        "--sandbox",
        choices=("bwrap", "docker", "none"),
        help="bwrap: bubblewrap, no daemon (the default where it works); docker: the project's image (the default "
        "where bwrap does not work and an engine answers); both: no network, read-only root, only the output folder "
        "writable, not root, limits. none: run the code unsandboxed as you, only for code you trust; without a "
        "sandbox and without this option nothing runs",
    )
    p.add_argument(
        "--limit",
        action="append",
        metavar="KEY=VALUE",
        help="a bound of the sandbox, repeatable: time=2h, memory=64G, processes=512, output=1G, file=1G (defaults: "
        "30 min + 4x the claimed training time, 90%% of the memory, 256 per process, 1 GiB of output and per file)",
    )
    p.add_argument("--image", default=sandbox.DEFAULT_IMAGE, help="the Docker image (default: %(default)s)")
    p.add_argument("--out", type=Path, metavar="DIR", help="where the new logs go (default: reproductions/<record>)")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="judge a finished reproduction already under --out with the same code, seed and settings instead "
        "of running it again (after an interrupted session, or to judge an edited copy of a log)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per run on stdout")
    p.add_argument(
        "--write-verdict",
        action="store_true",
        help=f"maintainers: write the verdicts to RECORD/{REPRODUCED_FILE} (docs/reproduce.md)",
    )
    p.add_argument(
        "--extract",
        type=Path,
        metavar="FILE",
        help="run nothing: write the code of the log (of a record: its first log) to FILE, byte for byte, e.g. the "
        "previous record's train_gpt.py for same-node baseline runs (records/README.md); a file its trainer appended "
        "to its code (triton_kernels.py) goes beside FILE under its own name. Nothing is overwritten",
    )


def _gpu_count() -> int:
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def _records_root(path: Path) -> Path | None:
    for parent in [path.resolve(), *path.resolve().parents]:
        if parent.name == "records":
            return parent
    return None


def _fresh_dir(parent: Path) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for i in range(1, 1000):
        d = parent / (stamp if i == 1 else f"{stamp}-{i}")
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
        except OSError as e:
            raise ValueError(f"{d}: cannot be made ({e.strerror}); give --out DIR in a writable folder") from e
    raise ValueError(f"{parent}: cannot make a fresh folder for the new log; clean it up or give another --out")


def find_reusable(out: Path, claim: Claim, nproc: int) -> Path | None:
    """A finished reproduction under ``out`` of the same code, seed, preset, overrides and process count."""
    candidates = sorted(out.glob("*/*/*.txt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        if path.is_symlink():
            continue
        try:
            log = parse_log(path)
        except ValueError:
            continue
        cfg = log.config or {}
        if (
            log.source_sha256 == claim.log.source_sha256
            and _canonical(cfg.get("seed")) == _canonical(claim.seed)
            and cfg.get("preset") == claim.preset
            and _canonical(cfg.get("overrides", {})) == _canonical(claim.overrides)
            and cfg.get("world_size") == nproc
            and log.final_step is not None
            and log.final_step == log.total_steps == claim.num_iterations
        ):
            return path
    return None


def _write_code(run_dir: Path, claim: Claim) -> Path:
    code_file = run_dir / TRAINER_NAME
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if code_file.is_symlink() or code_file.exists():
            code_file.unlink()
        code_file.write_bytes(claim.code)
        code_file.chmod(0o444)
    except OSError as e:
        raise ValueError(f"{code_file}: cannot be written ({e.strerror}); give --out DIR in a writable folder") from e
    if hashlib.sha256(code_file.read_bytes()).hexdigest() != claim.log.source_sha256:
        raise ValueError(
            f"{code_file}: the extracted code does not hash to the log's source sha256; the disk changed it"
        )
    return code_file


def _plan(args: argparse.Namespace) -> tuple[str, Path | None, list[Claim], Path]:
    name, record, paths = find_logs(args.target)
    if args.runs is not None:
        if args.runs < 1:
            raise ValueError(f"--runs {args.runs}: give a number of runs >= 1")
        paths = paths[: args.runs]
    if args.nproc is not None and not 1 <= args.nproc <= 4096:
        raise ValueError(f"--nproc {args.nproc}: give a number of processes >= 1")
    if args.write_verdict and record is None:
        raise ValueError(
            f"{args.target}: --write-verdict writes {REPRODUCED_FILE} into a record folder; give the record folder"
        )
    claims = [load_claim(p) for p in paths]
    out: Path = args.out if args.out is not None else Path("reproductions") / name
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: not a folder; give --out DIR, a folder for the new logs")
    root = _records_root(args.target)
    if root is not None and out.resolve().is_relative_to(root):
        raise ValueError(
            f"{out}: inside {root}; the new logs must stay outside records/ (give --out DIR elsewhere, default "
            f"reproductions/{name})"
        )
    return name, record, claims, out


def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None


def _is_root() -> bool:
    return os.geteuid() == 0


def _choose_sandbox(args: argparse.Namespace) -> str:
    """The sandbox to run in: the one asked for, else bubblewrap where it works, else Docker where an engine answers
    and the image is built; never none unless asked for in so many words."""
    kind: str | None = args.sandbox
    if kind is None:
        bwrap = sandbox.bwrap_problem(_is_root())
        docker = sandbox.docker_engine()
        if bwrap is None:
            kind = "bwrap"
        elif docker is None and sandbox.image_present(args.image):
            kind = "docker"
        else:
            docker_why = docker or f"the image {args.image!r} is not built (docker build -t {args.image} .)"
            raise ValueError(
                f"no sandbox can run the logs' code here: bwrap: {bwrap}; docker: {docker_why}. Install bubblewrap "
                "(apt-get install bubblewrap) or start Docker and build the image; or, for code you trust, run it "
                "unsandboxed with --sandbox none, which says what that means"
            )
    if kind == "bwrap":
        problem = sandbox.bwrap_problem(_is_root())
        if problem is not None:
            raise ValueError(
                f"--sandbox bwrap: {problem}. Install bubblewrap (apt-get install bubblewrap) where user namespaces "
                "are allowed, or use --sandbox docker; for code you trust, --sandbox none"
            )
    if kind == "docker":
        problem = sandbox.docker_engine()
        if problem is not None:
            raise ValueError(
                f"--sandbox docker: {problem}. Start the Docker engine (or install Docker), use --sandbox bwrap, or, "
                "for code you trust, run it unsandboxed with --sandbox none"
            )
        if not sandbox.image_present(args.image):
            raise ValueError(
                f"--sandbox docker: the image {args.image!r} is not built on this machine; build it from the "
                f"repository root with `docker build -t {args.image} .` or name another with --image"
            )
    elif not _has_torch():
        raise ValueError(
            f"--sandbox {kind} runs torchrun from this Python ({sys.executable}), which has no torch; "
            "install it with `pip install -r requirements.txt`, or use --sandbox docker"
        )
    return kind


def _check_readable_by_sandbox(claim: Claim, data_dir: Path) -> None:
    """A root caller's sandbox runs as uid 65534, which reads the data folder as "others" do."""
    paths = [data_dir] + [data_dir / s.name for s in claim.shards]
    closed = [
        p for p in paths if (p.stat().st_mode & (0o005 if p.is_dir() else 0o004)) != (0o005 if p.is_dir() else 0o004)
    ]
    if closed:
        raise ValueError(
            f"{closed[0]}: not readable by other users, and the sandbox runs the code as uid 65534 (nobody), not as "
            f"root; make the data readable with `chmod -R o+rX {data_dir}` or give --data DIR with readable shards"
        )


# A file name the log may give an appended file for --extract to write beside FILE: no folder, no '..', no option.
_PLAIN_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")


@dataclass(frozen=True)
class Extracted:
    """What ``extract_code`` wrote: the log it read, and per file of its code (path, name in the log, sha256)."""

    log: Path
    files: list[tuple[Path, str, str]]  # the trainer first (name ""), then each appended file
    source_sha256: str | None  # the log's: the sha256 of the one file written, for this repository's logs


def _line_starts(raw: bytes, lines: list[int]) -> list[int]:
    """The byte offset where each of the (ascending, 1-based) ``lines`` starts in ``raw``."""
    out, pos, line = [], 0, 1
    for want in lines:
        while line < want:
            pos = raw.index(b"\n", pos) + 1
            line += 1
        out.append(pos)
    return out


def extract_code(target: Path, dest: Path) -> Extracted:
    """Write the code of ``target`` (a log, or a record folder's first log): the trainer to ``dest``, and each file
    it appended to its own code (the public trainers' ``triton_kernels.py``) beside ``dest`` under its own name.

    Every log form that carries its code: this repository's, the public ones since late 2024 (source section, maybe
    with appended files), the 2024 ones (code between the first two separators). Nothing is overwritten. The files,
    read back from the disk and put back between the log's separator lines, must give the log's bytes (its sha256),
    and, where the code is the source section, the source sha256: for one file, ``sha256(dest)`` as before."""
    _, _, logs = find_logs(target)
    raw, size = read_log_bytes(logs[0], DEFAULT_MAX_BYTES)
    log = parse_bytes(raw, str(logs[0]), size=size)
    files = log.code_files if size <= DEFAULT_MAX_BYTES else []
    if not files or not any(f.text.strip() for f in files):
        raise ValueError(
            f"{logs[0]}: no code in this log (its source was omitted, or it has none: an llm.c log, or no separator "
            "line after a source section), so there is no code to extract"
        )
    starts = _line_starts(raw, [f.line for f in files])
    spans = []
    for f, begin in zip(files, starts, strict=True):
        what = f"the appended file {f.name!r}" if f.name else "the trainer's code"
        if len(f.text) > MAX_CODE_CHARS:
            raise ValueError(
                f"{logs[0]}: {what} is over {MAX_CODE_CHARS:,} characters, more than the tools read of one file (a "
                "trainer is ~100 KB), so it is not extracted"
            )
        data = f.text.encode("utf-8")
        if raw[begin : begin + len(data)] != data:
            raise ValueError(f"{logs[0]}: {what} is not valid UTF-8 in the log, so it is not a file a trainer logged")
        spans.append((begin, begin + len(data)))
    targets = [dest]
    for f in files[1:]:
        if not _PLAIN_NAME_RE.fullmatch(f.name):
            raise ValueError(
                f"{logs[0]}: the appended file's name {f.name[:80]!r} is not a plain file name, so it is not written"
            )
        targets.append(dest.parent / f.name)
    if len({t.name for t in targets}) != len(targets):
        raise ValueError(
            f"{logs[0]}: two files of its code would be written to one name ({', '.join(t.name for t in targets)}); "
            "give --extract another file name"
        )
    for t in targets:
        if t.exists() or t.is_symlink():
            raise ValueError(f"{t}: already exists; give --extract a new file name (or remove that file first)")
    written: list[Path] = []
    try:
        for t, (begin, end) in zip(targets, spans, strict=True):
            with t.open("xb") as out:  # exclusive: a file that appeared meanwhile is not overwritten
                written.append(t)
                out.write(raw[begin:end])
        back = [t.read_bytes() for t in targets]
    except OSError as e:
        for t in written:
            t.unlink(missing_ok=True)
        raise ValueError(
            f"{e.filename}: cannot be written ({e.strerror}); give --extract a path in a writable folder"
        ) from e
    # The files as the disk holds them, put back between the log's own bytes: the log, byte for byte (its sha256);
    # and where the code is the source section (at the start of the log), the log's source sha256.
    parts, pos = [], spans[0][0]
    for (begin, end), data in zip(spans, back, strict=True):
        parts += [raw[pos:begin], data]
        pos = end
    code = b"".join(parts)
    whole = hashlib.sha256(raw[: spans[0][0]])
    whole.update(code)
    whole.update(raw[spans[-1][1] :])
    source_ok = spans[0][0] != 0 or hashlib.sha256(code).hexdigest() == log.source_sha256
    if whole.hexdigest() != log.file_sha256 or not source_ok:
        for t in written:
            t.unlink(missing_ok=True)
        raise ValueError(f"{logs[0]}: the files written are not the log's code byte for byte (the disk changed them)")
    digests = [hashlib.sha256(data).hexdigest() for data in back]
    return Extracted(
        logs[0], [(t, f.name, d) for t, f, d in zip(targets, files, digests, strict=True)], log.source_sha256
    )


def run(args: argparse.Namespace) -> int:
    if args.extract is not None:
        done = extract_code(args.target, args.extract)
        (path, _, digest), appended = done.files[0], done.files[1:]
        if not appended and digest == done.source_sha256:
            print(printable(f"wrote the code of {done.log} to {path} (sha256 {digest[:16]}…, as the log says)"))
            return 0
        print(printable(f"wrote the code of {done.log} to {path} (sha256 {digest[:16]}…)"))
        for path, name, digest in appended:
            print(
                printable(f"wrote {name}, the file its trainer appended to its code, to {path} (sha256 {digest[:16]}…)")
            )
        print("put back between the log's separator lines, the files written are the log byte for byte")
        return 0
    name, record, claims, out = _plan(args)
    kind = _choose_sandbox(args)
    gpus = _gpu_count() if any(c.device == "cuda" for c in claims) else 0
    hasher = ShardHasher()
    reusable: dict[int, Path] = {}
    for i, c in enumerate(claims):
        nproc = args.nproc or c.world_size
        if args.reuse and (found := find_reusable(out, c, nproc)) is not None:
            reusable[i] = found
            continue
        data_dir = args.data if args.data is not None else Path(c.data_path)
        check_data(c, data_dir, hasher)
        if kind == "bwrap" and _is_root():
            _check_readable_by_sandbox(c, data_dir)
        if c.device == "cuda" and gpus < nproc:
            raise ValueError(
                f"{c.path}: the run used {nproc} CUDA process(es), but this machine shows {gpus} GPU(s) "
                "(nvidia-smi -L); reproduce it on a GPU node like the one it ran on, or give --nproc N (time is "
                "then not judged)"
            )
    for given in args.limit or []:  # a bad --limit is a usage error before anything runs
        sandbox.with_overrides(sandbox.default_limits(None, "cpu", 1), [given])
    if kind == "none" and len(reusable) < len(claims):
        import getpass

        print(NONE_WARNING.format(user=getpass.getuser()), file=sys.stderr)
    verdicts = []
    for i, c in enumerate(claims):
        nproc = args.nproc or c.world_size
        label = f"run {i + 1}/{len(claims)} ({c.path.name})"
        if i in reusable:
            saved = reusable[i].parent.with_suffix(".probe.json")
            v = judge_reproduction(c, None, reusable[i], nproc, saved_probe=saved)
            v.reused = True
            ran_in = (_read_saved(saved) or {}).get("sandbox")
            v.sandbox = ran_in if ran_in in ("bwrap", "docker", "none") else None
        else:
            v = _reproduce_one(c, args, out, kind, nproc, label)
            v.sandbox = kind
        verdicts.append(v)
        if args.json:
            sys.stdout.write(json.dumps(v.to_json()) + "\n")
        else:
            print(v.text())
        sys.stdout.flush()
    good = sum(v.ok for v in verdicts)
    if not args.json:
        print(f"{good} of {len(verdicts)} run(s) of {name} reproduced; the reproductions' logs are in {out}")
    if args.write_verdict:
        assert record is not None
        # The sandbox the runs ran in (a reused run's own); runs of several kinds, or unknown, are written as the
        # weakest: none.
        kinds = {v.sandbox or "none" for v in verdicts}
        path = write_reproduced(record, claims, verdicts, kinds.pop() if len(kinds) == 1 else "none")
        print(f"verdicts written to {path}", file=sys.stderr)
    return 0 if good == len(verdicts) else 1


# The settings of an untouched process, per sandbox and environment: computed once per invocation.
_REFERENCES: dict[str, dict[str, Any]] = {}


def reference_settings(argv: list[str], env: Mapping[str, str] | None, cwd: Path, key: str) -> dict[str, Any]:
    """What ``probe.py reference`` prints, run with ``argv`` (the sandbox's command for it): torch's compile settings
    and compile environment in a process that ran no record (kept under ``key``: the sandbox, device, working
    folder and environment, which are all it depends on). Raises ValueError when it cannot be had."""
    if key in _REFERENCES:
        return _REFERENCES[key]
    try:
        out = subprocess.run(
            argv,
            env=None if env is None else dict(env),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ValueError(
            f"the probe's reference (torch's settings in an untouched process) could not be run: {e}"
        ) from e
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    try:
        data = json.loads(lines[-1]) if out.returncode == 0 and lines else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("configs"), dict):
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1][:300]
        raise ValueError(
            f"the probe's reference (torch's settings in an untouched process) failed ({tail}); check that this "
            "Python's torch imports in the sandbox (`python -c 'import torch._inductor.config'`)"
        )
    _REFERENCES[key] = data
    return data


def _read_saved(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file() or path.is_symlink():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_saved_probe(path: Path | None) -> report.ProbeVerdict | None:
    data = _read_saved(path)
    if data is None or not isinstance(data.get("findings"), list):
        return None
    return report.ProbeVerdict(
        findings=[
            report.ProbeFinding(str(f.get("rule")), str(f.get("message")), f.get("option"))
            for f in data["findings"]
            if isinstance(f, dict)
        ],
        incomplete=[str(x) for x in data.get("incomplete", [])],
        notes=[str(x) for x in data.get("notes", [])],
        facts=data.get("facts", {}) if isinstance(data.get("facts"), dict) else {},
    )


def _limits(claim: Claim, args: argparse.Namespace, nproc: int) -> sandbox.Limits:
    final = claim.log.final
    claimed_ms = final.train_time_ms if final is not None else None
    return sandbox.with_overrides(sandbox.default_limits(claimed_ms, claim.device, nproc), args.limit or [])


def _reproduce_one(
    claim: Claim, args: argparse.Namespace, out: Path, kind: str, nproc: int, label: str
) -> Reproduction:
    run_dir = out / claim.path.stem
    code_file = _write_code(run_dir, claim)
    log_dir = _fresh_dir(run_dir)
    data_dir = args.data if args.data is not None else Path(claim.data_path)
    limits = _limits(claim, args, nproc)
    root = _is_root()
    container = None
    channel = report.Channel(run_dir / f".{log_dir.name}.probe", others_may_write=root or kind == "docker")
    result_fd = os.open(log_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if kind == "bwrap" else None
    try:
        if kind in ("docker", "bwrap") and root:
            os.chown(log_dir, sandbox.NOBODY, sandbox.NOBODY)  # the code runs as nobody: its only writable folder
        settings = trainer_env(claim, sandbox.DATA_DIR, sandbox.OUT_DIR)
        if kind == "docker":
            uid, gid = (sandbox.NOBODY, sandbox.NOBODY) if root or os.getgid() == 0 else (os.getuid(), os.getgid())
            container = f"speedrun-reproduce-{uuid.uuid4().hex[:12]}"
            spec = sandbox.DockerRun(
                image=args.image,
                code_file=code_file,
                data_dir=data_dir,
                out_dir=log_dir,
                nproc=nproc,
                gpus=claim.device == "cuda",
                probe=PROBE_FILE,
                report=channel.path,
                limits=limits,
                env=settings,
                uid=uid,
                gid=gid,
                name=container,
            )
            argv, env = sandbox.docker_argv(spec), None
            image_at = argv.index(args.image)
            ref_argv = [*argv[:image_at], args.image, "python", sandbox.PROBE_FILE, "reference"]
            ref_argv[ref_argv.index(container)] = f"{container}-reference"
        elif kind == "bwrap":
            bw = sandbox.BwrapRun(
                code_file=code_file,
                data_dir=data_dir,
                out_dir=log_dir,
                probe=PROBE_FILE,
                report=channel.path,
                nproc=nproc,
                gpus=claim.device == "cuda",
                limits=limits,
                env=settings,
                python_dirs=sandbox.python_dirs(REPOSITORY),
                root=root,
                gpu_devices=sandbox.gpu_devices() if claim.device == "cuda" else (),
                passed={k: os.environ[k] for k in sandbox.PASSED_ENV if k in os.environ},
                result_fd=result_fd if result_fd is not None else -1,
            )
            argv, env = sandbox.bwrap_argv(bw), None
            ref_argv = sandbox.reference_argv(bw)
        else:
            env = local_env(os.environ, claim, data_dir, log_dir)
            env.setdefault("TORCHINDUCTOR_CACHE_DIR", str((run_dir / ".compile-cache" / "inductor").resolve()))
            env.setdefault("TRITON_CACHE_DIR", str((run_dir / ".compile-cache" / "triton").resolve()))
            argv = local_argv(code_file, nproc, channel.path)
            ref_argv = [sys.executable, str(PROBE_FILE), "reference"]
        # Recorded first, in the same sandbox and environment, by a process that runs no line of the record.
        cwd = out.resolve()  # one working folder for the runs and the reference: some of torch's defaults name it
        what = {k: v for k, v in (env or {}).items() if not _RUN_VARIABLE_RE.match(k)}
        where = str(cwd) if kind == "none" else sandbox.CODE_DIR  # a sandbox's working folder is always its own
        reference = reference_settings(
            ref_argv, env, cwd, json.dumps([kind, claim.device, where, sorted(what.items())])
        )
        print(
            f"{label}: running {claim.path} (seed {claim.seed}, {nproc} process(es), sandbox {kind}) in {log_dir}",
            file=sys.stderr,
        )
        result = run_trainer(
            argv,
            env,
            cwd,
            log_dir,
            label,
            container,
            limits=limits,
            cuda=claim.device == "cuda",
            pass_fds=() if result_fd is None else (result_fd,),
        )
    finally:
        raw = channel.finish()
        if result_fd is not None:
            os.close(result_fd)
    track = str(claim.config.get("track") or "")
    verdict = report.judge_report(
        report.parse_stream(raw, channel.overflow),
        reference,
        rulebook_for(track, None, harness=True),
        nproc,
        {s.name: (s.split, s.sha256) for s in claim.shards},
    )
    result.probe = verdict
    _save_probe(log_dir.with_suffix(".probe.json"), verdict, kind)
    return judge_reproduction(claim, result, result.log, nproc)


def _save_probe(path: Path, verdict: report.ProbeVerdict, kind: str) -> None:
    """The probe's judgement and the sandbox beside the run's folder (outside it: the code could write there), for
    --reuse."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_json_safe({**verdict.to_json(), "sandbox": kind}), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
