"""The verifier on logs of checkpointed and resumed runs: a resumed run is never a record, run settings
(checkpointing, where the data and logs are) change nothing (tools/judge/rules.py, `config`), in today's config line
(the `run` object) and in the older one (the settings at its top)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.logfactory import LogSpec, write_log, write_record
from tools.judge.verify import verify_paths

RESUMED = {"path": "checkpoints/3f0c/step_000500", "step": 500, "run_id": "3f0c"}


def config_failures(folder: Path) -> list[str]:
    verdict = verify_paths([folder], known_shards={})[0]
    return [f"{Path(f.file).name}: {f.evidence}" for f in verdict.failures if f.rule == "config"]


def test_a_resumed_run_is_never_a_record(tmp_path: Path) -> None:
    folder = write_record(tmp_path / "records", "2026-08-01_Resumed", runs=3)
    resumed = write_log(folder, LogSpec(seed=7, config={"resumed_from": RESUMED}))
    found = config_failures(folder)
    assert any(f.startswith(resumed.name) and "resumed_from" in f and "never a record" in f for f in found), found


def test_run_settings_may_differ_between_the_runs_of_a_record(tmp_path: Path) -> None:
    """Today's config line keeps the run settings in one object; the runs of a record may differ in it only."""
    folder = write_record(tmp_path / "records", "2026-12-01_Settings", runs=2)
    elsewhere = {"data_path": "/scratch/fineweb10B", "log_dir": "/tmp/logs", "export_dir": "exports"}
    write_log(folder, LogSpec(seed=9, config={"run": elsewhere}))
    assert config_failures(folder) == []
    write_log(folder, LogSpec(seed=10, config={"run": elsewhere, "warmup_steps": 3}))
    assert any("warmup_steps" in f for f in config_failures(folder))  # the recipe itself must still agree


def test_checkpoint_settings_of_older_logs_may_differ_between_the_runs_of_a_record(tmp_path: Path) -> None:
    folder = write_record(tmp_path / "records", "2026-08-01_Saved", runs=2, config={"resumed_from": None})
    write_log(
        folder,
        LogSpec(seed=9, config={"resumed_from": None, "checkpoint_every": 500, "checkpoint_dir": "checkpoints/ab12"}),
    )
    assert config_failures(folder) == []
    write_log(folder, LogSpec(seed=10, config={"resumed_from": None, "num_iterations": 101}))
    assert any("num_iterations" in f for f in config_failures(folder))  # the recipe itself must still agree


def test_a_resumed_smoke_run_is_still_checked_for_health(tmp_path: Path) -> None:
    log = write_log(tmp_path / "logs", LogSpec(track="smoke", seed=3, config={"resumed_from": RESUMED}))
    verdict = verify_paths([log], track="smoke", known_shards={})[0]
    assert not [f for f in verdict.failures if f.rule == "config"]


def test_reproduce_refuses_a_scale_log_in_one_paragraph(tmp_path: Path) -> None:
    """A train_scale.py log's code is two files; `tools reproduce` runs the record file's logs only."""
    from tools.reproduce.runner import load_claim

    source = "import train_gpt\n" + "-" * 40 + "\n# train_gpt.py\nprint(1)\n"
    log = write_log(tmp_path, LogSpec(track="scale", seed=4, source=source))
    with pytest.raises(ValueError, match=r"more than one file .*train_gpt.py appended.*train_scale.py run"):
        load_claim(log)
