"""Each rule of RULES.md with a passing and a failing case (records built with tests/helpers/logfactory.py)."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from conftest import PUBLIC_FIXTURE
from helpers.logfactory import DEFAULT_SHARDS, H100, LogSpec, fake_gpu_uuids, shard, write_log, write_record
from tools.cli import main
from tools.judge.rules import infer_k
from tools.judge.sourcecheck import find_compile_flags
from tools.judge.verify import Verdict, verify_paths
from tools.site.check import check
from tools.site.leaderboard import build, write

TRACK = "track_1_short"


def verdict_of(folder: Path, known: dict[str, str] | None = None) -> Verdict:
    return verify_paths([folder], known_shards=known or {})[0]


def failures(v: Verdict, rule: str) -> list[str]:
    return [f"{Path(f.file).name}: {f.evidence}" for f in v.failures if f.rule == rule]


@pytest.fixture
def records(tmp_path: Path) -> Path:
    return tmp_path / "records"


def test_a_clean_record_passes_every_rule(records: Path) -> None:
    v = verdict_of(write_record(records, "2026-08-01_Clean"))
    assert v.valid, v.failures
    assert v.is_new_record and len(v.runs) == 3
    assert v.p_value is not None and v.p_value < 0.01
    assert v.not_applicable == ["loss-drop", "same-node"]  # same-node: no baseline/ runs


# --- structure ------------------------------------------------------------------------------


def test_structure_front_matter_and_empty_logs(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Broken", meta={"systems_only": "maybe", "date": "2026-08-02"})
    (folder / "empty.txt").write_bytes(b"")
    (folder / "binary.txt").write_bytes(b"\x00\x01\x02" * 100)
    found = " | ".join(failures(verdict_of(folder), "structure"))
    assert "systems_only" in found
    assert "empty.txt: the file is empty" in found
    assert "binary.txt: binary content" in found


def test_structure_front_matter_date_must_match_folder(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Dated")
    text = (folder / "README.md").read_text().replace('date: "2026-08-01"', 'date: "2026-08-09"')
    (folder / "README.md").write_text(text)
    assert any("differs from the folder name" in f for f in failures(verdict_of(folder), "structure"))


@pytest.mark.parametrize(
    ("date_line", "evidence"),
    [
        ("date: 2026-13-45", "README.md front matter is not valid YAML: month must be in 1..12"),
        ('date: "2026-02-30"', "'date' '2026-02-30' is not a date YYYY-MM-DD"),
        ("date: 20260801", "'date' '20260801' is not a date YYYY-MM-DD"),
    ],
)
def test_structure_bad_readme_date_fails_one_record_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], date_line: str, evidence: str
) -> None:
    """One bad README once stopped verify ('error: month must be in 1..12', exit 2, no file named) and
    leaderboard/check (plots read the date); now it is that record's structure failure."""
    records = tmp_path / "records"
    good = write_record(records, "2026-07-01_Good")
    bad = write_record(records, "2026-02-30_Bad")
    readme = bad / "README.md"
    readme.write_text(re.sub(r"^date: .*$", date_line, readme.read_text(), flags=re.M))
    verdicts = {v.record.name: v for v in verify_paths([records / TRACK], known_shards={})}
    assert verdicts[good.name].valid and verdicts[good.name].is_new_record
    found = [f for f in verdicts[bad.name].failures if f.rule == "structure"]
    assert any(f.file == str(readme) and evidence in f.evidence for f in found), found
    assert any("is not <YYYY-MM-DD>_<ShortName> with a date of the calendar" in f.evidence for f in found)
    assert main(["verify", str(bad)]) == 1
    assert evidence in capsys.readouterr().out
    out = tmp_path / "leaderboard"
    write(build(records, out), out)
    ok, lines = check(records, out)
    assert not ok and any("2026-02-30_Bad" in ln and "INVALID: structure" in ln for ln in lines)


def test_structure_readme_must_be_a_file_not_a_link(tmp_path: Path) -> None:
    """A README is read like a log: a symbolic link (to /dev/zero, which never ends, or anywhere) is refused."""
    records = tmp_path / "records"
    folder = write_record(records, "2026-08-01_Linked")
    elsewhere = tmp_path / "README.md"
    (folder / "README.md").rename(elsewhere)
    (folder / "README.md").symlink_to(elsewhere)
    with pytest.raises(ValueError, match="may hold no symbolic links"):  # every link is refused up front
        verdict_of(folder)
    (folder / "README.md").unlink()
    (folder / "README.md").symlink_to(tmp_path / "missing.md")  # a dangling link is still a README entry
    with pytest.raises(ValueError, match="README.md"):
        verdict_of(folder)


def test_structure_record_log_must_carry_its_code(records: Path) -> None:
    folder = write_record(records, "2026-08-01_NoCode", runs=3, source="")
    assert any("source section is empty" in f for f in failures(verdict_of(folder), "structure"))


def test_structure_unknown_baseline_is_a_dead_link(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Orphan", meta={"baseline": "2020-01-01_DoesNotExist"})
    assert any("baseline" in f for f in failures(verdict_of(folder), "structure"))
    ok = write_record(records, "2026-08-02_Child", meta={"baseline": "2026-08-01_Orphan"})
    assert not failures(verdict_of(ok), "structure")


def test_structure_record_without_logs(records: Path) -> None:
    """A README and no logs is a structure failure, not a crash (the config rule once raised StopIteration)."""
    folder = write_record(records, "2026-08-01_Empty", runs=0)
    v = verdict_of(folder)
    assert any("no run logs" in f for f in failures(v, "structure")) and not v.valid


# --- complete -------------------------------------------------------------------------------


def test_complete(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Stopped", runs=3)
    write_log(folder, LogSpec(seed=99, stop_at=80))
    found = failures(verdict_of(folder), "complete")
    assert len(found) == 1 and "at step 75, not at the final step 100" in found[0]


# --- monotonic ------------------------------------------------------------------------------


def _edit_last_log(folder: Path, pattern: str, repl: str) -> Path:
    path = sorted(folder.glob("*.txt"))[-1]
    text, n = re.subn(pattern, repl, path.read_text(), count=1, flags=re.M)
    assert n == 1
    path.write_text(text)
    return path


def test_monotonic_train_time_going_back(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Back")
    _edit_last_log(
        folder,
        r"^step:50/100 train_loss:(\S+) train_time:\d+ms step_avg:\S+$",
        r"step:50/100 train_loss:\1 train_time:100ms step_avg:2.04ms",
    )
    found = failures(verdict_of(folder), "monotonic")
    assert len(found) == 1 and "train_time decreases" in found[0]


def test_monotonic_step_avg_that_disagrees_with_train_time(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Avg")
    _edit_last_log(folder, r"^(step:60/100 train_loss:\S+ train_time:\d+ms) step_avg:\S+$", r"\1 step_avg:40.00ms")
    found = failures(verdict_of(folder), "monotonic")
    assert len(found) == 1 and "step_avg disagrees" in found[0]


def test_monotonic_steps_out_of_order(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Order")
    _edit_last_log(folder, r"^step:40/100 train_loss", "step:39/100 train_loss")
    assert any("do not increase" in f for f in failures(verdict_of(folder), "monotonic"))


def test_monotonic_infers_k_from_step_avg_when_config_does_not_say(records: Path) -> None:
    # 2024 public logs (no README, no config line): the first 10 steps are untimed,
    # step_avg = train_time / (step - 10). Without a ledger such a folder is judged by its date's rules (2024).
    folder = records / TRACK / "2024-10-14_Warmup"
    for seed in (1, 2, 3):
        write_log(folder, LogSpec(seed=seed, k=10, include_config=False, include_data=False))
    v = verdict_of(folder)
    assert v.record.layout == "public" and not failures(v, "monotonic")
    assert {infer_k(r.log) for r in v.runs} == {10}
    # ... and the same curves with a config that claims k=0 disagree: the check is not vacuous.
    wrong = write_record(records, "2026-08-02_WrongK", k=10, config={"step_avg_excluded_steps": 0})
    assert all("step_avg disagrees with train_time / (step - 0)" in f for f in failures(verdict_of(wrong), "monotonic"))


def _halve_train_time(path: Path) -> None:
    """The edit a cheat makes: every train_time halved, step_avg left as it was."""

    def half(m: re.Match[str]) -> str:
        return f"train_time:{int(m.group(1)) // 2}ms"

    path.write_text(re.sub(r"train_time:(\d+)ms", half, path.read_text()))


@pytest.mark.parametrize("k", [10**9, 10**30, 2**63, 100, -1, 2.5, "0", True])
def test_monotonic_a_config_k_cannot_switch_the_check_off(records: Path, k: object) -> None:
    """k >= total would leave no line to check; a huge k once crashed numpy (OverflowError)."""
    folder = write_record(records, "2026-08-01_BigK", config={"step_avg_excluded_steps": k})
    for log in folder.glob("*.txt"):
        _halve_train_time(log)
    v = verdict_of(folder)
    found = failures(v, "monotonic")
    assert len(found) == 3 and all("step_avg_excluded_steps" in f for f in found), found
    assert not v.valid and not v.is_new_record


def test_monotonic_record_logs_of_this_trainer_have_k_zero(records: Path) -> None:
    """train_gpt.py times every step (k = 0): a record log claiming warm-up steps was edited."""
    folder = write_record(records, "2026-08-01_Warm10", k=10, config={"step_avg_excluded_steps": 10})
    assert all("train_gpt.py times every step" in f for f in failures(verdict_of(folder), "monotonic"))
    # Off the record tracks a k below the total is taken as written.
    smoke = write_log(records / "smoke", LogSpec(track="smoke", k=10, config={"step_avg_excluded_steps": 10}))
    assert not failures(verify_paths([smoke], track="smoke")[0], "monotonic")
    huge = write_log(records / "smoke2", LogSpec(track="smoke", config={"step_avg_excluded_steps": 10**30}))
    assert any(
        "not a step count in [0, 100)" in f for f in failures(verify_paths([huge], track="smoke")[0], "monotonic")
    )


def test_monotonic_train_time_checked_on_every_line(records: Path) -> None:
    """Also on the untimed warm-up lines; only the one clock restart after step k is allowed."""
    folder = records / TRACK / "2024-10-14_Warmup"
    log = write_log(folder, LogSpec(seed=1, k=10, step_ms=50.0, include_config=False, include_data=False))
    text = log.read_text()
    for step in range(1, 11):  # the 2024 trainer: warm-up steps count up, then the clock restarts at step 11
        text = re.sub(
            rf"^step:{step}/100 train_loss:(\S+) train_time:0ms step_avg:\S+$",
            rf"step:{step}/100 train_loss:\1 train_time:{40_000 + 100 * step}ms step_avg:nanms",
            text,
            flags=re.M,
        )
    log.write_text(text)
    assert not failures(verdict_of(folder), "monotonic")
    log.write_text(text.replace("train_time:40500ms", "train_time:45000ms", 1))
    found = failures(verdict_of(folder), "monotonic")
    assert len(found) == 1 and "train_time decreases (k=10): 45000ms at step 5" in found[0], found


def test_monotonic_on_every_public_log(public_records: Path) -> None:
    """The tolerance is tight enough to catch edits (above) and loose enough for every real run of the public tree."""
    v = verify_paths([public_records / "track_1_short"], known_shards={})
    assert not [f for x in v for f in x.failures if f.rule == "monotonic"]
    ks = {infer_k(r.log) for x in v for r in x.runs}
    assert {0, 10} <= ks


# --- same-code ------------------------------------------------------------------------------


def test_same_code(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Code")
    assert not failures(verdict_of(folder), "same-code")
    odd = write_log(folder, LogSpec(seed=50, source="print('different code')\n"))
    found = failures(verdict_of(folder), "same-code")
    assert found == [f"{odd.name}: " + found[0].split(": ", 1)[1]] and "differs from" in found[0]


# --- distinct-runs --------------------------------------------------------------------------


def test_distinct_runs_copied_log_and_repeated_seed(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Twice")
    first = sorted(folder.glob("*.txt"))[0]
    shutil.copy(first, folder / "copy-of-a-run.txt")
    found = failures(verdict_of(folder), "distinct-runs")
    assert any("byte-for-byte the same file" in f for f in found)
    (folder / "copy-of-a-run.txt").unlink()
    write_log(folder, LogSpec(seed=1, run_id="00000000-0000-4000-8000-000000000001", step_ms=58.0))
    found = failures(verdict_of(folder), "distinct-runs")
    assert any("seed 1 is also the seed" in f for f in found)


def test_distinct_runs_same_curve_in_an_edited_copy(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Curve")
    first = sorted(folder.glob("*.txt"))[0]
    text = re.sub(r'"seed": \d+', '"seed": 1001', first.read_text()).replace(
        first.stem, "11111111-2222-4333-8444-555555555555"
    )
    (folder / "11111111-2222-4333-8444-555555555555.txt").write_text(text)
    found = failures(verdict_of(folder), "distinct-runs")
    assert len(found) == 1 and "the same train losses at the first 20 steps (one run counted twice)" in found[0]
    assert first.name in found[0] and "11111111-2222-4333-8444-555555555555.txt" in found[0]


# --- hardware -------------------------------------------------------------------------------


def test_hardware_one_gpu_log_in_an_eight_gpu_record(records: Path) -> None:
    folder = write_record(records, "2026-08-01_OneGpu")
    write_log(folder, LogSpec(seed=9, num_gpus=1))
    found = failures(verdict_of(folder), "hardware")
    assert len(found) == 1 and f"nvidia-smi lists 1× {H100}; the record claims 8× {H100}" in found[0]


def test_hardware_world_size_must_match_visible_gpus(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Fewer", config={"world_size": 1, "grad_accum_steps": 8})
    assert all("world_size 1 but nvidia-smi lists 8 GPUs" in f for f in failures(verdict_of(folder), "hardware"))


def test_hardware_other_class_is_valid_when_claimed(records: Path) -> None:
    folder = write_record(records, "2026-08-01_H200", num_gpus=8, gpu="NVIDIA H200")
    assert failures(verdict_of(folder), "hardware")
    claimed = write_record(
        records, "2026-08-02_H200", num_gpus=8, gpu="NVIDIA H200", meta={"hardware": "8x NVIDIA H200"}
    )
    v = verdict_of(claimed)
    assert v.valid and v.hardware is not None and v.hardware.label == "8× NVIDIA H200"


def test_hardware_one_gpu_uuid_listed_eight_times_is_one_gpu(records: Path) -> None:
    """Issue 20: a host line listing one GPU's UUID for all eight ranks passed as 8 GPUs (nvidia-smi's table and
    world_size said 8): the ranks shared one GPU, or the line was written by hand. The UUID is compared without its
    case (nvidia-smi prints one spelling)."""
    one = fake_gpu_uuids(1)[0]
    folder = write_record(records, "2026-08-01_OneUuid", gpu_uuids=[one] * 7 + [one.upper()])
    found = failures(verdict_of(folder), "hardware")
    assert len(found) == 3 and all(f.endswith(".txt: " + found[0].split(": ", 1)[1]) for f in found), found
    assert (
        f"the 'host:' line lists {one} 8 times (8 UUIDs, 1 distinct): a GPU has one UUID, so the run used " in found[0]
    )
    assert "1 GPU(s), not the 8 it lists" in found[0]


def test_hardware_gpu_uuids_must_be_the_gpus_nvidia_smi_lists(records: Path) -> None:
    folder = write_record(records, "2026-08-01_FewerUuids", gpu_uuids=fake_gpu_uuids(4))
    found = failures(verdict_of(folder), "hardware")
    assert len(found) == 3 and all(
        "the 'host:' line names 4 GPU(s), but nvidia-smi lists 8 (world_size 8): the run did not use" in f
        for f in found
    ), found
    assert not failures(verdict_of(write_record(records, "2026-08-02_NoHostLine", include_host=False)), "hardware")


def test_hardware_needs_nvidia_smi(records: Path) -> None:
    folder = write_record(records, "2026-08-01_NoSmi", smi=False)
    assert all("nvidia-smi says 'not available'" in f for f in failures(verdict_of(folder), "hardware"))


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "evidence"),
    [
        ({"preset": "medium"}, "preset 'medium'"),
        ({"val_tokens": 1_048_576}, "val_tokens 1048576"),
        ({"overrides": {"num_iterations": 50}}, "overrides"),
        ({"global_batch_tokens": 123}, "not global_batch_tokens 123"),
        ({"target_val_loss": 3.5}, "target_val_loss 3.5"),
    ],
)
def test_config_failures(records: Path, change: dict[str, object], evidence: str) -> None:
    folder = write_record(records, "2026-08-01_Config", config=change)
    found = failures(verdict_of(folder), "config")
    assert len(found) == 3 and all(evidence in f for f in found)


def test_config_must_agree_across_runs(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Mixed", runs=3)
    write_log(folder, LogSpec(seed=40, config={"val_loss_every": 10, "data_path": "/elsewhere/fineweb10B"}))
    found = failures(verdict_of(folder), "config")
    assert len(found) == 1 and found[0].endswith("in val_loss_every")  # data_path may differ, the recipe not


def test_config_missing_line_and_keys(records: Path) -> None:
    folder = write_record(records, "2026-08-01_NoCfg", runs=2)
    write_log(folder, LogSpec(seed=5, include_config=False))
    write_log(folder, LogSpec(seed=6, drop_config_keys=("seed",)))
    found = " | ".join(failures(verdict_of(folder), "config"))
    assert "no 'config:' line" in found and "config lacks seed" in found


def test_config_not_applicable_to_public_logs() -> None:
    v = verify_paths([PUBLIC_FIXTURE / "records/track_1_short/2026-04-4_FuseCEFwdAndBwd"], known_shards={})[0]
    assert {"config", "data"} <= set(v.not_applicable) and not [f for f in v.failures if f.rule in ("config", "data")]


# --- data -----------------------------------------------------------------------------------


def test_data_same_shards_in_every_run_and_known_hashes(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Data")
    assert not failures(verdict_of(folder), "data")
    known = {s["name"]: s["sha256"] for s in DEFAULT_SHARDS}
    assert not failures(verdict_of(folder, known), "data")
    bad = known | {"fineweb_val_000000.bin": "0" * 64}
    assert len(failures(verdict_of(folder, bad), "data")) == 3
    other = [shard("fineweb_val_000000.bin", "val"), shard("my_own_train_000001.bin", "train")]
    write_log(folder, LogSpec(seed=20, shards=other))
    assert any("reads other shard files" in f for f in failures(verdict_of(folder), "data"))


def test_data_known_shards_are_matched_by_hash_not_by_name(records: Path) -> None:
    """Any data renamed to the published names once passed: the table was looked up by file name."""
    known = {s["name"]: s["sha256"] for s in DEFAULT_SHARDS}
    own = [dict(s, sha256=hashlib.sha256(b"my data " + s["name"].encode()).hexdigest()) for s in DEFAULT_SHARDS]
    renamed = [dict(s, name=f"shard_{i}.bin") for i, s in enumerate(own)]
    # Each record in a records folder of its own: records of one track must share one val shard.
    for name, shards in (("2026-08-01_Own", own), ("2026-08-02_Renamed", renamed)):
        found = failures(verdict_of(write_record(records / name, name, shards=shards), known), "data")
        assert len(found) == 3 * 9 and all("which is no known FineWeb shard" in f for f in found), found
        assert not failures(verdict_of(records / name / TRACK / name), "data")  # an empty table checks little
    # The published shards under other names are fine: the bytes are what counts.
    published = [dict(s, name=f"copy_{i}.bin") for i, s in enumerate(DEFAULT_SHARDS)]
    assert not failures(verdict_of(write_record(records, "2026-08-03_Copies", shards=published), known), "data")
    # ... but the val shard must be the val shard, and no train shard may be it.
    val, train = DEFAULT_SHARDS[0], DEFAULT_SHARDS[1:]
    swapped = [dict(train[0], split="val"), dict(val, split="train"), *train[1:]]
    found = failures(verdict_of(write_record(records / "s", "2026-08-04_Swapped", shards=swapped), known), "data")
    assert len(found) == 6 and sum("not the FineWeb val shard" in f for f in found) == 3
    assert sum("a record never trains on it" in f for f in found) == 3


def test_data_line_must_be_well_formed(records: Path) -> None:
    folder = write_record(
        records, "2026-08-01_BadData", runs=3, shards=[{"name": "x.bin", "sha256": "nothex", "tokens": 5}]
    )
    assert all("not 64 lowercase hex digits" in f for f in failures(verdict_of(folder), "data"))


# --- target ---------------------------------------------------------------------------------


def test_target_mean_above_target(records: Path) -> None:
    folder = write_record(records, "2026-08-01_High", final_loss=3.29)
    assert any("above the target 3.28" in f for f in failures(verdict_of(folder), "target"))


def test_target_needs_three_runs_unless_systems_only(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Two", runs=2)
    assert any("the p-value needs at least 3" in f for f in failures(verdict_of(folder), "target"))
    base = write_record(records, "2026-07-30_Base")
    assert verdict_of(base).valid
    sys_meta = {"systems_only": True, "baseline": "2026-07-30_Base"}
    systems = write_record(records, "2026-08-02_Sys", runs=3, meta=sys_meta)
    assert verdict_of(systems).valid
    one = write_record(records, "2026-08-02_SysOne", runs=1, meta=sys_meta)  # once enough for systems_only
    assert any("a systems_only record needs at least 3" in f for f in failures(verdict_of(one), "target"))
    high = write_record(records, "2026-08-03_SysHigh", runs=3, final_loss=3.3, meta=sys_meta)
    assert any("above the target" in f for f in failures(verdict_of(high), "target"))  # never waives the mean


@pytest.mark.parametrize(
    ("baseline", "evidence"),
    [
        (None, "systems_only: true needs a 'baseline'"),
        ("..", "not a record folder name"),
        (".", "not a record folder name"),
        ("/tmp", "not a record folder name"),
        ("2026-07-30_Base/../2026-07-30_Base", "not a record folder name"),
        ("2026-07-29_Missing", "not a record folder of track_1_short"),
        ("2026-08-02_Sys", "is this record itself"),
        ("2026-08-05_Later", "baseline 2026-08-05_Later is not earlier in the ledger"),
    ],
)
def test_systems_only_needs_a_real_earlier_baseline(records: Path, baseline: str | None, evidence: str) -> None:
    """The p-value waiver rests on the baseline: nothing, a path or a later record cannot carry it."""
    write_record(records, "2026-07-30_Base")
    write_record(records, "2026-08-05_Later")
    (records / TRACK / "2026-07-29_Missing").mkdir()  # a folder, but not a record (no README)
    systems = write_record(records, "2026-08-02_Sys", runs=1, meta={"systems_only": True, "baseline": baseline})
    v = verdict_of(systems)
    assert any(evidence in f for f in failures(v, "structure")), v.failures
    assert not v.valid and not v.is_new_record


def test_systems_only_baseline_must_be_valid(records: Path) -> None:
    bad = write_record(records, "2026-07-30_Base", runs=2)  # too few runs for the p-value
    assert not verdict_of(bad).valid
    systems = write_record(records, "2026-08-02_Sys", runs=3, meta={"systems_only": True, "baseline": bad.name})
    chained = write_record(records, "2026-08-03_Chain", runs=3, meta={"systems_only": True, "baseline": systems.name})
    for folder in (systems, chained):
        found = failures(verdict_of(folder), "target")
        assert len(found) == 1 and "waives the p-value only against a valid baseline" in found[0], found
    # An ordinary record may name any earlier record folder as what it improves on.
    plain = write_record(records, "2026-08-04_Plain", meta={"baseline": bad.name})
    assert verdict_of(plain).valid


def test_target_p_value_not_small_enough(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Close", runs=3, final_loss=3.2795)
    found = failures(verdict_of(folder), "target")
    assert any("p = " in f and "not below 0.01" in f for f in found), found


# --- loss-drop (smoke) ----------------------------------------------------------------------


def _smoke(tmp_path: Path, **kw: object) -> Verdict:
    path = write_log(
        tmp_path / "logs", LogSpec(track="smoke", smi=False, num_gpus=0, total_steps=40, val_every=10, **kw)
    )
    return verify_paths([path], track="smoke", known_shards={})[0]


def test_loss_drop_smoke(tmp_path: Path) -> None:
    ok = _smoke(tmp_path, start_loss=6.3, final_loss=3.0)
    assert ok.valid, ok.failures
    assert {"same-code", "distinct-runs", "hardware", "target", "faster"} <= set(ok.not_applicable)
    flat = _smoke(tmp_path, seed=2, start_loss=6.3, final_loss=6.1)
    assert any("less than the 5% drop" in f for f in failures(flat, "loss-drop"))


def test_smoke_config_must_be_the_smoke_preset(tmp_path: Path) -> None:
    v = _smoke(tmp_path, start_loss=6.3, final_loss=3.0, config={"preset": "short"})
    assert any("preset 'short'" in f for f in failures(v, "config"))


# --- compile-flags --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "import torch._inductor.config as config\nconfig.coordinate_descent_tuning = True\n",
        "import torch\ntorch._inductor.config.max_autotune = True\n",
        "from torch._inductor import config as ic\nsetattr(ic, 'triton.cudagraphs', True)\n",
        "import torch\nm = torch.compile(model, mode='max-autotune')\n",
        "import torch\n@torch.compile(options={'triton.cudagraphs': True})\ndef f(x):\n    return x\n",
        "import torch\ntorch._inductor.config.max_autotune = True\nthis is not python(\n",  # regex fallback
        # Variants the first version missed:
        "import torch\nm = torch.compile(m, **{'mode': 'max-autotune'})\n",
        "import torch\nkw = {'mode': 'max-autotune'}\nm = torch.compile(m, **kw)\n",
        "model.compile(mode='max-autotune')\n",
        "model.compile(options={'max_autotune': True})\n",
        "import torch\ncfg = torch._inductor.config\ncfg.max_autotune = True\n",
        "import torch\ncfg = torch._inductor.config\nalso = cfg\nsetattr(also, 'max_autotune', True)\n",
        "import torch._inductor as I\nI.config.max_autotune = True\n",
        "from torch import _inductor as ind\nind.config.coordinate_descent_tuning = True\n",
        "import torch\nind = torch._inductor\nind.config.max_autotune = True\n",
        "import torch\ntorch._inductor.config.triton.cudagraphs = True\n",
        "import torch\nc = torch.compile\nc(m, mode='max-autotune')\n",
        "import functools, torch\nc = functools.partial(torch.compile, mode='max-autotune')\n",
        "import os\nos.environ['TORCHINDUCTOR_MAX_AUTOTUNE'] = '1'\n",
        "import os\nos.environ.setdefault('TORCHINDUCTOR_COORDINATE_DESCENT_TUNING', '1')\n",
        "import os\nflag = 'MAX_AUTOTUNE'\nos.environ[f'TORCHINDUCTOR_{flag}'] = '1'\n",
        "cfg = torch._inductor.config\ncfg.max_autotune = True\nthis is not python(\n",  # regex fallback
        "model.compile(mode='max-autotune')\nthis is not python(\n",
        "os.environ['TORCHINDUCTOR_MAX_AUTOTUNE'] = '1'\nthis is not python(\n",
    ],
)
def test_compile_flags_found(source: str) -> None:
    assert find_compile_flags(source), source


@pytest.mark.parametrize(
    "source",
    [
        "import torch\nm = torch.compile(model, dynamic=False, fullgraph=True)\n# config.max_autotune = True\n",
        "import torch\nm = torch.compile(model, **{'dynamic': False, 'fullgraph': True})\n",
        "import re\npattern = re.compile(r'step:(\\d+)', re.M)\n",
        '"""Sets no TORCHINDUCTOR_MAX_AUTOTUNE and no mode=."""\nimport torch\nm = torch.compile(model)\n',
        "import torch\nclass H:\n    compile: bool = True\nh = H()\nm = torch.compile(model) if h.compile else model\n",
    ],
)
def test_compile_flags_allowed_forms(source: str) -> None:
    assert find_compile_flags(source) == []


def test_compile_flags_pass_on_this_repository_trainer(repo_root: Path) -> None:
    """train_gpt.py compiles with dynamic=False, fullgraph=True only: it must pass its own rule."""
    assert find_compile_flags((repo_root / "train_gpt.py").read_text(encoding="utf-8")) == []


def test_compile_flags_rule_names_the_line(records: Path) -> None:
    source = "import torch\nmodel = torch.compile(model, mode='max-autotune')\n"
    v = verdict_of(write_record(records, "2026-08-01_Flags", source=source))
    found = failures(v, "compile-flags")
    assert len(found) == 3 and "source line 2: passes mode= to torch.compile" in found[0]


# --- faster ---------------------------------------------------------------------------------


def test_faster_per_track_and_hardware_class(records: Path) -> None:
    write_record(records, "2026-08-01_A", step_ms=60.0)
    write_record(records, "2026-08-02_B", step_ms=50.0)
    write_record(records, "2026-08-03_C", step_ms=55.0)
    write_record(records, "2026-08-04_D", step_ms=300.0, num_gpus=1, meta={"hardware": f"1x {H100}"})
    track = records / TRACK
    v = {x.record.name: x for x in verify_paths([track], known_shards={})}
    assert all(x.valid for x in v.values())
    assert [v[n].is_new_record for n in ("2026-08-01_A", "2026-08-02_B", "2026-08-03_C", "2026-08-04_D")] == [
        True,
        True,
        False,
        True,
    ]  # C is slower than B; D is alone in the 1x H100 class
    prev = v["2026-08-03_C"].previous
    assert prev is not None and prev.record.name == "2026-08-02_B"
    # verifying one folder still judges it against its track folder
    assert verify_paths([track / "2026-08-03_C"], known_shards={})[0].is_new_record is False


def test_faster_a_backdated_record_cannot_jump_the_queue(records: Path) -> None:
    """The date orders records, so it may not precede the runs (nvidia-smi's timestamp, one day of slack)."""
    real = write_record(records, "2026-08-01_Real", step_ms=60.0)
    fake = write_record(records, "2020-01-01_Backdated", step_ms=59.0)  # runs made 2026-01-10 (logfactory)
    v = {x.record.name: x for x in verify_paths([records / TRACK], known_shards={})}
    assert v[real.name].valid and v[real.name].is_new_record and v[real.name].previous is None
    found = failures(v[fake.name], "structure")
    assert len(found) == 3 and all(
        "nvidia-smi dates this run 2026-01-10, after the record's date 2020-01-01" in f for f in found
    )
    assert not v[fake.name].is_new_record
    # A run made the day after the record's date (another time zone) is fine; two days after is not.
    ok = write_record(records, "2026-08-09_Tz", step_ms=59.0, smi_time="Mon Aug 10 01:00:00 2026")
    assert not failures(verdict_of(ok), "structure")
    late = write_record(records, "2026-08-09_Late", step_ms=59.0, smi_time="Tue Aug 11 01:00:00 2026")
    assert len(failures(verdict_of(late), "structure")) == 3


def test_distinct_runs_across_records_a_run_counts_once(records: Path) -> None:
    """A later record that carries a run of an earlier one (copied, or renamed with the same run_id) fails;
    the earlier record keeps it. Seeds may repeat across records: they are the runs' own business."""
    earlier = write_record(records, "2026-08-01_First")
    later = write_record(records, "2026-08-05_Second", step_ms=55.0)
    assert verdict_of(earlier).valid and verdict_of(later).valid  # the same seeds 1..3 in both
    copied = sorted(earlier.glob("*.txt"))[0]
    shutil.copy(copied, later / copied.name)
    renamed = sorted(earlier.glob("*.txt"))[1]
    (later / "renamed.txt").write_text(renamed.read_text() + "\n")  # other bytes, the same run_id
    found = [f for f in failures(verdict_of(later), "distinct-runs") if "earlier record" in f]
    assert found == [
        f"{copied.name}: byte for byte the same file as {copied} of the earlier record 2026-08-01_First: "
        "a run counts for one record only; submit new runs",
        f"renamed.txt: run_id {renamed.stem} is also the run_id of {renamed} of the earlier record "
        "2026-08-01_First: a run counts for one record only; submit new runs",
    ]
    assert verdict_of(earlier).valid  # judged with its track folder, the first owner stays valid
