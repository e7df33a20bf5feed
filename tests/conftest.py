"""Shared fixtures: repository paths and the optional community-log corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Real community logs live beside the checkout, never inside it (see ../shared/anchors/README.md).
ANCHORS_DIR = REPO_ROOT.parent / "shared" / "anchors" / "modded-nanogpt"
IN_CI = os.environ.get("SPEEDRUN_CI") == "1"


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
