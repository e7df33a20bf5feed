"""Shared fixtures: repository paths, and the public speedrun's real records (a bundle beside the checkout)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The public speedrun's real repository (records, README and first-parent history) lives beside the checkout as a
# git bundle, never inside it (../shared/public-speedrun/README.md); tests clone it once per session.
PUBLIC_BUNDLE_DIR = REPO_ROOT.parent / "shared" / "public-speedrun"
# Small real record folders of it, copied as fixtures (tests/fixtures/public-speedrun/FIXTURE.md): always present.
PUBLIC_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "public-speedrun"
IN_CI = os.environ.get("SPEEDRUN_CI") == "1"

# One CPU thread per process, set before anything imports torch: the suite runs in one worker per core (pytest-xdist,
# pyproject.toml) and the trainers it launches run a thread per process; torch's default of a thread per core makes
# each process's work wait on the others' (one `tools evaluate` took 20 s instead of 7 on a busy 2-core machine).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# torch.compile's on-disk cache (/tmp/torchinductor_<user> by default) is shared by every checkout on the
# machine, and it does not notice a changed custom-op schema: a graph compiled by a checkout whose
# speedrun::fp8_mm took 6 arguments was replayed against one whose op takes 5. Each test session gets its
# own cache (inherited by the trainers the tests launch), removed when the session ends.
# The tools' cache of parsed logs and code readings (tools/common/cache.py) likewise: each session starts empty, so a
# test never reads an entry another checkout's tools wrote, and the user's own cache is never touched.
# A session's workers (pytest-xdist) share the two folders the process that started them made (both caches write
# an entry whole and rename it into place): the public tree is then parsed, and a kernel compiled, once per session.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("SPEEDRUN_TESTS_CACHES_OF") == str(os.getppid()):
    pass  # a worker: the folders are its parent's, which removes them
else:
    for _variable, _prefix in (("TORCHINDUCTOR_CACHE_DIR", "inductor-"), ("SPEEDRUN_CACHE", "tools-cache-")):
        os.environ[_variable] = tempfile.mkdtemp(prefix=f"speedrun-tests-{_prefix}")
        atexit.register(shutil.rmtree, os.environ[_variable], ignore_errors=True)
    os.environ["SPEEDRUN_TESTS_CACHES_OF"] = str(os.getpid())


def skip_or_fail(reason: str) -> None:
    """Skip locally when an optional resource is missing; fail in CI, where .ci/run provides it."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def public_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of the public speedrun's repository from ../shared/public-speedrun/*.bundle (its records/, README.md
    and history); tests that need it skip where the bundle is absent (a user's machine, perhaps CI)."""
    bundles = sorted(PUBLIC_BUNDLE_DIR.glob("*.bundle")) if PUBLIC_BUNDLE_DIR.is_dir() else []
    if not bundles:
        pytest.skip(f"the public speedrun's bundle is not at {PUBLIC_BUNDLE_DIR}")
    clone = tmp_path_factory.mktemp("public") / "modded-nanogpt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    subprocess.run(["git", "clone", "-q", str(bundles[-1]), str(clone)], check=True, env=env, capture_output=True)
    return clone


@pytest.fixture(scope="session")
def public_records(public_repo: Path) -> Path:
    """The clone's records/ folder."""
    return public_repo / "records"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test over the public speedrun's whole tree (it clones the bundle and reads ~830 logs) belongs to the slow
    tier with the training runs: `python -m pytest -m "not slow"` is the fast tier for local work.

    The workers (pytest-xdist, `--dist loadgroup`) take tests one by one, except that the tests of a file that share
    a fixture made once for them (module-scoped, or session-scoped and defined in that file: a training run, a
    reproduction) go to one worker together, so that it is made once: the long files' other tests spread over the
    workers instead of queueing behind them. Slow tests and their groups are handed out first, so that the many
    short tests fill the workers' last minutes instead of one worker finishing a long group alone."""
    slow = pytest.mark.slow
    groups: dict[pytest.Item, str] = {}
    for item in items:
        if {"public_repo", "public_records"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(slow)
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs if info is not None else {}
        module = item.nodeid.split("::")[0]
        shared = (d for name in item.fixturenames for d in defs.get(name, ()))
        if any(
            d.scope in ("module", "package", "class") or (d.scope == "session" and d.baseid == module) for d in shared
        ):
            item.add_marker(pytest.mark.xdist_group(module))
            groups[item] = module
    heavy = {group for item, group in groups.items() if item.get_closest_marker("slow")}
    items.sort(key=lambda item: not (item.get_closest_marker("slow") or groups.get(item) in heavy))
