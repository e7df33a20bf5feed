"""The runner's watch over a reproduction: the limits it enforces from outside the sandbox, and the GPUs it saw.

``Watch`` polls, in a thread of the runner, the process the runner started (bubblewrap, torchrun or docker) and
everything below it, from /proc: the wall time, the processes and threads at once, their resident memory, and
the bytes the output folder holds on disk (``st_blocks``: a sparse file counts what it uses). Past a limit it kills
the whole process group (bubblewrap takes its PID namespace down with it) and says which limit, once. The kernel
enforces the same limits inside the sandbox where it can (probe.py launch: RLIMIT_NPROC, RLIMIT_AS, RLIMIT_FSIZE);
the watch is what holds where it cannot (a root caller's processes are exempt from RLIMIT_NPROC in a user namespace;
the output folder's total; memory on CUDA, where an address-space limit would break the driver).

On a CUDA log it also asks ``nvidia-smi --query-compute-apps=pid,gpu_uuid`` every few seconds which GPUs the
processes of the run hold: the GPUs used, seen from outside the code (a ``host:`` line is the code's own word).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tools.reproduce.sandbox import Limits

POLL_S = 0.1  # processes and time
# The sandbox's own processes the kernel's RLIMIT_NPROC does not count (bubblewrap's monitor and its PID 1, which
# keep root's uid): the watch allows them above the limit, so that the kernel's limit is the one met first.
SANDBOX_PROCESSES = 8
SLOW_POLL_S = 0.5  # memory and the output folder
GPU_POLL_S = 5.0
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Stopped:
    limit: str  # "time", "processes", "memory" or "output"
    message: str


@dataclass
class WatchFacts:
    stopped: Stopped | None = None
    peak_processes: int = 0  # processes and threads
    peak_memory: int = 0  # bytes, resident
    output_bytes: int = 0
    seconds: float = 0.0
    gpu_uuids: list[str] = field(default_factory=list)  # in the order first seen
    gpu_samples: int = 0  # nvidia-smi answers taken (0: the GPUs used were not seen)


def process_tree(root: int) -> dict[int, tuple[int, int]]:
    """{pid: (threads, resident bytes)} of ``root`` and every process below it, read from /proc."""
    parents: dict[int, int] = {}
    sizes: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rfind(b")") + 2 :].split()
        if len(fields) < 22:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        sizes[pid] = (int(fields[17]), int(fields[21]) * _PAGE)
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out: dict[int, tuple[int, int]] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in sizes and pid not in out:
            out[pid] = sizes[pid]
            stack += children.get(pid, [])
    return out


def disk_usage(folder: Path) -> int:
    """Bytes the files under ``folder`` occupy on disk (links not followed)."""
    total, stack = 0, [str(folder)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            total += st.st_blocks * 512
            if e.is_dir(follow_symlinks=False):
                stack.append(e.path)
    return total


def parse_compute_apps(text: str) -> list[tuple[int, str]]:
    """(pid, GPU UUID) of each line of ``nvidia-smi --query-compute-apps=pid,gpu_uuid --format=csv,noheader``."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].startswith("GPU-"):
            out.append((int(parts[0]), parts[1]))
    return out


def _compute_apps() -> list[tuple[int, str]] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,gpu_uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_compute_apps(out.stdout) if out.returncode == 0 else None


class Watch:
    """Watch ``pid`` (the leader of its own process group) against ``limits`` until ``stop()``."""

    def __init__(
        self,
        pid: int,
        out_dir: Path,
        limits: Limits,
        count_processes: bool = True,
        cuda: bool = False,
        kill: Callable[[int], None] | None = None,
    ) -> None:
        self.pid, self.out_dir, self.limits = pid, out_dir, limits
        self.count_processes, self.cuda = count_processes, cuda
        self.facts = WatchFacts()
        self._kill = kill or (lambda p: os.killpg(p, signal.SIGKILL))
        self._done = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="reproduce-watch", daemon=True)
        self._thread.start()

    def stop(self) -> WatchFacts:
        self._done.set()
        self._thread.join(timeout=30)
        self.facts.seconds = time.monotonic() - self._start
        return self.facts

    def _over(self, limit: str, message: str) -> None:
        if self.facts.stopped is None:
            self.facts.stopped = Stopped(limit, message)
            try:
                self._kill(self.pid)
            except (ProcessLookupError, PermissionError):
                pass

    def _run(self) -> None:
        last_slow = last_gpu = 0.0
        while not self._done.wait(POLL_S):
            now = time.monotonic() - self._start
            if now > self.limits.seconds:
                self._over("time", f"it ran for more than {self.limits.seconds:.0f} s (--limit time=...)")
            tree = process_tree(self.pid) if self.count_processes else {}
            threads = sum(t for t, _ in tree.values())
            self.facts.peak_processes = max(self.facts.peak_processes, threads)
            if threads > self.limits.processes + SANDBOX_PROCESSES:
                self._over(
                    "processes",
                    f"it ran {threads} processes and threads at once, more than {self.limits.processes} "
                    "(--limit processes=...)",
                )
            if now - last_slow >= SLOW_POLL_S:
                last_slow = now
                memory = sum(r for _, r in tree.values())
                self.facts.peak_memory = max(self.facts.peak_memory, memory)
                if memory > self.limits.memory:
                    self._over(
                        "memory",
                        f"its processes held {memory / 2**30:.1f} GiB of memory, more than "
                        f"{self.limits.memory / 2**30:.1f} GiB (--limit memory=...)",
                    )
                used = disk_usage(self.out_dir)
                self.facts.output_bytes = max(self.facts.output_bytes, used)
                if used > self.limits.output:
                    self._over(
                        "output",
                        f"it wrote {used / 2**20:.0f} MiB to its output folder, more than "
                        f"{self.limits.output / 2**20:.0f} MiB (--limit output=...)",
                    )
            if self.cuda and now - last_gpu >= GPU_POLL_S:
                last_gpu = now
                apps = _compute_apps()
                if apps is not None:
                    self.facts.gpu_samples += 1
                    mine = set(tree) if tree else set(process_tree(self.pid))
                    for pid, uuid in apps:
                        if pid in mine and uuid not in self.facts.gpu_uuids:
                            self.facts.gpu_uuids.append(uuid)
