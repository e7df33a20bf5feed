"""Records tampered with as a dishonest submitter would: each starts valid (tests/helpers/logfactory.py) and must
fail after one edit, for the right rule. Classes 1, 2, 3, 6 and 7 of issue 11; the ledger (class 4) is
tests/test_tools_ledger.py."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from helpers.logfactory import DEFAULT_SHARDS, H100, LogSpec, shard, write_log, write_record
from tools.judge import stats
from tools.judge.rules import CurvePrint, curve_print, near_duplicates
from tools.judge.tracks import OFFICIAL_CLASS, TRACKS, HardwareClass, canonical_gpu_name
from tools.judge.verify import Verdict, parse_many, verify_paths

TRACK = "track_1_short"


def verdicts_of(root: Path) -> dict[str, Verdict]:
    return {v.record.name: v for v in verify_paths([root / TRACK], known_shards={})}


def verdict_of(folder: Path) -> Verdict:
    return verify_paths([folder], known_shards={})[0]


def failures(v: Verdict, rule: str) -> list[str]:
    return [f"{Path(f.file).name}: {f.evidence}" for f in v.failures if f.rule == rule]


def logs_of(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.txt"))


def edit(path: Path, pattern: str, repl: str, count: int = 1) -> None:
    text, n = re.subn(pattern, repl, path.read_text(), count=count, flags=re.M)
    assert n >= 1, pattern
    path.write_text(text)


def nudge(path: Path, pattern: str) -> None:
    """Add 1 to the digit the second group of ``pattern`` matches, in the first line it matches."""
    text, n = re.subn(
        pattern, lambda m: m.group(1) + str((int(m.group(2)) + 1) % 10), path.read_text(), count=1, flags=re.M
    )
    assert n == 1, pattern
    path.write_text(text)


def set_config(path: Path, **changes: object) -> None:
    text = path.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("config: "))
    cfg = json.loads(line[len("config: ") :]) | changes
    path.write_text(text.replace(line, "config: " + json.dumps(cfg)))


def copy_as_new_run(src: Path, run_id: str, seed: int) -> Path:
    """The copy a cheat makes: a fresh run_id (file name and config) and another seed, numbers unchanged."""
    dst = src.with_name(f"{run_id}.txt")
    dst.write_text(src.read_text().replace(src.stem, run_id))
    set_config(dst, seed=seed)
    return dst


@pytest.fixture
def records(tmp_path: Path) -> Path:
    return tmp_path / "records"


# --- 1. one run counted as three ------------------------------------------------------------------


def test_equal_final_losses_are_no_p_value(records: Path) -> None:
    """scipy gives p = 0 for equal losses below the target; that was a pass."""
    assert math.isnan(stats.p_below_target([3.27, 3.27, 3.27], 3.28) or 0.0)
    assert math.isnan(stats.p_below_target([3.27, math.nan, 3.26], 3.28) or 0.0)
    folder = write_record(records, "2026-08-01_Equal")
    assert verdict_of(folder).valid
    for log in logs_of(folder):
        edit(log, r"^(step:100/100 val_loss:)\S+", r"\g<1>3.2700")
    v = verdict_of(folder)
    assert any("the p-value is undefined: all 3 runs have the same final loss" in f for f in failures(v, "target"))
    assert v.p_value is None and not v.valid and not v.is_new_record


def test_one_run_copied_with_a_digit_nudged_is_one_run(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Copied", runs=1)
    (src,) = logs_of(folder)
    a = copy_as_new_run(src, "aaaaaaaa-0000-4000-8000-000000000001", seed=2)
    b = copy_as_new_run(src, "bbbbbbbb-0000-4000-8000-000000000002", seed=3)
    nudge(a, r"^(step:7/100 train_loss:\d+\.\d{3})(\d)")  # the 4th decimal of one loss
    nudge(b, r"^(step:100/100 val_loss:\d+\.\d{3})(\d)")
    found = failures(verdict_of(folder), "distinct-runs")
    assert len(found) == 3, found  # each pair is one run: a~src, b~src, b~a
    assert any("the same train loss at 99 of 100 steps" in f for f in found), found
    assert all("(one run counted twice)" in f for f in found)


@pytest.mark.parametrize(("offset", "scale"), [(0.0001, 0.0), (0.0, 0.0007)])
def test_a_copy_with_every_loss_moved_is_one_run(records: Path, offset: float, scale: float) -> None:
    """Every loss shifted by 0.0001 (0.0002 in the second copy) or scaled by 1.0007 (1.0014): no loss is
    equal to the original's, but the difference of the curves hardly moves from step to step."""
    folder = write_record(records, "2026-08-01_Moved", runs=1)
    (src,) = logs_of(folder)
    for i, run_id in enumerate(["aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002"], 1):
        dst = copy_as_new_run(src, run_id, seed=10 + i)

        def moved(m: re.Match[str], i: int = i) -> str:
            return f"{m.group(1)}{float(m.group(2)) * (1 + scale * i) + offset * i:.4f}"

        dst.write_text(re.sub(r"(loss:)(\d+\.\d+)", moved, dst.read_text()))
    v = verdict_of(folder)
    assert not failures(v, "monotonic") and not failures(v, "plausible")
    found = failures(v, "distinct-runs")
    assert len(found) == 3, found
    assert all("differ by a nearly constant amount" in f for f in found), found


def test_a_same_seed_rerun_with_other_times_is_the_same_run(records: Path) -> None:
    """The losses of a rerun, times 1.3% longer (step_avg kept consistent), and another seed written in."""
    folder = write_record(records, "2026-08-01_Rerun")
    rerun = copy_as_new_run(logs_of(folder)[0], "cccccccc-0000-4000-8000-000000000003", seed=77)

    def slower(m: re.Match[str]) -> str:
        t = round(int(m.group(3)) * 1.013)
        return f"{m.group(1)} train_time:{t}ms step_avg:{t / max(int(m.group(2)), 1):.2f}ms"

    rerun.write_text(
        re.sub(r"^(step:(\d+)/\d+ \w+:\S+) train_time:(\d+)ms step_avg:\S+$", slower, rerun.read_text(), flags=re.M)
    )
    v = verdict_of(folder)
    assert not failures(v, "monotonic")  # a consistent edit
    found = failures(v, "distinct-runs")
    assert len(found) == 1 and "the same train losses at the first 20 steps" in found[0], found


@pytest.mark.parametrize("seed", [1.0, "1", " 1"])
def test_seeds_are_compared_as_numbers_and_written_as_ints(records: Path, seed: object) -> None:
    folder = write_record(records, "2026-08-01_Seeds")
    (one, two, _) = logs_of(folder)
    seeds = {
        json.loads(ln[8:])["seed"]: p for p in (one, two) for ln in p.read_text().splitlines() if ln[:8] == "config: "
    }
    set_config(seeds[2], seed=seed)  # the run with seed 2 now claims seed 1, written another way
    v = verdict_of(folder)
    found = failures(v, "distinct-runs")
    assert len(found) == 1 and re.search(r"seed (1|'1'|1\.0|' 1') is also the seed of", found[0]), found
    assert any("not an integer: train_gpt.py writes the seed it used as an int" in f for f in failures(v, "config"))


def test_seeds_that_torch_reads_as_one_are_one_seed(records: Path) -> None:
    """torch.manual_seed(-1) and torch.manual_seed(2**64 - 1) draw the same numbers; 2**64 is no seed."""
    folder = write_record(records, "2026-08-01_Wrapped")
    one, two, three = logs_of(folder)
    set_config(one, seed=-1)
    set_config(two, seed=2**64 - 1)
    set_config(three, seed=2**64)
    v = verdict_of(folder)
    found = failures(v, "distinct-runs")
    assert len(found) == 1 and re.search(r"seed (-1|18446744073709551615) is also the seed of", found[0]), found
    found = failures(v, "config")
    assert len(found) == 1 and "seed 18446744073709551616 is outside the seeds torch.manual_seed accepts" in found[0]


def test_near_duplicates_on_the_public_corpus(public_records: Path) -> None:
    """Runs of one submission with different seeds are never flagged; the only pairs of the public tree's logs that
    the test calls one run are logs filed byte for byte under two folders (the re-dated SkipMLPBlocks copy)."""
    paths = sorted(p for t in ("track_1_short", "track_2_medium") for p in (public_records / t).rglob("*.txt"))
    logs = parse_many(paths)
    prints = [curve_print(logs[p]) for p in paths]
    pairs = near_duplicates(prints)
    assert pairs, "the corpus holds one copied log: the test must find it"
    for i, j in pairs:
        assert logs[paths[i]].file_sha256 == logs[paths[j]].file_sha256, (paths[i], paths[j], pairs[(i, j)])
    # ... and it is not a blunt test: a copy with every 10th train loss nudged is still caught.
    with_train = [p for p in prints if (p.train != np.iinfo(np.int64).min).sum() > 100]
    original = with_train[0]
    nudged = original.train.copy()
    nudged[::10] += 1
    copy = CurvePrint(original.train_steps, nudged, original.val_steps, original.val)
    assert near_duplicates([original, copy]) == {
        (0, 1): f"the same train loss at {len(nudged) - len(nudged[::10])} of {len(nudged)} steps"
    }


# --- 2. incomplete runs and impossible numbers ----------------------------------------------------


def test_a_log_forked_from_a_checkpoint_is_not_a_whole_run(records: Path) -> None:
    """A resumed run's log with resumed_from deleted: metric lines from step 50 on, times continuing."""
    folder = write_record(records, "2026-08-01_Forked")
    assert verdict_of(folder).valid
    log = logs_of(folder)[0]
    text = log.read_text()
    head, _, metrics = text.partition("\nstep:0/100 ")
    kept = [ln for ln in ("step:0/100 " + metrics).splitlines() if not re.match(r"step:(\d|[1-4]\d)/", ln)]
    log.write_text(head + "\n" + "\n".join(kept) + "\n")
    found = failures(verdict_of(folder), "complete")
    assert any("the first val_loss line is at step 50, not at step 0" in f for f in found), found
    assert any("51 train line(s) for 100 steps, first missing: step 1" in f for f in found), found


def test_a_missing_train_line_and_a_shorter_run(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Gaps")
    edit(logs_of(folder)[0], r"^step:37/100 train_loss.*\n", "")
    # A run of 90 steps that keeps the config of the others (num_iterations 100).
    write_log(folder, LogSpec(seed=9, total_steps=90, config={"num_iterations": 100}))
    found = failures(verdict_of(folder), "complete")
    assert any("99 train line(s) for 100 steps, first missing: step 37" in f for f in found), found
    assert any("the metric lines count 90 steps, the config's num_iterations is 100" in f for f in found), found
    assert any("90 steps, but 3 run(s) of the record train 100" in f for f in found), found


@pytest.mark.parametrize(
    ("pattern", "repl", "evidence"),
    [
        (r"^(step:30/100 train_loss:)\S+", r"\1nan", "not finite non-negative numbers, first at step 30"),
        (r"^(step:31/100 train_loss:)\S+", r"\g<1>-1.0000", "not finite non-negative numbers, first at step 31"),
        (r"^(step:50/100 val_loss:)\S+", r"\1inf", "val_loss value(s) are not finite"),
    ],
)
def test_nan_or_negative_losses_mid_run(records: Path, pattern: str, repl: str, evidence: str) -> None:
    folder = write_record(records, "2026-08-01_Nan")
    edit(logs_of(folder)[1], pattern, repl)
    found = failures(verdict_of(folder), "plausible")
    assert len(found) == 1 and evidence in found[0], found


def test_a_val_loss_before_the_final_step_no_model_reaches(records: Path) -> None:
    folder = write_record(records, "2026-08-01_LowMid")
    edit(logs_of(folder)[0], r"^(step:50/100 val_loss:)\S+", r"\g<1>0.0100")
    found = failures(verdict_of(folder), "plausible")
    assert len(found) == 1 and "1 val loss(es) below 2.0, first 0.01 at step 50" in found[0], found


def test_a_final_loss_no_model_of_the_class_reaches(records: Path) -> None:
    folder = write_record(records, "2026-08-01_Tiny")
    for log in logs_of(folder):
        edit(log, r"^(step:100/100 val_loss:\d+\.\d\d)", r"step:100/100 val_loss:0.01")
    v = verdict_of(folder)
    assert len(failures(v, "plausible")) == 3 and "below 2.0, which no model" in failures(v, "plausible")[0]
    assert any("computed on plausible final losses only" in f for f in failures(v, "target"))
    assert v.p_value is None and not v.valid


def test_a_zero_second_record_never_ranks_first(records: Path) -> None:
    honest = write_record(records, "2026-08-01_Honest", step_ms=57.0)
    zero = write_record(records, "2026-08-02_Zero", step_ms=0.0)  # every train_time 0ms, step_avg 0.00ms
    fast = write_record(records, "2026-08-03_Impossible", step_ms=1.0)  # 1 ms per step: beyond 8x H100's peak
    later = write_record(records, "2026-08-04_Later", step_ms=55.0)
    v = verdicts_of(records)
    assert all("train_time at the final step is 0 ms" in f for f in failures(v[zero.name], "plausible"))
    found = failures(v[fast.name], "plausible")
    assert len(found) == 3 and all("less than the 497 ms the hardware needs at its peak" in f for f in found), found
    assert "524,288 tokens per step x 3e+08 FLOPs per token on 8× NVIDIA H100 80GB HBM3: 4.97 ms" in found[0]
    assert v[honest.name].is_new_record and v[later.name].is_new_record
    assert v[later.name].previous is not None and v[later.name].previous.record.name == honest.name


def test_the_physical_floor_is_far_below_the_trainer() -> None:
    """5.0 ms per step for track 1 on 8x H100 (records/README.md); train_gpt.py takes ~129 ms."""
    t1 = TRACKS[TRACK]
    assert t1.min_flops_per_token is not None
    assert OFFICIAL_CLASS.min_step_ms(8 * 65536, t1.min_flops_per_token) == pytest.approx(4.967, abs=1e-3)
    unknown = HardwareClass(8, "Some Future GPU")
    assert unknown.min_step_ms(8 * 65536, t1.min_flops_per_token) < 0.2


# --- 3. systems_only ------------------------------------------------------------------------------


def test_systems_only_must_keep_the_baselines_loss_curve(records: Path) -> None:
    write_record(records, "2026-07-30_Base")
    meta = {"systems_only": True, "baseline": "2026-07-30_Base"}
    same = write_record(records, "2026-08-01_SameMath", meta=meta, step_ms=50.0)
    other = write_record(records, "2026-08-02_OtherMath", meta=meta, final_loss=3.20, step_ms=45.0)
    shorter = write_record(records, "2026-08-03_Shorter", meta=meta, total_steps=80, step_ms=40.0)
    v = verdicts_of(records)
    assert v[same.name].valid and v[same.name].is_new_record, v[same.name].failures
    found = failures(v[other.name], "target")
    assert len(found) == 1 and "systems_only: true claims the math of 2026-07-30_Base, but at step 75" in found[0]
    assert "more than the 0.0250 run-to-run noise explains" in found[0], found
    assert any("it trains 80 steps, the baseline 100" in f for f in failures(v[shorter.name], "target"))
    assert not v[other.name].is_new_record and not v[shorter.name].is_new_record


def test_systems_only_cannot_hide_its_curve_by_skipping_the_baselines_val_steps(records: Path) -> None:
    """Other math (a curve 0.7 above the baseline's at step 25), hidden two ways: the val lines of one run
    deleted, or validating at other steps than the baseline; either left only the final step to compare."""
    write_record(records, "2026-07-30_Base")
    meta = {"systems_only": True, "baseline": "2026-07-30_Base"}
    deleted = write_record(records, "2026-08-01_Deleted", meta=meta, start_loss=12.0, step_ms=50.0)
    log = logs_of(deleted)[0]
    log.write_text(re.sub(r"^step:(25|50|75)/100 val_loss.*\n", "", log.read_text(), flags=re.M))
    elsewhere = write_record(records, "2026-08-02_Elsewhere", meta=meta, start_loss=12.0, val_every=33, step_ms=50.0)
    v = verdicts_of(records)
    found = failures(v[deleted.name], "target")
    assert len(found) == 1 and f"but {log.name} reports no val loss at step 25 (3 of the baseline's 4" in found[0]
    found = failures(v[elsewhere.name], "target")
    assert len(found) == 1 and "reports no val loss at step 25 (3 of the baseline's 4 val steps" in found[0], found
    assert not v[deleted.name].valid and not v[elsewhere.name].valid


def test_systems_only_tolerance_shrinks_with_more_runs(records: Path) -> None:
    """A final loss 0.012 higher is noise for 3 runs against 3, not for 8 against 8."""
    write_record(records, "2026-07-30_Base", runs=8)
    meta = {"systems_only": True, "baseline": "2026-07-30_Base"}
    three = write_record(records, "2026-08-01_Three", meta=meta, final_loss=3.258, seed=20)
    eight = write_record(records, "2026-08-02_Eight", runs=8, meta=meta, final_loss=3.258, seed=30)
    v = verdicts_of(records)
    assert not failures(v[three.name], "target"), v[three.name].failures
    assert any("at step 100" in f for f in failures(v[eight.name], "target"))


def test_two_records_cannot_name_each_other(records: Path) -> None:
    a = write_record(records, "2026-08-01_A", meta={"baseline": "2026-08-01_B"})
    b = write_record(records, "2026-08-01_B", meta={"baseline": "2026-08-01_A", "systems_only": True})
    v = verdicts_of(records)
    assert any("baseline 2026-08-01_B is not earlier in the ledger" in f for f in failures(v[a.name], "structure"))
    assert not failures(v[b.name], "structure")
    assert any(
        "only against a valid baseline; 2026-08-01_A failed structure" in f for f in failures(v[b.name], "target")
    )
    assert not v[a.name].valid and not v[b.name].valid


# --- 6. data without a table of known shards ------------------------------------------------------


def test_training_on_the_val_shard_fails_without_a_table(records: Path) -> None:
    val = DEFAULT_SHARDS[0]
    leaked = [val, dict(val, name="fineweb_train_000001.bin", split="train"), *DEFAULT_SHARDS[2:]]
    found = failures(verdict_of(write_record(records, "2026-08-01_Leak", shards=leaked)), "data")
    assert len(found) == 3 and all("has the sha256 of the val shard: a record never trains" in f for f in found)


@pytest.mark.parametrize(
    ("shards", "evidence"),
    [
        ([shard("fineweb_val_000000.bin", "val", tokens=10**9), *DEFAULT_SHARDS[1:]], "a FineWeb shard holds at most"),
        ([shard("fineweb_val_000000.bin", "val", tokens=1_000_000), *DEFAULT_SHARDS[1:]], "fewer than the 10,485,760"),
        (
            [DEFAULT_SHARDS[0], shard("fineweb_train_000001.bin", "train", tokens=1000)],
            "but the train shards hold 1,000",
        ),
        (  # one train shard listed 8 times under 8 names: its tokens counted 8 times
            [DEFAULT_SHARDS[0], *({**DEFAULT_SHARDS[1], "name": f"fineweb_train_{i:06d}.bin"} for i in range(1, 9))],
            "has the sha256 of fineweb_train_000001.bin: one file counted twice",
        ),
    ],
)
def test_shard_token_counts_must_be_fineweb_like(records: Path, shards: list[dict[str, object]], evidence: str) -> None:
    found = failures(verdict_of(write_record(records, "2026-08-01_Tokens", shards=shards)), "data")
    assert found and all(evidence in f for f in found), found


def test_every_record_of_a_track_validates_on_the_first_records_val_shard(records: Path) -> None:
    first = write_record(records, "2026-08-01_First")
    mine = [shard("my_val_000000.bin", "val"), *DEFAULT_SHARDS[1:]]
    other = write_record(records, "2026-08-02_OwnVal", shards=mine, step_ms=50.0)
    v = verdicts_of(records)
    assert v[first.name].valid
    found = failures(v[other.name], "data")
    assert len(found) == 1 and "but 2026-08-01_First, the first record of track_1_short, on" in found[0], found
    assert not v[other.name].is_new_record
    # ... and within one record, every run validates on one val shard.
    write_log(first, LogSpec(seed=40, shards=mine))
    assert any("validates on another val shard (sha256) than" in f for f in failures(verdict_of(first), "data"))


# --- 7. hardware classes spoofed with look-alike names --------------------------------------------

CYRILLIC = "NVIDIA \u041d100 80GB HBM3"  # Н: CYRILLIC CAPITAL LETTER EN


def test_a_look_alike_gpu_name_makes_no_class(records: Path) -> None:
    write_record(records, "2026-08-01_Honest", step_ms=57.0)
    fake = write_record(records, "2026-08-02_Fake", gpu=CYRILLIC, step_ms=40.0, meta={"hardware": f"8x {CYRILLIC}"})
    v = verdicts_of(records)[fake.name]
    assert any("'hardware'" not in f and "not ASCII after Unicode NFKC" in f for f in failures(v, "structure"))
    found = failures(v, "hardware")
    assert len(found) == 3 and "U+041D CYRILLIC CAPITAL LETTER EN at offset 7" in found[0], found
    assert v.hardware == OFFICIAL_CLASS and not v.is_new_record  # judged, and failed, in the official class
    # A community folder (no README) claims the class most runs show: never the look-alike.
    community = records / TRACK / "2026-08-03_Community"
    for seed in (1, 2, 3):
        write_log(community, LogSpec(seed=seed, gpu=CYRILLIC, include_config=False, include_data=False))
    c = verdicts_of(records)["2026-08-03_Community"]
    assert c.hardware == OFFICIAL_CLASS and len(failures(c, "hardware")) == 3


def test_gpu_names_are_normalised_not_rejected_when_they_fold_to_ascii(records: Path) -> None:
    fullwidth = "\uff2e\uff36\uff29\uff24\uff29\uff21 H100 80GB HBM3"  # ＮＶＩＤＩＡ
    assert canonical_gpu_name(fullwidth) == H100 and canonical_gpu_name("nvidia  h100 80gb hbm3") == H100
    assert canonical_gpu_name("NVIDIA H100\u200b") is None  # a zero-width space stays
    folder = write_record(records, "2026-08-01_Case", meta={"hardware": "8x nvidia h100 80gb hbm3"})
    v = verdict_of(folder)
    assert v.valid and v.hardware == OFFICIAL_CLASS
