"""Progress bars for the commands that take a while (tqdm, on stderr).

A bar shows only on a terminal, and only once the work has taken more than DELAY_S seconds: a quick run,
a pipe, CI's log and every generated file stay free of it. stdout is never touched, so ``--json`` output
and the files a command writes are the same with or without a bar.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

T = TypeVar("T")
DELAY_S = 2.0


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
    yield from tqdm(items, desc=what, total=total, file=sys.stderr, delay=DELAY_S, leave=False, unit=f" {unit}")
