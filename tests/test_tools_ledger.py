"""Order and ownership follow the ledger (tools/judge/ledger.py): when a record entered the branch, by git history,
not the date it claims. Each test builds a real git repository in tmp_path whose commit order disagrees
with the records' dates (issue 11, class 4)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.logfactory import write_record
from tools.cli import main
from tools.judge.ledger import Ledger, by_date, from_git
from tools.judge.verify import Verdict, verify_paths
from tools.site import leaderboard
from tools.site.check import check

TRACK = "track_1_short"


def git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    ident = ["-c", "user.name=test", "-c", "user.email=test@local", "-c", "commit.gpgsign=false"]
    proc = subprocess.run(["git", *ident, "-C", str(repo), *args], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    (root / "records" / TRACK).mkdir(parents=True)
    (root / "records" / TRACK / ".gitkeep").write_text("")
    git(root, "init", "-q", "-b", "main")
    commit_all(root, "empty records folder")
    return root


def by_date_ledger() -> Ledger:
    return by_date("records ordered by (date, name) for the comparison")


def by_name(records: Path, ledger: Ledger | None = None) -> dict[str, Verdict]:
    return {v.record.name: v for v in verify_paths([records / TRACK], known_shards={}, ledger=ledger)}


def test_ranking_follows_the_commits_not_the_dates(repo: Path) -> None:
    records = repo / "records"
    write_record(records, "2026-08-05_LandedFirst", step_ms=60.0)
    first = commit_all(repo, "first record")
    # The second lands through a merge commit: the first-parent history sees the merge add it.
    git(repo, "checkout", "-q", "-b", "pr")
    write_record(records, "2026-08-01_LandedSecond", step_ms=59.0)
    commit_all(repo, "second record, on a branch")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "pr", "-m", "merge the second record")
    v = by_name(records)
    early, late = v["2026-08-05_LandedFirst"], v["2026-08-01_LandedSecond"]
    assert early.is_new_record and early.previous is None
    assert late.is_new_record and late.previous is early  # dated earlier, landed later: judged after it
    assert early.ledger.describe(early.record).startswith(f"landed in {first[:12]} (")
    assert early.ledger.note.startswith("records ordered by the ledger: the first-parent git history of")
    # A record not in the history yet (the pull request) comes after every landed one, whatever its date.
    write_record(records, "2026-01-11_Pending", step_ms=59.5)
    v = by_name(records)
    pending = v["2026-01-11_Pending"]
    assert not pending.is_new_record and pending.previous is v["2026-08-01_LandedSecond"]
    assert pending.ledger.describe(pending.record) == "pending (not in the ledger's history)"


def test_a_branch_commit_lands_when_its_merge_does(repo: Path) -> None:
    """A commit made on a side branch before another record landed is judged after it: by the merge."""
    records = repo / "records"
    git(repo, "checkout", "-q", "-b", "side")
    write_record(records, "2026-08-01_OldCommit", step_ms=58.0)
    commit_all(repo, "made first, merged last")
    git(repo, "checkout", "-q", "main")
    write_record(records, "2026-08-02_Direct", step_ms=60.0)
    commit_all(repo, "landed directly")
    git(repo, "merge", "-q", "--no-ff", "side", "-m", "merge side")
    v = by_name(records)
    assert v["2026-08-02_Direct"].previous is None
    assert v["2026-08-01_OldCommit"].previous is v["2026-08-02_Direct"]


def test_a_run_belongs_to_the_record_that_landed_first(repo: Path) -> None:
    records = repo / "records"
    owner = write_record(records, "2026-08-05_Owner")
    commit_all(repo, "owner")
    copier = write_record(records, "2026-08-01_Copier", step_ms=56.0)
    stolen = sorted(owner.glob("*.txt"))[0]
    shutil.copy(stolen, copier / stolen.name)
    commit_all(repo, "copier, dated earlier")
    v = by_name(records)
    assert v[owner.name].valid, v[owner.name].failures
    found = [f.evidence for f in v[copier.name].failures if f.rule == "distinct-runs"]
    assert (
        f"byte for byte the same file as {stolen} of the earlier record 2026-08-05_Owner: a run counts for one "
        "record only; submit new runs"
    ) in found, found
    # Judged by dates alone the copier, dated earlier, would have owned the run.
    dated = {x.record.name: x for x in verify_paths([records / TRACK], known_shards={}, ledger=by_date_ledger())}
    assert any("of the earlier record 2026-08-01_Copier" in f.evidence for f in dated[owner.name].failures)


def test_a_thief_who_backdates_an_open_pull_requests_runs_loses(repo: Path, tmp_path: Path) -> None:
    """As CI judges: the base checkout is the ledger, the pull request's records/ is data."""
    honest = write_record(repo / "records", "2026-08-05_Honest")
    commit_all(repo, "the honest record landed")
    pr_records = tmp_path / "pr" / "records"
    shutil.copytree(repo / "records", pr_records)
    thief = pr_records / TRACK / "2026-08-04_Thief"
    shutil.copytree(honest, thief)
    (thief / "README.md").write_text((thief / "README.md").read_text().replace("2026-08-05", "2026-08-04"))
    for i, log in enumerate(sorted(thief.glob("*.txt"))):  # new run_ids, one digit nudged each
        new_id = f"{i}0000000-0000-4000-8000-000000000000"
        text = log.read_text().replace(log.stem, new_id)
        text = re.sub(r"(step:9/100 train_loss:\d\.\d{3})(\d)", lambda m: m.group(1) + str(9 - int(m.group(2))), text)
        log.unlink()
        (thief / f"{new_id}.txt").write_text(text)
    ledger = from_git(repo)
    v = by_name(pr_records, ledger=ledger)
    assert v[honest.name].valid and v[honest.name].is_new_record, v[honest.name].failures
    found = [f.evidence for f in v[thief.name].failures if f.rule == "distinct-runs"]
    assert len(found) == 3 and all("of the earlier record 2026-08-05_Honest: the same train loss" in f for f in found)
    # Judged by dates alone (no ledger), the thief would have owned the runs.
    dated = by_name(pr_records)
    assert dated[honest.name].failures and not dated[thief.name].failures
    # check --ledger-repo: the same verdicts, and a leaderboard regenerated with that ledger is current.
    out = tmp_path / "pr" / "leaderboard"
    leaderboard.write(leaderboard.build(pr_records, out, ledger=ledger), out)
    ok, lines = check(pr_records, out, ledger)
    report = "\n".join(lines)
    assert not ok and "2026-08-04_Thief" in report and "INVALID: distinct-runs" in report
    assert f"{out} is up to date" in report and "records ordered by the ledger" in report


def test_a_baseline_must_be_earlier_in_the_ledger(repo: Path) -> None:
    records = repo / "records"
    write_record(records, "2026-08-05_Base")
    commit_all(repo, "base")
    meta = {"systems_only": True, "baseline": "2026-08-05_Base"}
    later = write_record(records, "2026-08-01_BuildsOnIt", meta=meta, step_ms=50.0)  # dated before its baseline
    commit_all(repo, "builds on it")
    pending = write_record(records, "2026-07-01_Names", meta={"baseline": "2026-08-06_NotYet"})
    write_record(records, "2026-08-06_NotYet", step_ms=58.0)  # pending, after 2026-07-01_Names by date
    v = by_name(records)
    assert v[later.name].valid and v[later.name].is_new_record, v[later.name].failures
    found = [f.evidence for f in v[pending.name].failures if f.rule == "structure"]
    assert found and "baseline 2026-08-06_NotYet is not earlier in the ledger" in found[0], found


def test_dates_in_the_future_fail(records_tmp: Path) -> None:
    today = dt.datetime.now(dt.UTC).date()
    soon = (today + dt.timedelta(days=1)).isoformat()
    late = (today + dt.timedelta(days=3)).isoformat()
    assert not [f for f in verify_paths([write_record(records_tmp, f"{soon}_Tz")], known_shards={})[0].failures]
    v = verify_paths([write_record(records_tmp, f"{late}_Future")], known_shards={})[0]
    found = [f.evidence for f in v.failures if f.rule == "structure"]
    assert found == [
        f"the record is dated {late}, after today ({today.isoformat()}, UTC): date it the day its last run was made"
    ]
    when = today + dt.timedelta(days=5)
    smi = f"{when.strftime('%a %b')} {when.day:2d} 10:00:00 {when.year}"
    v = verify_paths([write_record(records_tmp, "2026-08-01_RunInFuture", smi_time=smi)], known_shards={})[0]
    assert any(f"nvidia-smi dates this run {when.isoformat()}, after today" in f.evidence for f in v.failures)


@pytest.mark.parametrize(
    "smi_time", ["", "Mon Feb 30 10:00:00 2026", "Sat Jan 10 23:36:12 1x26", "Fri Jan 10 23:36:12 2026"]
)
def test_a_record_log_without_a_valid_nvidia_smi_timestamp_fails(records_tmp: Path, smi_time: str) -> None:
    """Deleting or breaking the timestamp once skipped the date check; a weekday that is not the date's (Jan 10
    2026 is a Saturday) is an edited line."""
    v = verify_paths([write_record(records_tmp, "2026-08-01_NoTime", smi_time=smi_time)], known_shards={})[0]
    found = [f.evidence for f in v.failures if f.rule == "structure"]
    assert len(found) == 3 and all(
        "no nvidia-smi timestamp, or one that is not a date of the calendar" in f for f in found
    )


@pytest.fixture
def records_tmp(tmp_path: Path) -> Path:
    return tmp_path / "records"


def test_ledger_repo_errors_are_one_clear_message(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = write_record(tmp_path / "elsewhere" / "records", "2026-08-01_A").parent.parent
    assert main(["verify", str(records), "--ledger-repo", str(tmp_path / "missing")]) == 2
    assert "no such folder; give a git checkout of the branch that judges (--ledger-repo)" in capsys.readouterr().err
    not_git = tmp_path / "plain"
    not_git.mkdir()
    assert main(["check", "--records", str(records), "--ledger-repo", str(not_git)]) == 2
    assert "error: git rev-parse failed in" in capsys.readouterr().err
    shallow = tmp_path / "shallow"
    commit_all_again = write_record(repo / "records", "2026-08-02_B")
    assert commit_all_again.is_dir()
    commit_all(repo, "one more commit, so that depth 1 cuts history")
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(shallow)], check=True)
    assert main(["verify", str(records), "--ledger-repo", str(shallow)]) == 2
    err = capsys.readouterr().err
    assert "is a shallow clone" in err and "fetch-depth: 0" in err
    # The full checkout works, and the text output says where the order comes from.
    assert main(["verify", str(records), "--ledger-repo", str(repo)]) == 0
    assert "records ordered by the ledger: the first-parent git history of" in capsys.readouterr().out


def test_without_git_the_output_says_the_order_is_by_date(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The other tests' records folders (tmp_path) are outside git: (date, name) order, and the output says so."""
    if subprocess.run(["git", "-C", str(tmp_path), "rev-parse"], capture_output=True).returncode == 0:
        pytest.skip(f"{tmp_path} is inside a git repository")
    records = tmp_path / "records"
    write_record(records, "2026-08-01_A")
    assert main(["verify", str(records)]) == 0
    assert "records ordered by (date, name):" in capsys.readouterr().out
    assert main(["verify", "--json", str(records)]) == 0
    captured = capsys.readouterr()
    assert '"ledger": "no ledger: (date, name) order"' in captured.out
    assert "is not in a git repository, so there is no ledger" in captured.err


def test_check_of_a_shallow_clone_needs_the_ledger_repo(repo: Path, tmp_path: Path) -> None:
    """CI checks out the pull request shallowly: `check` read no history there and fell back to (date, name),
    so a record dated before the holder outranked it. It now refuses, and --ledger-repo orders the records."""
    records = repo / "records"
    write_record(records, "2026-08-05_Holder", step_ms=60.0)
    commit_all(repo, "the holder lands")
    pr = tmp_path / "pr"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{repo}", str(pr))
    write_record(pr / "records", "2026-08-01_Backdated", step_ms=59.0)
    with pytest.raises(ValueError, match=r"is in a shallow clone, whose history cannot say when each record landed"):
        check(pr / "records", pr / "leaderboard")
    assert main(["check", "--records", str(pr / "records"), "--leaderboard", str(pr / "leaderboard")]) == 2
    ledger = from_git(repo)
    leaderboard.write(leaderboard.build(pr / "records", pr / "leaderboard", ledger=ledger), pr / "leaderboard")
    ok, _ = check(pr / "records", pr / "leaderboard", ledger=ledger)
    v = by_name(pr / "records", ledger)
    assert ok and v["2026-08-01_Backdated"].previous is v["2026-08-05_Holder"]


def test_a_pull_request_cannot_change_a_landed_record(repo: Path, tmp_path: Path) -> None:
    """A pull request that slowed the holder's logs down (every time x1.1, consistent) made its own record the
    new one; one that removed a landed run could count it as its own. check compares landed records with the
    ledger's commit."""
    records = repo / "records"
    holder = write_record(records, "2026-08-05_Holder", runs=4, step_ms=60.0)
    other = write_record(records, "2026-08-06_Other", step_ms=61.0)
    (holder / "reproduced.json").write_text("{}")
    commit_all(repo, "two records land")
    pr = tmp_path / "pr"
    git(tmp_path, "clone", "-q", f"file://{repo}", str(pr))
    ledger = from_git(repo)
    out = pr / "leaderboard"
    leaderboard.write(leaderboard.build(pr / "records", out, ledger=ledger), out)
    assert check(pr / "records", out, ledger=ledger)[0]
    logs = sorted((pr / "records" / TRACK / holder.name).glob("*.txt"))
    slowed = logs[0].read_text().replace("train_time:", "train_time:1")  # any edit of a landed file
    logs[0].write_text(slowed)
    text = logs[2].read_bytes()  # an edit that keeps the size: hashed, not told apart by the size alone
    at = text.index(b"train_time:") + len(b"train_time:")
    logs[2].write_bytes(text[:at] + (b"9" if text[at : at + 1] != b"9" else b"8") + text[at + 1 :])
    taken = logs[1].rename(tmp_path / logs[1].name)
    (pr / "records" / TRACK / holder.name / "reproduced.json").unlink()  # a maintainer's mark may go
    (pr / "records" / TRACK / other.name / "extra.txt").write_text(taken.read_text())
    ok, lines = check(pr / "records", out, ledger=ledger)
    landed = [ln for ln in lines if ln.startswith("FAIL landed")]
    assert not ok and len(landed) == 4, lines
    assert any(f"{logs[0].name}: differs from the file that landed in" in ln for ln in landed)
    assert any(f"{logs[2].name}: differs from the file that landed in" in ln for ln in landed)
    assert any(f"{logs[1].name}: removed from a record that landed in" in ln for ln in landed)
    assert any("extra.txt: added to a record that landed in" in ln for ln in landed)
    shutil.rmtree(pr / "records" / TRACK / other.name)
    ok, lines = check(pr / "records", out, ledger=ledger)
    assert any(ln.startswith("FAIL landed") and "is missing: a pull request adds records" in ln for ln in lines)
