"""The submission flow's files: the workflows' security properties, the PR template, records/README.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO_ROOT
from helpers.logfactory import write_record
from tools.cli import main
from tools.judge.rules import RULE_IDS
from tools.judge.verify import verify_paths

WORKFLOWS = REPO_ROOT / ".github" / "workflows"


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return dict(doc)


def _steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in doc["jobs"].values() for s in job["steps"]]


def test_records_workflow_judges_with_the_base_branch_tools() -> None:
    doc = _load("records.yml")
    assert set(doc["on"]) == {"pull_request_target"}  # every pull request: tests/test_tools_workflow.py
    assert doc["permissions"] == {"contents": "read"}
    steps = _steps(doc)
    checkouts = [s for s in steps if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert len(checkouts) == 2 and all(s["with"]["persist-credentials"] is False for s in checkouts)
    base, pr = checkouts
    assert base["with"]["ref"] == "${{ github.event.pull_request.base.sha }}" and base["with"]["path"] == "base"
    assert pr["with"]["ref"] == "${{ github.event.pull_request.head.sha }}" and pr["with"]["path"] == "pr"
    assert set(pr["with"]["sparse-checkout"].split()) == {"records", "leaderboard"}  # no PR code on disk
    runs = [s for s in steps if "run" in s]
    assert runs and all(s.get("working-directory") == "base" for s in runs)  # nothing runs inside pr/
    check = runs[-1]["run"]
    assert check.startswith("python -m tools check") and "pr/records" in check and "pr/leaderboard" in check
    text = (WORKFLOWS / "records.yml").read_text()
    assert "secrets." not in text and "actions/cache" not in text and "cache:" not in text
    assert "github.event.pull_request.title" not in text and "head_ref" not in text  # no injection via names
    for s in steps:
        if "uses" in s:
            assert len(s["uses"].split("@")[1].split()[0]) == 40, f"pin {s['uses']} to a commit SHA"


def test_ci_workflow_runs_ci_run() -> None:
    doc = _load("ci.yml")
    assert {"push", "pull_request"} <= set(doc["on"]) and doc["permissions"] == {"contents": "read"}
    assert any(s.get("run") == "bash .ci/run" for s in _steps(doc))


def test_pull_request_template_asks_for_what_check_needs() -> None:
    text = (REPO_ROOT / ".github" / "pull_request_template.md").read_text()
    for needed in (
        "records/<track>/<YYYY-MM-DD>_<ShortName>/",
        "python -m tools verify",
        "python -m tools check",
        "python -m tools compare",
        "systems_only",
        "SPEEDRUN_OVERRIDES",
        "At least 3 runs",
    ):
        assert needed in text


def test_records_readme_names_every_rule_and_the_layout() -> None:
    text = (REPO_ROOT / "records" / "README.md").read_text()
    for rule in RULE_IDS:
        assert f"`{rule}`" in text, rule
    assert "records/<track>/<YYYY-MM-DD>_<ShortName>/" in text and "python -m tools leaderboard" in text


def test_symlinked_log_is_refused_not_followed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_record(tmp_path / "records", "2026-08-01_Links")
    secret = tmp_path / "secret.txt"
    secret.write_text("not a log\n")
    (folder / "link.txt").symlink_to(secret)
    with pytest.raises(ValueError, match="may hold no symbolic links"):
        verify_paths([folder], known_shards={})
    assert main(["verify", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'link.txt'}" in err and "replace each with the file or folder itself" in err
