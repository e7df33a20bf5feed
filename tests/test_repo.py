"""The repository's promises to a newcomer: the README's commands are the ones CI runs, dependencies are pinned."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def readme_commands() -> list[str]:
    """The shell commands of the README's first code block (the quick start)."""
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
    assert block, "README.md has no code block with the quick-start commands"
    return [ln.strip() for ln in block.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")]


def test_quick_start_has_setup_and_test_commands() -> None:
    commands = readme_commands()
    assert len(commands) == 2, f"the quick start must be exactly two commands, found {commands}"
    assert "./run.sh" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    test_command = readme_commands()[1]
    assert test_command in [ln.strip() for ln in ci], f".ci/run must run the README's test command: {test_command}"


def test_requirements_are_pinned() -> None:
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (REPO_ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-r "):
                continue
            assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.+]*", line), f"{name}: not pinned: {line}"
            assert not re.search(r"dev|nightly|a\d|b\d|rc\d", line.split("==")[1]), f"{name}: pre-release: {line}"
