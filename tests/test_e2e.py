"""What the README promises a newcomer on a machine without a GPU, end to end and for real:

./run.sh makes synthetic shards, trains the smoke preset, writes a log and verifies it as a smoke run; the tools
then parse that log, refuse it as a track_1_short record (for the right reasons) and regenerate a leaderboard that
lists it as failed, byte for byte the same on a second regeneration.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

STEPS = 40
OVERRIDES = {"num_iterations": STEPS, "val_loss_every": 20}
RECORD = "2026-11-21_CpuSmoke"


def tools(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`./run.sh` exactly as the README says, with its outputs pointed at a temporary folder and fewer steps."""
    tmp = tmp_path_factory.mktemp("e2e")
    env = dict(
        os.environ,
        DATA_PATH=str(tmp / "synthetic"),  # absent: run.sh must make the shards itself
        LOG_DIR=str(tmp / "logs"),
        SPEEDRUN_OVERRIDES=json.dumps(OVERRIDES),
        CUDA_VISIBLE_DEVICES="",  # the CPU path, even on a machine that has a GPU
        OMP_NUM_THREADS="1",
    )
    env.pop("SPEEDRUN_PRESET", None)
    result = subprocess.run(["./run.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result, tmp


@pytest.mark.slow
def test_run_sh_trains_logs_and_verifies_on_cpu(smoke_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, tmp = smoke_run
    out = result.stdout
    assert "No CUDA device found: running the smoke preset on CPU." in out
    assert (tmp / "synthetic" / "meta.json").is_file(), "run.sh did not make the synthetic shards"
    logs = list((tmp / "logs").glob("*.txt"))
    assert len(logs) == 1
    assert f"log: {logs[0]}" in out
    assert f"verdict: the log verifies as a smoke run ({logs[0]})" in out

    # the log carries the exact code that ran, then the environment and the metrics
    text = logs[0].read_text()
    code, env_block, metrics = text.split("=" * 100 + "\n")
    assert code == (REPO_ROOT / "train_gpt.py").read_text()
    config = json.loads(next(ln for ln in env_block.splitlines() if ln.startswith("config: "))[len("config: ") :])
    assert (config["preset"], config["track"], config["overrides"]) == ("smoke", "smoke", OVERRIDES)
    assert config["seed"] == 0  # run.sh's fixed smoke seed

    facts = json.loads(tools("parse", str(logs[0]), "--json").stdout)
    assert (facts["final_step"], facts["total_steps"]) == (STEPS, STEPS)
    curve = [loss for _, loss, _ in facts["val_curve"]]
    assert [step for step, _, _ in facts["val_curve"]] == [0, 20, 40]
    assert curve[-1] < curve[0] - 1.0, f"the smoke model did not learn: {curve}"
    assert metrics.rstrip().splitlines()[-1].startswith("peak memory allocated: ")

    verdict = json.loads(tools("verify", str(logs[0]), "--track", "smoke", "--json").stdout)
    assert verdict["valid"] and verdict["failures"] == []


@pytest.mark.slow
def test_a_smoke_log_is_refused_as_a_record_and_shown_as_failed(
    smoke_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, tmp = smoke_run
    log = next((tmp / "logs").glob("*.txt"))
    record = tmp / "records" / "track_1_short" / RECORD
    record.mkdir(parents=True)
    shutil.copy(log, record / log.name)
    (record / "README.md").write_text(
        "---\ntitle: CPU smoke run\ndate: 2026-11-21\nauthors: [ci]\n"
        "description: A smoke log submitted as a record.\nbaseline: null\nsystems_only: false\n---\n"
    )

    verify = tools("verify", str(record), "--json")
    assert verify.returncode == 1
    verdict = json.loads(verify.stdout)
    assert not verdict["valid"] and not verdict["is_new_record"]
    failed = {f["rule"] for f in verdict["failures"]}
    # a CPU log (no nvidia-smi), the smoke preset with overrides, and one run where the t-test needs three
    assert {"hardware", "config", "target"} <= failed, verdict["failures"]

    out = tmp / "leaderboard"
    assert tools("leaderboard", "--records", str(tmp / "records"), "--out", str(out)).returncode == 0
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert {"README.md", "leaderboard.csv", "index.html"} <= {str(p) for p in first}
    assert any(str(p).startswith("plots/track_1_short/") and str(p).endswith(".svg") for p in first)
    readme = first[Path("README.md")].decode()
    row = next(ln for ln in readme.splitlines() if RECORD in ln)
    assert "failed: " in row and "hardware" in row
    csv_row = next(ln for ln in first[Path("leaderboard.csv")].decode().splitlines() if RECORD in ln)
    assert re.search(r",failed,[^,]*hardware", csv_row)
    assert RECORD in first[Path("index.html")].decode()

    # deterministic: a second regeneration gives the same bytes, and check agrees the folder is current
    shutil.rmtree(out)
    assert tools("leaderboard", "--records", str(tmp / "records"), "--out", str(out)).returncode == 0
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == first
    check = tools("check", "--records", str(tmp / "records"), "--leaderboard", str(out))
    assert check.returncode == 1, "check must fail while a record breaks the rules"
    assert "hardware" in check.stdout + check.stderr


@pytest.mark.slow
def test_run_sh_repeats_the_trainers_error_after_torchruns_report(tmp_path: Path) -> None:
    """A run that dies mid-way ends in torchrun's own report; run.sh says the trainer's message again, last."""
    synthetic = tmp_path / "synthetic"
    made = subprocess.run([sys.executable, "data/synthetic.py", "--out", str(synthetic)], cwd=REPO_ROOT)
    assert made.returncode == 0
    env = dict(
        os.environ,
        DATA_PATH=str(synthetic),
        LOG_DIR=str(tmp_path / "logs"),
        SPEEDRUN_OVERRIDES='{"adam_lr_embed": Infinity, "num_iterations": 10}',  # the embeddings blow up at once
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
    )
    env.pop("SPEEDRUN_PRESET", None)
    result = subprocess.run(["./run.sh"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    (log,) = (tmp_path / "logs").glob("*.txt")
    last = result.stderr.rstrip().splitlines()[-1]
    assert re.fullmatch(
        rf"training stopped: the training loss became nan at step \d+; stopping the run\. "
        rf"The log up to here is kept in {re.escape(str(log))}\.",
        last,
    ), result.stderr[-3000:]
    assert "step:1/10 train_loss:" in log.read_text()  # the log up to the failure is kept


@pytest.mark.slow  # run.sh: a shell and a Python that imports torch per case
def test_run_sh_refuses_a_bad_process_count_before_any_work(tmp_path: Path) -> None:
    env = dict(os.environ, LOG_DIR=str(tmp_path / "logs"), DATA_PATH=str(tmp_path / "none"), CUDA_VISIBLE_DEVICES="")
    for nproc in ("abc", "0", "-2"):
        result = subprocess.run(
            ["./run.sh"], cwd=REPO_ROOT, env=dict(env, NPROC=nproc), capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f"error: NPROC={nproc} is not a number of processes; give a positive whole number, e.g. NPROC=2 ./run.sh"
        )
    assert not (tmp_path / "none").exists() and not list((tmp_path / "logs").glob("*.txt"))


@pytest.mark.slow  # run.sh: a shell and a Python that imports torch per case
def test_run_sh_sends_each_preset_to_its_file(tmp_path: Path) -> None:
    """run.sh launches train_scale.py for the ladder's presets (its case list is train_scale.PRESETS) and
    train_gpt.py for the record file's; the wrong file's preflight would refuse the preset."""
    sys.path.insert(0, str(REPO_ROOT))
    import train_gpt
    import train_scale

    script = (REPO_ROOT / "run.sh").read_text(encoding="utf-8")
    (listed,) = re.findall(r"^\s+([\w. |]+)\) trainer=train_scale ;;$", script, re.M)
    assert {p.strip() for p in listed.split("|")} == set(train_scale.PRESETS)
    assert not set(train_scale.PRESETS) & set(train_gpt.PRESETS)
    env = dict(os.environ, LOG_DIR=str(tmp_path / "logs"), DATA_PATH=str(tmp_path / "none"), CUDA_VISIBLE_DEVICES="")
    for preset in ("70b", "medium"):  # a file that does not know the preset would say "not a preset" instead
        result = subprocess.run(
            ["./run.sh"],
            cwd=REPO_ROOT,
            env=dict(env, SPEEDRUN_PRESET=preset),
            capture_output=True,
            text=True,
            timeout=120,
        )
        # no shards there: the file's own preflight says so before torchrun starts (and before any log)
        assert result.returncode == 1 and f"error: data folder {tmp_path / 'none'} does not exist" in result.stderr
        assert "is not a preset" not in result.stderr and not list((tmp_path / "logs").glob("*.txt"))
