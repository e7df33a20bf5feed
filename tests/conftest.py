"""Shared fixtures: repository paths and the optional community-log corpus."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Real community logs live beside the checkout, never inside it (see ../shared/anchors/README.md).
ANCHORS_DIR = REPO_ROOT.parent / "shared" / "anchors" / "modded-nanogpt"
IN_CI = os.environ.get("SPEEDRUN_CI") == "1"

# torch.compile's on-disk cache (/tmp/torchinductor_<user> by default) is shared by every checkout on the
# machine, and it does not notice a changed custom-op schema: a graph compiled by a checkout whose
# speedrun::fp8_mm took 6 arguments was replayed against one whose op takes 5. Each test session gets its
# own cache (inherited by the trainers the tests launch), removed when the session ends.
_INDUCTOR_CACHE = tempfile.mkdtemp(prefix="speedrun-tests-inductor-")
os.environ["TORCHINDUCTOR_CACHE_DIR"] = _INDUCTOR_CACHE
atexit.register(shutil.rmtree, _INDUCTOR_CACHE, ignore_errors=True)
# The tools' cache of parsed logs and code readings (tools/cache.py) likewise: each session starts empty, so a
# test never reads an entry another checkout's tools wrote, and the user's own cache is never touched.
_TOOLS_CACHE = tempfile.mkdtemp(prefix="speedrun-tests-tools-cache-")
os.environ["SPEEDRUN_CACHE"] = _TOOLS_CACHE
atexit.register(shutil.rmtree, _TOOLS_CACHE, ignore_errors=True)


def skip_or_fail(reason: str) -> None:
    """Skip locally when an optional resource is missing; fail in CI, where .ci/run provides it."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def anchors_dir() -> Path:
    """The community corpus; tests that need it skip when ../shared/anchors/ is absent (also in CI)."""
    if not (ANCHORS_DIR / "manifest.csv").is_file():
        pytest.skip(f"community logs not found at {ANCHORS_DIR}")
    return ANCHORS_DIR
