"""Whole smoke runs of train_gpt.py: 1 vs 2 processes, the log grammar, and how runs stop on bad input."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

TRAINER = REPO_ROOT / "train_gpt.py"
SEPARATOR = "=" * 100
VAL = re.compile(r"^step:(\d+)/(\d+) val_loss:(\d+\.\d{4}|nan|inf) train_time:(\d+)ms step_avg:(\d+\.\d{2})ms$")
TRAIN = re.compile(r"^step:(\d+)/(\d+) train_loss:(\d+\.\d{4}|nan|inf) train_time:(\d+)ms step_avg:(\d+\.\d{2})ms$")
MEMORY = re.compile(r"^peak memory allocated: \d+ MiB reserved: \d+ MiB$")
WARMUP = re.compile(r"^warm-up: \d+ untimed steps \(compilation included\) took \d+\.\ds$")
CONFIG_EXTRA_KEYS = {
    "preset", "track", "world_size", "grad_accum_steps", "global_batch_tokens", "seed", "run_id", "val_tokens",
    "target_val_loss", "parallelism", "device", "step_avg_excluded_steps", "overrides", "run",
}  # fmt: skip
STEPS = 30
OVERRIDES = {"num_iterations": STEPS, "val_loss_every": 10}


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """Small synthetic shards in the smoke preset's vocabulary (512), made by the data package's generator. A train
    shard feeds 19 steps of 2,048 tokens (+1), so the 30-step runs go on at the second shard's first token."""
    out = tmp_path_factory.mktemp("synthetic")
    sizes = ["--train-shards", "2", "--shard-tokens", "40000", "--val-tokens", "16384"]
    cmd = [sys.executable, "data/synthetic.py", "--out", str(out), *sizes]
    subprocess.run(cmd, cwd=REPO_ROOT, check=True, capture_output=True)
    return out


def launch(
    data: Path, log_dir: Path, nproc: int, overrides: dict | None = None, **env: str
) -> subprocess.CompletedProcess:
    """torchrun, as run.sh launches it, with one CPU thread per process so that 1 and 2 processes compare fairly."""
    full_env = dict(os.environ, SPEEDRUN_PRESET="smoke", DATA_PATH=str(data), LOG_DIR=str(log_dir), SEED="1")
    full_env.update(OMP_NUM_THREADS="1", SPEEDRUN_OVERRIDES=json.dumps(OVERRIDES if overrides is None else overrides))
    full_env.update(env)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(TRAINER)]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=300)


def only_log(log_dir: Path) -> Path:
    logs = list(log_dir.glob("*.txt"))
    assert len(logs) == 1, f"expected one log in {log_dir}, found {logs}"
    return logs[0]


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="session")
def smoke_logs(synthetic_data, exports, tmp_path_factory) -> dict[int, Path]:
    """The smoke run on 1 and 2 processes; the 1-process one exports its final weights (SPEEDRUN_EXPORT)."""
    logs = {}
    for nproc in (1, 2):
        log_dir = tmp_path_factory.mktemp(f"logs{nproc}")
        result = launch(synthetic_data, log_dir, nproc, **({"SPEEDRUN_EXPORT": str(exports)} if nproc == 1 else {}))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        logs[nproc] = only_log(log_dir)
    return logs


def val_losses(log: Path) -> list[tuple[int, float]]:
    return [(int(m[1]), float(m[3])) for line in log.read_text().splitlines() if (m := VAL.match(line))]


def train_losses(log: Path) -> list[tuple[int, float]]:
    return [(int(m[1]), float(m[3])) for line in log.read_text().splitlines() if (m := TRAIN.match(line))]


@pytest.mark.slow
def test_one_and_two_processes_give_the_same_losses(smoke_logs) -> None:
    one, two = val_losses(smoke_logs[1]), val_losses(smoke_logs[2])
    assert [s for s, _ in one] == [0, 10, 20, 30]
    # Not merely close: gradients and losses are summed in the same order on 1 and 2 processes (TreeSum,
    # gather_window_losses), so every printed loss is identical.
    assert one == two
    assert len(train_losses(smoke_logs[1])) == STEPS
    assert train_losses(smoke_logs[1]) == train_losses(smoke_logs[2])
    assert one[0][1] == pytest.approx(math.log(512), abs=1e-3)  # ln(vocab) at initialisation
    assert one[-1][1] < one[0][1] - 2.0, f"the smoke run did not learn: {one}"
    configs = [
        json.loads(next(ln for ln in log.read_text().splitlines() if ln.startswith("config: "))[8:])
        for log in smoke_logs.values()
    ]
    assert [(c["world_size"], c["grad_accum_steps"], c["global_batch_tokens"]) for c in configs] == [
        (1, 8, 2048),
        (2, 4, 2048),
    ]


@pytest.mark.slow
def test_log_grammar(smoke_logs, synthetic_data, exports) -> None:
    """The frozen surface docs/log-format.md promises: tools/ parses exactly this."""
    text = smoke_logs[1].read_text(encoding="utf-8")
    source, env, metrics = text.split(SEPARATOR + "\n", 2)
    assert source == TRAINER.read_text(encoding="utf-8")  # the code, byte for byte
    env_lines = env.splitlines()
    assert env_lines[0].startswith("Running Python ") and re.match(
        r"Running PyTorch \S+ compiled for (CUDA \S+|CPU)$", env_lines[1]
    )
    assert env_lines[2] == "nvidia-smi: not available" or "NVIDIA-SMI" in env
    host = json.loads(next(ln for ln in env_lines if ln.startswith("host: "))[len("host: ") :])
    assert set(host) == {"host_id", "gpu_uuids"} and re.fullmatch(r"[0-9a-f]{16}", host["host_id"])
    assert host["gpu_uuids"] == []  # a CPU run
    config = json.loads(next(ln for ln in env_lines if ln.startswith("config: "))[len("config: ") :])
    data = json.loads(next(ln for ln in env_lines if ln.startswith("data: "))[len("data: ") :])
    sys.path.insert(0, str(REPO_ROOT))
    import train_gpt

    fields = {f.name for f in train_gpt.dataclasses.fields(train_gpt.Hyperparameters)}
    assert set(config) == fields | CONFIG_EXTRA_KEYS
    assert config["preset"] == "smoke" and config["track"] == "smoke" and config["target_val_loss"] is None
    assert config["overrides"] == OVERRIDES and config["seed"] == 1 and config["device"] == "cpu"
    assert config["run_id"] == smoke_logs[1].stem and config["step_avg_excluded_steps"] == 0
    run = {"data_path": str(synthetic_data), "log_dir": str(smoke_logs[1].parent), "export_dir": str(exports)}
    assert config["parallelism"] == "ddp" and config["run"] == run  # the RunSettings but the seed, logged above
    params = json.loads(next(ln for ln in env_lines if ln.startswith("parameters: "))[len("parameters: ") :])
    assert params["total"] == sum(params[k] for k in ("hidden", "embed", "head", "scalar")) > 0
    assert set(data) == {"path", "vocab_size", "shards"} and data["vocab_size"] == 512
    assert [(s["name"], s["split"]) for s in data["shards"]] == [
        ("synthetic_val_000000.bin", "val"),
        ("synthetic_train_000001.bin", "train"),
        ("synthetic_train_000002.bin", "train"),
    ]
    assert all(
        set(s) == {"name", "split", "tokens", "sha256"} and re.fullmatch(r"[0-9a-f]{64}", s["sha256"])
        for s in data["shards"]
    )

    lines = metrics.splitlines()
    assert WARMUP.match(lines.pop(0)), "the metric section opens with the warm-up line"
    assert lines.pop().startswith(f"export: final weights written to {config['run']['export_dir']}/{config['run_id']}")
    assert all(VAL.match(ln) or TRAIN.match(ln) or MEMORY.match(ln) for ln in lines), [
        ln for ln in lines if not (VAL.match(ln) or TRAIN.match(ln) or MEMORY.match(ln))
    ]
    assert MEMORY.match(lines[-1]) and VAL.match(lines[-2])
    parsed = [(int(m[1]), int(m[2]), int(m[4]), float(m[5])) for ln in lines if (m := VAL.match(ln) or TRAIN.match(ln))]
    assert all(total == STEPS for _, total, _, _ in parsed) and parsed[-1][0] == STEPS
    assert [s for s, *_ in parsed if s] == sorted(s for s, *_ in parsed if s)  # steps increase
    times = [t for _, _, t, _ in parsed]
    assert times == sorted(times)  # train_time never decreases
    for step, _, ms, avg in parsed:
        assert abs(avg - ms / max(step, 1)) <= 0.5 / max(step, 1) + 0.006  # step_avg = train_time / step, rounded
    assert sum(1 for ln in lines if TRAIN.match(ln)) == STEPS  # one train line per step


@pytest.mark.slow
def test_the_exported_weights_give_the_logs_final_val_loss(smoke_logs, exports, capsys) -> None:
    """SPEEDRUN_EXPORT: the record's model, usable by the model tools: `tools evaluate` on the export computes
    the log's final validation loss."""
    final = val_losses(smoke_logs[1])[-1][1]
    folder = exports / smoke_logs[1].stem
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert (config["format"], config["preset"], config["step"], config["run_id"]) == (
        "speedrun-export-v1",
        "smoke",
        STEPS,
        smoke_logs[1].stem,
    )
    sys.path.insert(0, str(REPO_ROOT))
    from tools.cli import main

    assert main(["evaluate", "--checkpoint", str(folder), "--device", "cpu", "--no-compile", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)["val_loss"]
    assert result["data"] == config["data_path"] and f"{result['val_loss']:.4f}" == f"{final:.4f}"


@pytest.mark.slow
def test_non_finite_loss_stops_the_run_and_keeps_the_log(synthetic_data, tmp_path) -> None:
    # a huge lr on the scalars (residual and skip weights) blows the activations up within a few steps
    result = launch(synthetic_data, tmp_path, 1, {"num_iterations": 20, "val_loss_every": 0, "adam_lr_scalar": 1e30})
    assert result.returncode != 0
    m = re.search(r"error: the training loss became (nan|inf|-inf) at step (\d+); stopping the run", result.stderr)
    assert m, result.stderr[-3000:]
    step = int(m[2])
    metrics = only_log(tmp_path).read_text().split(SEPARATOR + "\n")[2]
    assert metrics.endswith(f"The log up to here is kept in {only_log(tmp_path)}.\n")
    train_lines = [ln for ln in metrics.splitlines() if TRAIN.match(ln)]
    assert train_lines[-1].startswith(f"step:{step}/20 train_loss:{m[1]} ") and len(train_lines) == step
    assert "peak memory" not in metrics
    assert (
        "[rank0]: Traceback" not in result.stderr and f'File "{TRAINER}"' not in result.stderr
    )  # torchrun's own report may follow


@pytest.mark.slow
def test_missing_data_is_one_clear_error(tmp_path) -> None:
    missing = tmp_path / "nothing-here"
    env = dict(os.environ, SPEEDRUN_PRESET="smoke", DATA_PATH=str(missing), LOG_DIR=str(tmp_path / "logs"))
    result = subprocess.run(
        [sys.executable, str(TRAINER)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: data folder {missing} does not exist" in result.stderr
    assert "python data/synthetic.py --out" in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing half-written


def test_gpu_check_parts_fail_alone_and_leave_their_results(tmp_path, capsys) -> None:
    """On the device one run must leave the most it can: a failing part is printed whole and counted, the next
    part still runs, one the time left cannot fit is skipped with a message, and the JSON is on disk after each."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import gpu_check

    paths = [tmp_path / "a.json", tmp_path / "out" / "gpu_check.json"]
    res = gpu_check.Results(paths, deadline=gpu_check.time.perf_counter() + 60)

    def broken() -> None:
        raise RuntimeError("CUBLAS_STATUS_NOT_SUPPORTED in _scaled_mm")

    assert res.part("fp8_op", 0, broken) is None
    assert json.loads(paths[1].read_text())["failed"] == ["fp8_op"]  # written before the next part starts
    assert res.part("matmul", 0, lambda: 42) == 42
    assert res.part("compile_vs_eager", 3600, lambda: pytest.fail("ran past the budget")) is None
    out, err = capsys.readouterr()
    assert "[fp8_op] FAILED" in out and "CUBLAS_STATUS_NOT_SUPPORTED" in out and "Traceback" in err
    assert "[compile_vs_eager] skipped: " in out and "needs ~3600 s" in out
    saved = [json.loads(p.read_text()) for p in paths]
    assert saved[0] == saved[1] and saved[0]["failed"] == ["fp8_op"]
    assert {k: v["status"] for k, v in saved[0]["parts"].items()} == dict(
        fp8_op="failed", matmul="ok", compile_vs_eager="skipped"
    )
    assert "CUBLAS_STATUS_NOT_SUPPORTED" in saved[0]["parts"]["fp8_op"]["error"]


@pytest.mark.slow
def test_gpu_check_runs_in_its_reduced_cpu_mode(tmp_path) -> None:
    """bench/gpu_check.py --cpu-smoke: every part of the one-GPU check (versions, matmul rate, FP8 head off and on,
    step time, MFU, peak memory, the val-loss run) on a tiny model, without compilation, so that it cannot rot."""
    out = tmp_path / "check.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", OUT=str(tmp_path / "out"))
    cmd = [sys.executable, "bench/gpu_check.py", "--cpu-smoke", "--json", str(out)]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for line in ("versions: Python ", "bf16 matmul: ", "FLOPs per token: 6 x ", "FP8 head off: ", "FP8 head on : "):
        assert line in result.stdout, line
    check = json.loads(out.read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == check
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == check  # $OUT: the device's results
    assert check["failed"] == [] and all(p["status"] == "ok" for p in check["parts"].values())
    assert set(check["parts"]) >= {"fp8_op", "flex_attention", "fp8_head_on", "eval", "val_loss", "fp8_head_off"}
    sys.path.insert(0, str(REPO_ROOT))
    import train_gpt

    # 6 x (hidden matrices + head) and, at step 100's 1-block window of 128 tokens, 64.5 keys per query on average
    # over 5 attention layers of 2 heads x 32
    args = train_gpt.dataclasses.replace(train_gpt.PRESETS["smoke"], num_layers=6, attention_pattern="LS-SSL")
    counts = train_gpt.parameter_counts(args)
    flops = check["flops_per_token"]
    assert flops["matmul"] == 6 * (counts["hidden"] + counts["head"]) and flops["window_blocks"] == 1
    assert flops["attention"] == 12 * 2 * 32 * 64.5 * 5
    assert [c["fp8_head"] for c in check["configs"]] == [True, False]  # the record's configuration first
    for c in check["configs"]:
        assert c["step_ms"] > 0 and abs(c["tokens_per_s"] - 2048 / c["step_ms"] * 1000) < 1
        # on CPU the model's fp32 matmuls can outrun the bf16 matmul the rate was measured on (CI saw 8.9): the
        # fraction is a GPU's number, only its presence is checked here
        assert c["mfu_measured"] > 0 and c["peak_allocated_mib"] > 0
    val = check["val"]
    assert [v["step"] for v in val] == [0, 1, 2] and all(v["record"] is None for v in val)
    assert val[0]["val_loss"] == pytest.approx(math.log(512), abs=1e-3) and val[2]["val_loss"] < val[0]["val_loss"]
    assert check["data"]["fineweb"] is False
    # on a machine without CUDA the GPU mode refuses to start; a broken setup is an error, never a skip
    refused = subprocess.run(
        [sys.executable, "bench/gpu_check.py"],
        cwd=REPO_ROOT,
        env=dict(env, CUDA_VISIBLE_DEVICES=""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2 and "error: no CUDA device" in refused.stderr
    (tmp_path / "empty").mkdir()
    broken = subprocess.run(
        [*cmd, "--data", str(tmp_path / "empty")], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert broken.returncode == 1 and "error: data folder" in broken.stderr and "holds no val shards" in broken.stderr
