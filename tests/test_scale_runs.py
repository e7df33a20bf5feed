"""Whole runs of train_scale.py: FSDP2 on 1 and 2 processes, checkpoints resumed on the same and on another world
size, a two-"node" c10d launch, the export and the model tools on what a run saved, and the scale benchmark.

Every run is the `tiny` preset (train_gpt.py's smoke model) on synthetic data with one CPU thread per process. What
is asserted is what the design gives: 1 and 2 processes, and a resumed run and an uninterrupted one, print
identical losses and end with bitwise identical weights and optimizer state."""

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

import train_gpt as tg
import train_scale as ts
from conftest import REPO_ROOT
from tools.cli import main as tools_main

TRAINER = REPO_ROOT / "train_scale.py"
STEPS, EVERY = 16, 8
METRIC = re.compile(r"^step:(\d+)/(\d+) (val_loss|train_loss):(\S+) train_time:(\d+)ms step_avg:(\S+)ms$")
OVERRIDES = {"num_iterations": STEPS, "val_loss_every": EVERY}
CHECKPOINT_KEYS = {
    "seed",
    "format",
    "preset",
    "hyperparameters",
    "step",
    "run_id",
    "world_size",
    "parallelism",
    "train_time_ms",
    "data_path",
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


def launch(data: Path, out: Path, nproc: int, nnodes: int = 1, **env: str) -> Run:
    """torchrun as a user runs it, one CPU thread per process, and the run's one log. nnodes > 1 starts that many
    launchers here, each a "node" of nproc processes meeting through a c10d rendezvous, as on a cluster."""
    (log,) = launch_logs(data, out, nproc, nnodes, **env)
    return log


def launch_logs(
    data: Path, out: Path, nproc: int, nnodes: int = 1, script: Path = TRAINER, restarts: int = 0, **env: str
) -> list[Run]:
    """launch, for a run that may write several logs (one per start: torchrun --max-restarts), in start order."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPEEDRUN_")}
    full_env.update(SPEEDRUN_PRESET="tiny", DATA_PATH=str(data), LOG_DIR=str(out / "logs"), SEED="1")
    full_env.update(OMP_NUM_THREADS="1", SPEEDRUN_OVERRIDES=json.dumps(OVERRIDES), SPEEDRUN_CHECKPOINT_DIR=str(out))
    full_env.update(env)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--max-restarts={restarts}"]
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
            procs.append(subprocess.Popen([*c, str(script)], cwd=REPO_ROOT, env=full_env, stdout=f, stderr=f))
    for p in procs:
        p.wait(timeout=300)
    assert all(p.returncode == 0 for p in procs), "\n".join(o.read_text()[-3000:] for o in outputs)
    logs = sorted((out / "logs").glob("*.txt"), key=lambda p: (len(p.name), p.name))  # <id>.txt, <id>.1.txt, ...
    assert logs and {p.name.split(".")[0] for p in logs} == {logs[0].stem}, logs
    found = {int(p.name.removeprefix("step_")): p for p in out.glob(f"{logs[0].stem}/step_*")}
    return [Run(log, found) for log in logs]


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
def one(data, tmp_path_factory) -> Run:
    """The 1-process run; it saves its checkpoints synchronously (two's are written in the background)."""
    out = tmp_path_factory.mktemp("one")
    return launch(data, out, 1, SPEEDRUN_CHECKPOINT_EVERY=str(EVERY), SPEEDRUN_CHECKPOINT_ASYNC="0")


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("exports")


@pytest.fixture(scope="module")
def two(data, exports, tmp_path_factory) -> Run:
    """The 2-process run; it also exports its final weights, gathered from both ranks' slices."""
    out = tmp_path_factory.mktemp("two")
    return launch(data, out, 2, SPEEDRUN_CHECKPOINT_EVERY=str(EVERY), SPEEDRUN_EXPORT=str(exports))


def test_one_and_two_processes_are_bitwise_the_same_run(one: Run, two: Run) -> None:
    assert [(c["parallelism"], c["world_size"], c["grad_accum_steps"]) for c in (one.config, two.config)] == [
        ("fsdp", 1, 8),
        ("fsdp", 2, 4),
    ]
    assert one.metrics() == two.metrics() and len(one.metrics()) == STEPS + 3
    assert float(one.metrics()[-1][2]) < float(one.metrics()[0][2]) - 2.0  # it learns
    assert sorted(one.checkpoints) == sorted(two.checkpoints) == [EVERY, STEPS]
    for step in (EVERY, STEPS):  # saved while training waited (one) and in the background (two): the same state
        assert_same_state(one.checkpoints[step], two.checkpoints[step])
    assert f"checkpoint: step {EVERY} saved to {one.checkpoints[EVERY]} in " in one.text
    background = f"checkpoint: step {EVERY} saved to {two.checkpoints[EVERY]} in "
    assert f"{background}" in two.text and "s with the clock stopped, then written while training)" in two.text


def test_the_log_holds_both_files_and_verifies_as_a_scale_run(two: Run, capsys) -> None:
    """The source section is train_scale.py, a line of 40 '-', '# train_gpt.py', train_gpt.py: one code identity
    for the tools, and each file's code judged by compile-flags."""
    source = two.text.split(tg.SEPARATOR + "\n")[0]
    scale, record = TRAINER.read_text(encoding="utf-8"), (REPO_ROOT / "train_gpt.py").read_text(encoding="utf-8")
    assert source == scale + "-" * 40 + "\n# train_gpt.py\n" + record
    config = two.config
    assert (config["preset"], config["track"], config["target_val_loss"], config["resumed_from"]) == (
        "tiny",
        "scale",
        None,
        None,
    )
    assert config["run"]["checkpoint_every"] == EVERY and config["run"]["activation_checkpointing"] is False
    assert (config["run"]["micro_windows"], config["run"]["checkpoint_async"], config["grad_accum_steps"]) == (
        1,
        True,
        4,
    )
    assert tools_main(["verify", str(two.log), "--track", "scale"]) == 0
    assert f"valid scale run (not a record): {two.log}" in capsys.readouterr().out
    assert tools_main(["parse", "--json", str(two.log)]) == 0
    parsed = json.loads(capsys.readouterr().out)
    assert parsed["source_sha256"] == parsed["code_sha256"] == tg.hashlib.sha256(source.encode()).hexdigest()


def test_checkpoint_layout_and_a_weights_only_reader(two: Run, data: Path) -> None:
    """The contract tools/ reads: config.json last, "model" = GPT(args).state_dict(), loadable without any
    process group; the weights give the log's final validation loss."""
    folder = two.checkpoints[STEPS]
    meta = json.loads((folder / "config.json").read_text())
    assert set(meta) == CHECKPOINT_KEYS and meta["format"] == "speedrun-checkpoint-v1"
    assert (meta["step"], meta["world_size"], meta["parallelism"], meta["run_id"], meta["data_path"]) == (
        STEPS,
        2,
        "fsdp",
        two.log.stem,
        str(data),
    )
    assert f"checkpoint: step {STEPS} saved to {folder}" in two.text
    args = tg.Hyperparameters(**meta["hyperparameters"])
    model = tg.GPT(args)
    stored = {k.split(".", 1)[1] for k in read_checkpoint(folder) if k.startswith("model.")}
    assert stored == set(model.state_dict())
    dcp.load({"model": model.state_dict()}, checkpoint_id=folder, no_dist=True)
    d = tg.Dist(0, 1, 0, torch.device("cpu"))
    val = tg.TokenWindows(
        tg.plan_shards(args, str(data), "val", args.val_tokens + 1), args.val_seq_len, args.val_tokens + 1, d.device
    )
    final = [loss for step, kind, loss in two.metrics() if kind == "val_loss"][-1]
    assert f"{tg.evaluate(model, val, args, d, STEPS):.4f}" == final


def test_the_model_tools_read_what_the_run_saved(two: Run, exports: Path, tmp_path: Path, capsys) -> None:
    """`tools evaluate` on the final checkpoint, on its `tools export`, and on the run's own SPEEDRUN_EXPORT gives
    the log's final val loss."""
    final = [loss for _, kind, loss in two.metrics() if kind == "val_loss"][-1]
    exported = tmp_path / "export"
    assert tools_main(["export", "--checkpoint", str(two.checkpoints[STEPS]), "--out", str(exported)]) == 0
    assert f"final weights written to {exports / two.log.stem}" in two.text
    for folder in (two.checkpoints[STEPS], exported, exports / two.log.stem):
        capsys.readouterr()
        assert tools_main(["evaluate", "--checkpoint", str(folder), "--device", "cpu", "--no-compile", "--json"]) == 0
        assert f"{json.loads(capsys.readouterr().out)['val_loss']['val_loss']:.4f}" == final, folder


def test_a_preempted_run_restarted_by_torchrun_continues_from_its_latest_checkpoint(two: Run, data, tmp_path) -> None:
    """`torchrun --max-restarts=1` with SPEEDRUN_RESUME=latest: rank 0 is killed (SIGKILL) at step 10 of 16, after
    the checkpoint of step 8 was written in the background; torchrun starts both ranks again, and the restart, under
    the same run id (the rendezvous id), continues from step 8 and prints the losses of the uninterrupted run (two,
    which saved every 8 steps: saving changes no number), ending in bitwise its state. Its own checkpoints go on in
    the same folder, pruned to the newest (SPEEDRUN_CHECKPOINT_KEEP=1)."""
    preempt = dict(PREEMPT_AT_STEP="10", PREEMPT_AFTER="8", SPEEDRUN_RESUME="latest")
    preempt.update(TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")  # as docs/scale.md says: see train_scale.restart_problem
    keep = dict(SPEEDRUN_CHECKPOINT_EVERY="4", SPEEDRUN_CHECKPOINT_KEEP="1")
    killed, restarted = launch_logs(
        data, tmp_path, 2, script=REPO_ROOT / "tests" / "scale_preempt.py", restarts=1, **preempt, **keep
    )
    assert restarted.log.name == f"{killed.log.stem}.1.txt" and restarted.config["run_id"] == killed.config["run_id"]
    assert killed.config["resumed_from"] is None and "resume: no complete checkpoint in " in killed.text
    assert restarted.config["resumed_from"] == dict(
        path=str(tmp_path / killed.log.stem / "step_000008"), step=8, run_id=killed.config["run_id"]
    )
    assert restarted.config["seed"] == killed.config["seed"] == 1
    assert len(killed.metrics()) >= 10 and killed.metrics() == two.metrics()[: len(killed.metrics())]
    assert restarted.metrics() == two.metrics(after=EVERY - 1)[1:]  # from the validation at step 8 to the end
    lines = [ln for ln in restarted.text.split(tg.SEPARATOR + "\n")[2].splitlines() if METRIC.match(ln)]
    times = [int(METRIC.match(ln)[5]) for ln in lines]
    assert times == sorted(times)  # on the clock of the checkpoint
    assert sorted(restarted.checkpoints) == [STEPS]
    assert_same_state(restarted.checkpoints[STEPS], two.checkpoints[STEPS])
    run_folder = restarted.checkpoints[STEPS].parent
    removed = [ln for ln in restarted.text.splitlines() if ln.startswith("checkpoint: removed ")]
    assert removed == [
        f"checkpoint: removed {run_folder / f'step_{s:06d}'} (SPEEDRUN_CHECKPOINT_KEEP=1)" for s in (8, 12)
    ]
    assert tools_main(["verify", str(restarted.log), "--track", "scale"]) == 0, "resume lines disturb the grammar"
    assert tools_main(["verify", str(killed.log), "--track", "scale"]) == 1  # it stopped early, and says so


def test_resume_on_one_process_from_a_two_process_checkpoint(two: Run, data: Path, tmp_path: Path) -> None:
    """SPEEDRUN_RESUME=<a folder>: another run, with a run id of its own, that goes on from another run's
    checkpoint on another world size, and leaves that checkpoint where it is."""
    source = two.checkpoints[EVERY]
    resumed = launch(data, tmp_path, 1, SPEEDRUN_RESUME=str(source))
    assert resumed.config["world_size"] == 1 and resumed.config["run"]["checkpoint_every"] == -1
    assert resumed.config["resumed_from"] == dict(path=str(source), step=EVERY, run_id=two.config["run_id"])
    assert resumed.config["run_id"] != two.config["run_id"] and resumed.config["seed"] == 1
    first = next(ln for ln in two.text.splitlines() if ln.startswith(f"step:{EVERY}/{STEPS} val_loss:"))
    assert next(ln for ln in resumed.text.splitlines() if METRIC.match(ln)) == first  # on the checkpoint's clock
    assert resumed.metrics() == two.metrics(after=EVERY - 1)[1:]  # the original's step-8 train line is not redone
    assert (source / "config.json").is_file()


def test_two_node_c10d_launch_with_two_windows_per_micro_step(two: Run, data: Path, tmp_path: Path) -> None:
    """`torchrun --nnodes=2 --rdzv-backend=c10d` twice on this machine, one process per "node", each micro-step two
    windows as one batch: the losses of the two-process run of one window per micro-step, to float rounding (the
    sums of a batch run in another order; the log prints 4 decimals)."""
    nodes = launch(data, tmp_path, 1, nnodes=2, SPEEDRUN_MICRO_WINDOWS="2")
    assert (nodes.config["world_size"], nodes.config["run"]["micro_windows"], nodes.config["grad_accum_steps"]) == (
        2,
        2,
        4,
    )
    got, want = nodes.metrics(), two.metrics()
    assert [(step, kind) for step, kind, _ in got] == [(step, kind) for step, kind, _ in want]
    assert all(abs(float(a[2]) - float(b[2])) <= 2e-3 for a, b in zip(got, want, strict=True)), (got, want)


def test_the_offline_export_holds_the_checkpoints_weights(two: Run, tmp_path: Path) -> None:
    """train_scale.export_checkpoint (`python train_scale.py --export`, and SPEEDRUN_EXPORT's last act): the
    safetensors file holds bitwise the checkpoint's weights, under the model's names, and the checkpoint's config."""
    from safetensors.torch import load_file

    out = ts.export_checkpoint(two.checkpoints[STEPS], tmp_path / "export")
    weights, stored = load_file(str(out / "model.safetensors")), read_checkpoint(two.checkpoints[STEPS])
    model = {k.removeprefix("model."): v for k, v in stored.items() if k.startswith("model.")}
    assert weights.keys() == model.keys() == tg.GPT(ts.PRESETS["tiny"]).state_dict().keys()
    assert all(torch.equal(weights[k], model[k]) for k in model)
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "speedrun-export-v1" and config["step"] == STEPS and config["seed"] == 1
    with pytest.raises(tg.SpeedrunError, match="choose a new folder"):
        ts.export_checkpoint(two.checkpoints[STEPS], out)
    with pytest.raises(tg.SpeedrunError, match=r"cannot export the checkpoint \S+nowhere: FileNotFoundError"):
        ts.export_checkpoint(tmp_path / "nowhere", tmp_path / "other")


def test_a_checkpoint_with_damaged_data_fails_in_one_message(one: Run, data: Path, tmp_path: Path) -> None:
    """.metadata intact, a data file cut short: found only when loading, after the build; still one message."""
    copy = tmp_path / "damaged" / one.checkpoints[EVERY].name
    shutil.copytree(one.checkpoints[EVERY], copy)
    (shard,) = copy.glob("*.distcp")
    shard.write_bytes(shard.read_bytes()[:1000])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPEEDRUN_")}
    env.update(SPEEDRUN_PRESET="tiny", DATA_PATH=str(data), LOG_DIR=str(tmp_path / "logs"), SEED="1")
    env.update(OMP_NUM_THREADS="1", SPEEDRUN_OVERRIDES=json.dumps(OVERRIDES), SPEEDRUN_RESUME=str(copy))
    result = subprocess.run(
        [sys.executable, str(TRAINER)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1
    (error,) = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]  # (and DCP's warning)
    assert error.startswith(f"error: cannot load the checkpoint {copy}: RuntimeError on rank 0: "), error
    assert error.endswith(". Its files are damaged or do not fit this model; resume from another checkpoint.")
    assert "Traceback" not in result.stderr


def test_scale_benchmark_runs_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "bench/bench_scale.py", "--preset", "tiny", "--nproc", "1", "--steps", "3"]
    cmd += ["--json", str(out), "--log-dir", str(tmp_path / "logs")]
    (tmp_path / "logs").mkdir()
    decoy = tmp_path / "logs" / "ffffffff-an-earlier-run.txt"  # sorts after any uuid: not this run's log
    decoy.write_text("an earlier run\n")
    result = subprocess.run(
        cmd, cwd=REPO_ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bench = json.loads(out.read_text())
    assert (bench["preset"], bench["parallelism"], bench["world_size"], bench["steps"]) == ("tiny", "fsdp", 1, 3)
    assert bench["log"] != str(decoy) and Path(bench["log"]).parent == tmp_path / "logs"
    assert (
        bench["warmup_s"] >= 0
        and bench["step_ms"] > 0
        and bench["peak_allocated_mib"] > 0
        and bench["parameters"] == 737332
    )
    assert bench["tokens_per_s"] == round(bench["global_batch_tokens"] / bench["step_ms"] * 1000)
    plan = ts.plan_memory(ts.PRESETS["tiny"], 1, "cpu", micro_windows=bench["micro_windows"])
    assert bench["micro_windows"] == 1 and bench["planned_mib"] == plan.total // 2**20
    # then the plan next to bench/scale_memory.py's measurement, term by term
    terms = bench["terms"]
    assert terms["plan"]["total"] == plan.total and terms["plan"]["activations"] == plan.activations
    assert set(terms["measured"]) >= {"parameters", "gradients", "optimizer", "fixed", "forward_backward", "peak"}
    assert terms["measured"]["parameters"] == plan.parameters and terms["measured"]["peak"] > plan.parameters
    table = result.stdout.split("plan vs measured")[1]
    assert re.search(r"\n  peak +[\d.]+ +[\d.]+ +[+-]\d+%", table), table
    assert json.loads(result.stdout.strip().splitlines()[-1]) == bench
