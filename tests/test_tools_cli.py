"""The command line: exit codes, --json shapes, --help everywhere, smoke logs, and no torch on import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from helpers.logfactory import LogSpec, write_log, write_record
from tools.cli import COMMANDS, main

VERIFY_KEYS = {
    "record",
    "valid",
    "is_new_record",
    "runs",
    "mean_val_loss",
    "p_value",
    "mean_train_time_ms",
    "failures",
    "not_applicable",
}


@pytest.mark.slow  # launches a Python process
def test_import_tools_does_not_import_torch_or_heavy_libraries() -> None:
    code = (
        "import sys, tools, tools.cli, tools.judge.verify, tools.site.leaderboard, tools.judge.compare, tools.site.check\n"
        "tools.cli.build_parser()\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'pandas', 'scipy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_help_for_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    assert "usage: python -m tools " + command in capsys.readouterr().out


@pytest.mark.slow  # launches a Python process
def test_python_dash_m_tools_help() -> None:
    out = subprocess.run([sys.executable, "-m", "tools", "--help"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and all(c.name in out.stdout for c in COMMANDS)


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["verify"]) == 2
    assert main(["verify", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    log = write_log(tmp_path / "logs", LogSpec(track="smoke"))
    assert main(["verify", str(log)]) == 2  # no track in the path and no --track
    err = capsys.readouterr().err
    assert "pass --track" in err and "Traceback" not in err


def test_smoke_log_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What run.sh does at the end of a CPU smoke run."""
    log = write_log(
        tmp_path / "logs",
        LogSpec(track="smoke", smi=False, num_gpus=0, total_steps=40, val_every=10, start_loss=6.3, final_loss=3.0),
    )
    assert main(["verify", str(log), "--track", "smoke"]) == 0
    out = capsys.readouterr().out
    assert f"valid smoke run (not a record): {log}: val loss 6.3000 -> 3.00" in out
    assert "1 of 1 valid" in out

    bad = write_log(
        tmp_path / "logs",
        LogSpec(
            track="smoke",
            smi=False,
            num_gpus=0,
            seed=4,
            stop_at=20,
            total_steps=40,
            val_every=10,
            start_loss=6.3,
            final_loss=6.2,
        ),
    )
    assert main(["verify", str(bad), "--track", "smoke"]) == 1
    out = capsys.readouterr().out
    assert "smoke run FAILED (complete, loss-drop)" in out
    assert "FAIL complete" in out and "FAIL loss-drop" in out


def test_verify_json_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "records"
    good = write_record(records, "2026-08-01_Good")
    bad = write_record(records, "2026-08-02_Bad", runs=2)
    assert main(["verify", "--json", str(good)]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert VERIFY_KEYS <= set(obj) and obj["valid"] and obj["is_new_record"] and obj["runs"] == 3
    assert main(["verify", "--json", str(good), str(bad)]) == 1
    objs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["valid"] for o in objs] == [True, False]
    assert objs[1]["failures"][0]["rule"] == "target" and objs[1]["failures"][0]["file"].endswith("README.md")
    assert main(["verify", str(good), str(bad)]) == 1
    text = capsys.readouterr().out
    assert "valid, NEW RECORD" in text and "INVALID: target" in text and "FAIL target" in text


def test_verify_a_records_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--help promises a records folder; it once failed with 'cannot tell its track from the path'."""
    records = tmp_path / "records"
    write_record(records, "2026-08-01_Short")
    write_record(records, "2026-08-02_Medium", track="track_2_medium", final_loss=2.9)
    assert main(["verify", str(records)]) == 0
    out = capsys.readouterr().out
    assert "2026-08-01_Short" in out and "2026-08-02_Medium" in out and "2 of 2 valid" in out
    (records / "notes.txt").write_text("stray\n")  # what is not a record fails (tools.judge.records.misplaced)
    assert main(["verify", str(records)]) == 1
    assert "notes.txt: a stray file" in capsys.readouterr().out


def test_verify_a_public_record_with_one_gpu_logs_beside_its_runs(
    public_records: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = public_records / "track_1_short" / "2026-01-10_FusedLinearReLUSquare"
    main(["verify", "--json", str(folder)])
    obj = json.loads(capsys.readouterr().out)
    # The public history's "1-GPU log linked as an 8-GPU record": beside the 8-GPU runs, an experiment.
    other = sorted(Path(r["file"]).name for r in obj["roles"] if r["role"] == "other hardware")
    assert other == ["single_gpu_baseline.txt", "single_gpu_run.txt"] and obj["hardware"] == "8× NVIDIA H100 80GB HBM3"
    assert {"config", "data"} <= set(obj["not_applicable"]) and obj["upstream"]["number"] == "59"


def test_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "records"
    a = write_record(records, "2026-08-01_A", runs=4, step_ms=60.0)
    b = write_record(records, "2026-08-02_B", runs=4, step_ms=50.0, seed=20)
    assert main(["compare", "--json", str(a), str(b)]) == 0
    res = json.loads(capsys.readouterr().out)["comparison"]
    time = res["train_time_ms"]
    assert time["p_two_sided"] < 1e-3 and time["difference"] < 0 and time["p_lower"] < time["p_two_sided"]
    assert res["val_loss"]["p_two_sided"] > 0.01
    assert res["speedup_pct"] > 0 and res["reference"] == "2026-08-01_A" and res["candidate"] == "2026-08-02_B"
    assert main(["compare", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "Welch's t-test on time: B - A = -" in text and "two-sided p =" in text and "one-sided p (B lower)" in text
    assert "% faster" in text


def test_compare_matches_scipy_reference(tmp_path: Path) -> None:
    """Cross-check against a direct scipy call on the numbers read from the logs."""
    from scipy import stats as sps

    from tools.judge.compare import compare
    from tools.judge.verify import verify_paths

    records = tmp_path / "records"
    a = verify_paths([write_record(records, "2026-08-01_A", runs=3, step_ms=60.0)], known_shards={})[0]
    b = verify_paths([write_record(records, "2026-08-02_B", runs=5, step_ms=58.0, seed=9)], known_shards={})[0]
    times_a, times_b = [r.log.train_time_ms for r in a.runs], [r.log.train_time_ms for r in b.runs]
    ref = sps.ttest_ind(times_b, times_a, equal_var=False)  # B - A, the difference compare prints
    one = sps.ttest_ind(times_b, times_a, equal_var=False, alternative="less")
    result = compare(a, b)["comparison"]["train_time_ms"]
    assert result["p_two_sided"] == pytest.approx(float(ref.pvalue))
    assert result["p_lower"] == pytest.approx(float(one.pvalue))
    assert result["t"] == pytest.approx(float(ref.statistic)) and result["df"] == pytest.approx(float(ref.df))


def test_compare_t_has_the_sign_of_the_difference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """B faster than A: B - A is negative, and so is t (it once had the sign of A - B)."""
    records = tmp_path / "records"
    a = write_record(records, "2026-08-01_Slow", runs=3, step_ms=60.0)
    b = write_record(records, "2026-08-02_Fast", runs=3, step_ms=50.0, seed=9)
    for first, second, sign in ((a, b, "-"), (b, a, "+")):
        assert main(["compare", "--json", str(first), str(second)]) == 0
        res = json.loads(capsys.readouterr().out)["comparison"]["train_time_ms"]
        assert (res["difference"] < 0) == (res["t"] < 0) == (sign == "-")
        assert main(["compare", str(first), str(second)]) == 0
        line = next(ln for ln in capsys.readouterr().out.splitlines() if "t-test on time" in ln)
        assert line.startswith(f"Welch's t-test on time: B - A = {sign}") and f"t(B - A) = {sign}" in line, line
