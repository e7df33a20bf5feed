"""Static checks of the files a newcomer runs first: the Dockerfile (hadolint) and the shell scripts (shellcheck)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, skip_or_fail

SHELL_SCRIPTS = ["run.sh", ".ci/run"]


def linter(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} not installed (pip install -r requirements-dev.txt provides it)")
    assert path is not None
    return path


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


def test_dockerfile_passes_hadolint() -> None:
    result = run([linter("hadolint"), "Dockerfile"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_an_unpinned_base(tmp_path: Path) -> None:
    # Guards the test above against a linter that accepts everything.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM nvidia/cuda:latest\nRUN pip install torch\n")
    assert run([linter("hadolint"), str(bad)]).returncode != 0


def test_dockerfile_is_pinned_and_runs_the_harness() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    base = next(ln.split()[1] for ln in text.splitlines() if ln.startswith("FROM "))
    assert ":" in base and not base.endswith(":latest"), f"unpinned base image {base}"
    assert "requirements.txt" in text
    assert 'CMD ["./run.sh"]' in text


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_shell_scripts_pass_shellcheck(script: str) -> None:
    result = run([linter("shellcheck"), "-x", script])
    assert result.returncode == 0, result.stdout + result.stderr


def test_python_passes_ruff() -> None:
    for cmd in (["check", "."], ["format", "--check", "."]):
        result = run([linter("ruff"), *cmd])
        assert result.returncode == 0, f"ruff {' '.join(cmd)}:\n{result.stdout}{result.stderr}"


def test_tools_pass_mypy_strict() -> None:
    # tools/ is a typed library (pyproject.toml: [tool.mypy] strict, files = tools)
    result = run([linter("mypy")])
    assert result.returncode == 0, result.stdout + result.stderr
