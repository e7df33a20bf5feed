"""The records workflow (.github/workflows/records.yml) runs on every pull request and fails on symbolic links.

A `paths:` filter once let a pull request skip the check (GitHub skips a filtered workflow when the diff is
too large to list), and a pull request whose base was changed (`edited`) was not judged again. The link
step is run here for real, with bash, on a folder that holds links with hostile names.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "records.yml"


def _doc() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return dict(doc)


def _steps() -> list[dict[str, Any]]:
    return [s for job in _doc()["jobs"].values() for s in job["steps"]]


def test_it_runs_on_every_pull_request_and_when_its_base_changes() -> None:
    trigger = _doc()["on"]["pull_request_target"]
    assert "paths" not in trigger and "paths-ignore" not in trigger
    assert {"opened", "synchronize", "reopened", "edited"} <= set(trigger["types"])


def test_links_are_refused_before_any_tool_runs_and_history_is_fetched() -> None:
    steps = _steps()
    names = [s.get("name", "") for s in steps]
    links = names.index("Refuse symbolic links in the pull request's records/ and leaderboard/")
    tools = next(i for i, s in enumerate(steps) if "python -m tools" in s.get("run", ""))
    assert links < tools and "find " in steps[links]["run"] and "-type l" in steps[links]["run"]
    base = next(s for s in steps if s.get("with", {}).get("path") == "base")
    assert base["with"]["fetch-depth"] == 0  # records are ordered by when they entered the base branch
    # ... and `check` reads that history: the pull request's own checkout is shallow.
    check = next(s["run"] for s in steps if "python -m tools check" in s.get("run", ""))
    assert '--ledger-repo "$GITHUB_WORKSPACE/base"' in check


def test_it_judges_with_a_python_that_reads_the_docker_images_logs() -> None:
    """compile-flags cannot judge code of a Python newer than its own: the judge needs the Docker image's 3.12."""
    setup = next(s for s in _steps() if str(s.get("uses", "")).startswith("actions/setup-python@"))
    assert tuple(int(x) for x in str(setup["with"]["python-version"]).split(".")) >= (3, 12)
    assert "ubuntu24.04" in (REPO_ROOT / "Dockerfile").read_text()  # whose python3 is 3.12


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("find") is None, reason="needs bash and find")
def test_the_link_step_fails_on_links_and_prints_their_names_safely(tmp_path: Path) -> None:
    step = next(s for s in _steps() if s.get("name", "").startswith("Refuse symbolic links"))
    work = tmp_path / "workspace"
    (work / "base").mkdir(parents=True)
    records = work / "pr" / "records" / "track_1_short" / "2026-08-01_Rec"
    records.mkdir(parents=True)
    (records / "run.txt").write_text("a log\n")
    (work / "pr" / "leaderboard").mkdir()

    def run() -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GITHUB_WORKSPACE": str(work)}
        # GitHub runs a `run:` block with `bash -e {0}`, and with -o pipefail when `shell: bash` is set
        return subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", step["run"]],
            cwd=work / "base",
            env=env,
            capture_output=True,
            text=True,
        )

    assert run().returncode == 0
    (records / "extras\n::error::pwned").symlink_to("/")
    (work / "pr" / "leaderboard" / "plots").symlink_to(tmp_path)
    result = run()
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("::error::the pull request has symbolic links")
    assert not [ln for ln in lines[1:] if ln.startswith("::")]  # a name cannot start a line of its own
    assert any(re.search(r"extras\?::error::pwned$", ln) for ln in lines) and any(ln.endswith("/plots") for ln in lines)


@pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("bash", "find", "sha256sum", "comm", "xargs")), reason="needs coreutils"
)
def test_a_pull_request_that_adds_or_edits_reproduced_json_fails(tmp_path: Path) -> None:
    """Only maintainers add reproduced.json (on the base branch): the step compares both checkouts by sha256."""
    steps = _steps()
    names = [s.get("name", "") for s in steps]
    step = steps[names.index("Refuse a reproduced.json that the pull request adds or edits")]
    tools = next(i for i, s in enumerate(steps) if "python -m tools" in s.get("run", ""))
    assert names.index(step["name"]) < tools and step["working-directory"] == "base"
    work = tmp_path / "workspace"
    rel = Path("records") / "track_1_short" / "2026-08-01_Rec"
    for side in ("base", "pr"):
        (work / side / rel).mkdir(parents=True)
        (work / side / rel / "run.txt").write_text("a log\n")
        (work / side / rel / "reproduced.json").write_text('{"format": "speedrun-reproduced/1"}\n')

    def run() -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GITHUB_WORKSPACE": str(work)}
        return subprocess.run(
            ["bash", "-e", "-c", step["run"]], cwd=work / "base", env=env, capture_output=True, text=True
        )

    assert run().returncode == 0  # the same file on both sides: the maintainers' own
    (work / "pr" / rel / "reproduced.json").write_text('{"format": "speedrun-reproduced/1", "edited": 1}\n')
    result = run()
    assert result.returncode == 1 and result.stdout.startswith(
        "::error::the pull request adds or edits reproduced.json"
    )
    assert result.stdout.rstrip().endswith(f"{rel}/reproduced.json")

    (work / "pr" / rel / "reproduced.json").unlink()  # removing one is allowed
    assert run().returncode == 0
    added = work / "pr" / "records" / "track_1_short" / "2026-08-02_X\n::error::pwned"
    added.mkdir()
    (added / "reproduced.json").write_text("{}\n")
    result = run()
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("::error::") and not [ln for ln in lines[1:] if ln.startswith("::")]
    assert any("2026-08-02_X\\n::error::pwned/reproduced.json" in ln for ln in lines), lines
