"""Progress bars for the commands that take a while (tqdm, on stderr).

A bar shows only on a terminal, and only once the command has run for more than DELAY_S seconds: a quick
run, a pipe, CI's log and every generated file stay free of it. The delay counts from the command's start,
not from each loop's: a command made of several loops of 1.9 s each shows them after its first 2 s. stdout is never touched, so ``--json`` output
and the files a command writes are the same with or without a bar.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")
DELAY_S = 2.0
_STARTED = time.monotonic()  # about when the command started: imported while its command line is parsed


def enabled() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress(items: Iterable[T], what: str, unit: str, total: int | None = None) -> Iterator[T]:
    """``items``, with a bar named ``what`` counting ``unit`` on stderr when it is a terminal and the loop takes
    over DELAY_S."""
    if not enabled():
        yield from items
        return
    from tqdm import tqdm  # imported here: keeps `import tools` light

    if total is None and isinstance(items, Sized):
        total = len(items)
    delay = max(0.0, DELAY_S - (time.monotonic() - _STARTED))
    yield from tqdm(items, desc=what, total=total, file=sys.stderr, delay=delay, leave=False, unit=f" {unit}")


def usable_cpus() -> int:
    """The CPUs this process may run on (``taskset``, a container's cpuset), not the machine's count: how many
    worker processes the commands that parse or draw many things start."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1
