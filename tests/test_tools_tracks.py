"""The tools' track table and the trainer's presets describe the same tracks; runs of the scale ladder verify
as health checks, never as records."""

from __future__ import annotations

from pathlib import Path

import pytest

import train_gpt
import train_scale
from helpers.logfactory import LogSpec, write_log
from tools.cli import main
from tools.judge.tracks import TRACKS


def test_every_trainer_preset_belongs_to_the_same_track_in_the_tools() -> None:
    for preset, (track, target) in train_gpt.TRACKS.items():
        assert preset in train_gpt.PRESETS
        assert preset in TRACKS[track].presets, f"tools/judge/tracks.py does not know preset {preset} of {track}"
        assert TRACKS[track].target_val_loss == target
    assert set(TRACKS["scale"].presets) == set(train_scale.PRESETS)  # train_scale.py's, every one on track scale
    assert not set(train_gpt.PRESETS) & set(train_scale.PRESETS)  # a preset name says which file ran
    assert {p for t in TRACKS.values() for p in t.presets} == set(train_gpt.PRESETS) | set(train_scale.PRESETS)


def test_a_scale_run_verifies_as_a_scale_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path, LogSpec(track="scale", config={"parallelism": "fsdp"}, final_loss=3.0))
    assert main(["verify", str(log), "--track", "scale"]) == 0
    assert f"valid scale run (not a record): {log}" in capsys.readouterr().out


def test_a_scale_run_is_not_a_short_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path, LogSpec(track="scale", config={"parallelism": "fsdp"}, final_loss=3.0))
    assert main(["verify", str(log), "--track", "track_1_short"]) == 1
    out = capsys.readouterr().out
    assert "preset '1.5b', but track track_1_short runs short" in out
