"""Whole runs of train_gpt.py beyond one process and one go: FSDP2 on 1 and 2 processes, checkpoints resumed
on the same and on another world size and parallelism, a two-"node" c10d launch, and the scale benchmark.

Every run is the smoke model on synthetic data with one CPU thread per process. What is asserted is what
the design gives: 1 and 2 processes, and a resumed run and an uninterrupted one, print identical losses and
end with bitwise identical weights and optimizer state; only a change of parallelism (ddp <-> fsdp, which
adds the windows' gradients in another order) moves the numbers, by float rounding."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
import train_gpt as tg  # noqa: E402

TRAINER = REPO_ROOT / "train_gpt.py"
STEPS, EVERY = 16, 8
METRIC = re.compile(r"^step:(\d+)/(\d+) (val_loss|train_loss):(\S+) train_time:(\d+)ms step_avg:(\S+)ms$")
# the FP8 head on, so that its op runs on all-gathered FSDP2 weights (2^21 suits 256-token windows)
FSDP = {
    "num_iterations": STEPS,
    "val_loss_every": EVERY,
    "parallelism": "fsdp",
    "fp8_head": True,
    "fp8_grad_scale": 2.0**21,
}
DDP = {"num_iterations": STEPS, "val_loss_every": EVERY}
CHECKPOINT_KEYS = {
    "format",
    "preset",
    "hyperparameters",
    "step",
    "run_id",
    "world_size",
    "parallelism",
    "train_time_ms",
}

pytestmark = [
    pytest.mark.slow,
    # dcp.load in this one process says it assumes one process, even when told so (no_dist=True)
    pytest.mark.filterwarnings("ignore:torch.distributed is disabled:UserWarning"),
]


@dataclass
class Run:
    log: Path
    checkpoints: dict[int, Path]  # step -> step_<NNNNNN> folder

    @property
    def text(self) -> str:
        return self.log.read_text(encoding="utf-8")

    @property
    def config(self) -> dict:
        return json.loads(next(ln for ln in self.text.splitlines() if ln.startswith("config: "))[len("config: ") :])

    def metrics(self, after: int = -1) -> list[tuple[int, str, str]]:
        """(step, kind, loss text) of the metric lines past step `after`."""
        lines = (METRIC.match(ln) for ln in self.text.splitlines())
        return [(int(m[1]), m[3], m[4]) for m in lines if m and int(m[1]) > after]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    # a train shard feeds 9 steps of 2,048 tokens (+1): runs resumed at step 8 cross into the second shard
    sizes = ["--train-shards", "2", "--shard-tokens", "20000", "--val-tokens", "16384"]
    subprocess.run([sys.executable, "data/synthetic.py", "--out", str(out), *sizes], cwd=REPO_ROOT, check=True)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(data: Path, out: Path, nproc: int, overrides: dict, nnodes: int = 1, **env: str) -> Run:
    """torchrun as a user runs it, one CPU thread per process. nnodes > 1 starts that many launchers here, each
    a "node" of nproc processes meeting through a c10d rendezvous, as on a cluster."""
    full_env = dict(os.environ, SPEEDRUN_PRESET="smoke", DATA_PATH=str(data), LOG_DIR=str(out / "logs"), SEED="1")
    full_env.update(OMP_NUM_THREADS="1", SPEEDRUN_OVERRIDES=json.dumps(overrides), SPEEDRUN_CHECKPOINT_DIR=str(out))
    for key in ("SPEEDRUN_RESUME", "SPEEDRUN_CHECKPOINT_EVERY"):
        full_env.pop(key, None)
    full_env.update(env)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    if nnodes == 1:
        cmds = [[*cmd, "--standalone"]]
    else:
        port = free_port()
        rdzv = ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id=test{port}"]
        cmds = [[*cmd, f"--nnodes={nnodes}", *rdzv] for _ in range(nnodes)]
    out.mkdir(parents=True, exist_ok=True)
    outputs = [out / f"launcher{i}.out" for i in range(len(cmds))]  # files, not pipes: no launcher blocks on one
    procs = []
    for c, output in zip(cmds, outputs, strict=True):
        with open(output, "w") as f:
            procs.append(subprocess.Popen([*c, str(TRAINER)], cwd=REPO_ROOT, env=full_env, stdout=f, stderr=f))
    for p in procs:
        p.wait(timeout=300)
    assert all(p.returncode == 0 for p in procs), "\n".join(o.read_text()[-3000:] for o in outputs)
    logs = list((out / "logs").glob("*.txt"))
    assert len(logs) == 1, logs
    found = {int(p.name.removeprefix("step_")): p for p in out.glob(f"{logs[0].stem}/step_*")}
    return Run(logs[0], found)


def read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a DCP checkpoint, whole, read in this process (no process group)."""
    meta = dcp.FileSystemReader(folder).read_metadata().state_dict_metadata
    state = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in meta.items() if hasattr(m, "size")}
    dcp.load(state, checkpoint_id=folder, no_dist=True)
    return state


def assert_same_state(a: Path, b: Path) -> None:
    """Bitwise equal weights, optimizer state, step, data position and RNG; only the measured time differs."""
    x, y = read_checkpoint(a), read_checkpoint(b)
    assert set(x) == set(y)
    differ = [k for k in x if k != "train.train_time_ms" and not torch.equal(x[k], y[k])]
    assert not differ, differ[:10]


@pytest.fixture(scope="module")
def fsdp_one(data, tmp_path_factory) -> Run:
    return launch(data, tmp_path_factory.mktemp("fsdp1"), 1, FSDP, SPEEDRUN_CHECKPOINT_EVERY=str(EVERY))


@pytest.fixture(scope="module")
def fsdp_two(data, tmp_path_factory) -> Run:
    return launch(data, tmp_path_factory.mktemp("fsdp2"), 2, FSDP, SPEEDRUN_CHECKPOINT_EVERY=str(EVERY))


@pytest.fixture(scope="module")
def ddp_one(data, tmp_path_factory) -> Run:
    return launch(data, tmp_path_factory.mktemp("ddp1"), 1, DDP, SPEEDRUN_CHECKPOINT_EVERY=str(EVERY))


def test_fsdp_on_one_and_two_processes_is_bitwise_the_same_run(fsdp_one: Run, fsdp_two: Run) -> None:
    assert [(c["parallelism"], c["world_size"], c["grad_accum_steps"]) for c in (fsdp_one.config, fsdp_two.config)] == [
        ("fsdp", 1, 8),
        ("fsdp", 2, 4),
    ]
    assert fsdp_one.metrics() == fsdp_two.metrics() and len(fsdp_one.metrics()) == STEPS + 3
    assert float(fsdp_one.metrics()[-1][2]) < float(fsdp_one.metrics()[0][2]) - 2.0  # it learns
    assert sorted(fsdp_one.checkpoints) == sorted(fsdp_two.checkpoints) == [EVERY, STEPS]
    for step in (EVERY, STEPS):
        assert_same_state(fsdp_one.checkpoints[step], fsdp_two.checkpoints[step])


def test_checkpoint_layout_and_a_weights_only_reader(fsdp_two: Run, data: Path) -> None:
    """The contract tools/ reads: config.json last, "model" = GPT(args).state_dict(), loadable without any
    process group; the weights give the log's final validation loss."""
    folder = fsdp_two.checkpoints[STEPS]
    meta = json.loads((folder / "config.json").read_text())
    assert set(meta) == CHECKPOINT_KEYS and meta["format"] == "speedrun-checkpoint-v1"
    assert (meta["step"], meta["world_size"], meta["parallelism"], meta["run_id"]) == (
        STEPS,
        2,
        "fsdp",
        fsdp_two.log.stem,
    )
    assert fsdp_two.config["checkpoint_dir"] == str(folder.parent) and fsdp_two.config["checkpoint_every"] == EVERY
    assert f"checkpoint: step {STEPS} saved to {folder}" in fsdp_two.text
    args = tg.Hyperparameters(**dict(meta["hyperparameters"], data_path=str(data)))
    model = tg.GPT(args)
    stored = {k.split(".", 1)[1] for k in read_checkpoint(folder) if k.startswith("model.")}
    assert stored == set(model.state_dict())
    dcp.load({"model": model.state_dict()}, checkpoint_id=folder, no_dist=True)
    d = tg.Dist(0, 1, 0, torch.device("cpu"))
    val = tg.TokenWindows(tg.plan_shards(args, "val", args.val_tokens + 1), args.val_seq_len, d.device)
    final = [loss for step, kind, loss in fsdp_two.metrics() if kind == "val_loss"][-1]
    assert f"{tg.evaluate(model, val, args, d, STEPS):.4f}" == final


def test_resume_on_two_processes_continues_exactly(fsdp_two: Run, data: Path, tmp_path: Path) -> None:
    # saving every 2 steps, keeping the newest checkpoint only: saving changes no number the run computes
    source_folder = fsdp_two.checkpoints[EVERY]
    keep = dict(SPEEDRUN_CHECKPOINT_EVERY="2", SPEEDRUN_CHECKPOINT_KEEP="1")
    resumed = launch(data, tmp_path, 2, FSDP, SPEEDRUN_RESUME=str(source_folder), **keep)
    source = fsdp_two.config
    assert resumed.config["resumed_from"] == dict(
        path=str(fsdp_two.checkpoints[EVERY]), step=EVERY, run_id=source["run_id"]
    )
    assert resumed.config["run_id"] != source["run_id"]
    # the new log starts with the validation at the resume step, on the clock of the checkpoint
    lines = [ln for ln in resumed.text.split(tg.SEPARATOR + "\n")[2].splitlines() if METRIC.match(ln)]
    first = next(ln for ln in fsdp_two.text.splitlines() if ln.startswith(f"step:{EVERY}/{STEPS} val_loss:"))
    assert lines[0] == first
    assert resumed.metrics() == fsdp_two.metrics(after=EVERY - 1)[1:]  # the original's step-8 train line is not redone
    times = [int(METRIC.match(ln)[5]) for ln in lines]
    assert times == sorted(times)
    assert sorted(resumed.checkpoints) == [STEPS]
    assert_same_state(resumed.checkpoints[STEPS], fsdp_two.checkpoints[STEPS])
    run_folder = resumed.checkpoints[STEPS].parent
    removed = [ln for ln in resumed.text.splitlines() if ln.startswith("checkpoint: removed ")]
    assert removed == [
        f"checkpoint: removed {run_folder / f'step_{s:06d}'} (SPEEDRUN_CHECKPOINT_KEEP=1)" for s in (10, 12, 14)
    ]
    assert (source_folder / "config.json").is_file()  # the checkpoint it resumed from is another run's: kept
    verdict = subprocess.run(
        [sys.executable, "-m", "tools", "verify", str(resumed.log), "--track", "smoke"], cwd=REPO_ROOT
    )
    assert verdict.returncode == 0, "the checkpoint lines must not disturb the log's grammar"


def test_resume_on_one_process_from_a_two_process_checkpoint(fsdp_two: Run, data: Path, tmp_path: Path) -> None:
    resumed = launch(data, tmp_path, 1, FSDP, SPEEDRUN_RESUME=str(fsdp_two.checkpoints[EVERY]))
    assert resumed.config["world_size"] == 1 and resumed.config["checkpoint_dir"] is None
    assert resumed.metrics() == fsdp_two.metrics(after=EVERY - 1)[1:]


def test_ddp_checkpoint_resumes_on_two_processes_and_under_fsdp(ddp_one: Run, data: Path, tmp_path: Path) -> None:
    """Muon keeps a replicated matrix's momentum on its owner, which depends on the world size: the checkpoint
    stores whole buffers by name, so 2 processes pick up 1 process's state exactly."""
    checkpoint = str(ddp_one.checkpoints[EVERY])
    same = launch(data, tmp_path / "ddp", 2, DDP, SPEEDRUN_RESUME=checkpoint, SPEEDRUN_CHECKPOINT_EVERY="0")
    assert same.metrics() == ddp_one.metrics(after=EVERY - 1)[1:]
    assert_same_state(same.checkpoints[STEPS], ddp_one.checkpoints[STEPS])
    # fsdp adds the windows' gradients in another order than ddp's tree: the same run up to float rounding, which
    # bf16 Newton-Schulz amplifies to ~1e-3 in the weights after 8 steps
    sharded = launch(data, tmp_path / "fsdp", 2, dict(DDP, parallelism="fsdp"), SPEEDRUN_RESUME=checkpoint)
    ours, theirs = sharded.metrics(), ddp_one.metrics(after=EVERY - 1)[1:]
    assert [(s, k) for s, k, _ in ours] == [(s, k) for s, k, _ in theirs]
    assert ours[0] == theirs[0]  # the resume step's validation: the very weights
    assert all(abs(float(a[2]) - float(b[2])) <= 0.01 for a, b in zip(ours, theirs, strict=True)), (ours, theirs)


def test_two_node_c10d_launch_is_the_two_process_run(fsdp_two: Run, data: Path, tmp_path: Path) -> None:
    """`torchrun --nnodes=2 --rdzv-backend=c10d` twice on this machine, one process per "node"."""
    nodes = launch(data, tmp_path, 1, FSDP, nnodes=2)
    assert nodes.config["world_size"] == 2
    assert nodes.metrics() == fsdp_two.metrics()


def test_scale_benchmark_runs_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "bench/bench_scale.py", "--preset", "smoke", "--overrides", '{"parallelism": "fsdp"}']
    cmd += ["--nproc", "1", "--steps", "3", "--json", str(out), "--log-dir", str(tmp_path / "logs")]
    (tmp_path / "logs").mkdir()
    decoy = tmp_path / "logs" / "ffffffff-an-earlier-run.txt"  # sorts after any uuid: not this run's log
    decoy.write_text("an earlier run\n")
    result = subprocess.run(
        cmd, cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bench = json.loads(out.read_text())
    assert (bench["preset"], bench["parallelism"], bench["world_size"], bench["steps"]) == ("smoke", "fsdp", 1, 3)
    assert bench["log"] != str(decoy) and Path(bench["log"]).parent == tmp_path / "logs"
    assert (
        bench["warmup_s"] >= 0
        and bench["step_ms"] > 0
        and bench["peak_allocated_mib"] > 0
        and bench["parameters"] == 737332
    )
    assert bench["tokens_per_s"] == round(bench["global_batch_tokens"] / bench["step_ms"] * 1000)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == bench


def test_a_checkpoint_with_damaged_data_fails_in_one_message(ddp_one: Run, data: Path, tmp_path: Path) -> None:
    """.metadata intact, a data file cut short: found only when loading, after the build; still one message."""
    copy = tmp_path / "damaged" / ddp_one.checkpoints[EVERY].name
    shutil.copytree(ddp_one.checkpoints[EVERY], copy)
    (shard,) = copy.glob("*.distcp")
    shard.write_bytes(shard.read_bytes()[:1000])
    env = dict(os.environ, SPEEDRUN_PRESET="smoke", DATA_PATH=str(data), LOG_DIR=str(tmp_path / "logs"), SEED="1")
    env.update(OMP_NUM_THREADS="1", SPEEDRUN_OVERRIDES=json.dumps(DDP), SPEEDRUN_RESUME=str(copy))
    env.pop("SPEEDRUN_CHECKPOINT_EVERY", None)
    result = subprocess.run(
        [sys.executable, str(TRAINER)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    (error,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]  # (and DCP's warning)
    assert error.startswith(f"error: cannot load the checkpoint {copy}: RuntimeError on rank 0: "), error
    assert error.endswith(". Its files are damaged or do not fit this model; resume from another checkpoint.")
    assert "Traceback" not in result.stderr


def test_tools_read_the_trainers_checkpoint_as_the_trainer_does(ddp_one: Run, tmp_path: Path) -> None:
    """The model-use commands on a checkpoint train_gpt.py wrote: evaluate gives the log's final val loss, from
    the checkpoint and from its export."""
    final = [loss for _, kind, loss in ddp_one.metrics() if kind == "val_loss"][-1]
    export = tmp_path / "export"
    tools = [sys.executable, "-m", "tools"]
    done = subprocess.run([*tools, "export", "--checkpoint", str(ddp_one.checkpoints[STEPS]), "--out", str(export)])
    assert done.returncode == 0
    for folder in (ddp_one.checkpoints[STEPS], export):
        result = subprocess.run(
            [*tools, "evaluate", "--checkpoint", str(folder), "--device", "cpu", "--no-compile", "--json"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{json.loads(result.stdout.strip().splitlines()[-1])['val_loss']['val_loss']:.4f}" == final, (
            result.stdout
        )
