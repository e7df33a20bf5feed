"""The scale-out parts of train_gpt.py on their own: sharded Muon against the replicated one, FSDP2 with the
CUDA mixed-precision policy and the FP8 head, per-block compilation, presets and their table, and the
checks that catch a wrong resume or checkpoint setting before any work."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
import train_gpt as tg  # noqa: E402

CPU = tg.Dist(0, 1, 0, torch.device("cpu"))

# ----------------------------------------------------------------------------------------------- sharded Muon

MUON_WORKER = textwrap.dedent(
    """
    import os
    import sys
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    sys.path.insert(0, sys.argv[1])
    import train_gpt as tg

    dist.init_process_group("gloo")
    rank, mesh = dist.get_rank(), init_device_mesh("cpu", (2,))
    gen = torch.Generator().manual_seed(0)
    # uneven rows (3 + 2), an empty slice on rank 1, the stacked q/k/v cut on dim 1, and three matrices of one
    # shape (the second round has no matrix for rank 1)
    layout = [((5, 8), 0), ((1, 6), 0), ((3, 6, 4), 1), ((8, 8), 0), ((8, 8), 0), ((8, 8), 0), ((4, 12), 0)]
    weights = [torch.randn(shape, generator=gen) for shape, _ in layout]
    grads = [[torch.randn(shape, generator=gen) for shape, _ in layout] for _ in range(3)]
    kw = dict(lr=0.05, momentum=0.9, ns_steps=5, weight_decay=0.1)

    whole = [torch.nn.Parameter(w.clone()) for w in weights]
    reference = tg.Muon(whole, rank=0, world_size=1, **kw)
    sliced = [torch.nn.Parameter(distribute_tensor(w.clone(), mesh, [Shard(d)])) for w, (_, d) in zip(weights, layout)]
    sharded = tg.Muon(sliced, rank=rank, world_size=2, **kw)
    for step_grads in grads:
        for p, q, g, (_, d) in zip(whole, sliced, step_grads, layout):
            p.grad, q.grad = g.clone(), distribute_tensor(g.clone(), mesh, [Shard(d)])
        reference.step()
        sharded.step()
    for i, (p, q) in enumerate(zip(whole, sliced)):
        assert torch.equal(p.detach(), q.detach().full_tensor()), f"matrix {i}: weights differ"
        buf = sharded.state[q]["momentum_buffer"].full_tensor()
        assert torch.equal(reference.state[p]["momentum_buffer"], buf), f"matrix {i}: momentum differs"
    assert torch.equal(torch.tensor([len(sharded.owned)]), torch.tensor([len(sliced)]))  # every rank keeps slices
    print(f"rank {rank}: equal", flush=True)
    dist.destroy_process_group()
    os._exit(0)  # as train_gpt.py: gloo sometimes aborts in C++ teardown after a finished run
    """
)


@pytest.mark.slow
def test_sharded_muon_equals_replicated_muon_bitwise(tmp_path: Path) -> None:
    """Two processes holding FSDP2-style slices (torch.chunk cuts, uneven and empty ones included) compute the
    very weights and momentum of one process holding whole matrices, step after step."""
    worker = tmp_path / "muon_worker.py"
    worker.write_text(MUON_WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(worker)]
    result = subprocess.run(
        [*cmd, str(REPO_ROOT)], env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rank 0: equal" in result.stdout and "rank 1: equal" in result.stdout


def test_replicated_muon_owners_and_weight_decay() -> None:
    ps = [torch.nn.Parameter(torch.randn(4, 4)) for _ in range(5)]
    owned = [tg.Muon(ps, lr=0.1, momentum=0.9, ns_steps=5, rank=r, world_size=2).owned for r in (0, 1)]
    assert [len(o) for o in owned] == [3, 2] and not {id(p) for p in owned[0]} & {id(p) for p in owned[1]}
    p = torch.nn.Parameter(torch.ones(4, 4))
    p.grad = torch.zeros(4, 4)
    tg.Muon([p], lr=0.1, momentum=0.9, ns_steps=5, rank=0, world_size=1, weight_decay=0.5).step()
    torch.testing.assert_close(p.detach(), torch.full((4, 4), 0.95))  # zero update: only the decay, 1 - 0.1 * 0.5


# ----------------------------------------------------------------------------------------------- FSDP2 in one process


def tiny_fsdp_args(**changes) -> tg.Hyperparameters:
    base = dataclasses.replace(
        tg.PRESETS["smoke"], vocab_size=300, num_layers=4, attention_pattern="LS-L", num_value_embeds=1
    )
    return dataclasses.replace(base, **{"parallelism": "fsdp", **changes})


@pytest.fixture
def process_group():
    """One-process gloo group, as train_gpt.py starts for fsdp without torchrun; torn down afterwards."""
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def dummy_window(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 299, (257,), generator=torch.Generator().manual_seed(seed))
    tokens[[0, 90, 200]] = 299
    return tokens[:-1].int(), tokens[1:]


def test_fsdp_with_the_cuda_precision_policy_and_fp8_head(process_group, monkeypatch) -> None:
    """What CUDA runs: bf16 compute, fp32 gradient reduction, and the FP8 head op fed the all-gathered weight."""
    bf16 = tg.MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    monkeypatch.setattr(tg, "mixed_precision", lambda d: bf16)
    args = tiny_fsdp_args(fp8_head=True, fp8_grad_scale=2.0**21)
    model = tg.build_model(args, seed=0, d=CPU)
    opts = tg.build_optimizers(model, args, CPU)
    head = model.lm_head.weight
    assert isinstance(head, tg.DTensor) and head.dtype == torch.float32  # sharded master weights stay fp32
    losses = [tg.train_step(s, model, opts, None, args, CPU, dummy=dummy_window(0)).item() for s in range(4)]
    assert isinstance(head.grad, tg.DTensor) and head.grad.dtype == torch.float32 and head.abs().sum() > 0
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 0.2, losses


@pytest.mark.slow
def test_fsdp_blocks_compile_and_match_eager(process_group) -> None:
    """fsdp compiles each block's forward (fullgraph) inside FSDP2's hooks; training steps match eager mode."""
    results = {}
    for compiled in (False, True):  # two blocks: two graphs (the first block, whose x is x0, and the other)
        args = tiny_fsdp_args(compile=compiled, num_layers=2, attention_pattern="LS")
        raw = tg.build_model(args, seed=0, d=CPU)
        model = tg.compile_model(raw, args)
        opts = tg.build_optimizers(raw, args, CPU)
        results[compiled] = [
            tg.train_step(s, model, opts, None, args, CPU, dummy=dummy_window(1)).item() for s in range(3)
        ]
    assert results[True] == pytest.approx(results[False], rel=1e-4), results


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_warm_up_restores_the_initial_state(process_group, parallelism: str) -> None:
    """Warm-up trains on dummy data, then puts back the initial weights (kept on the host) and empty optimizers."""
    args = tiny_fsdp_args(warmup_steps=2, parallelism=parallelism)
    model = tg.build_model(args, seed=0, d=CPU)
    opts = tg.build_optimizers(model, args, CPU)
    before = {k: tg.local(v).clone() for k, v in model.state_dict().items()}
    tg.warm_up(model, model, opts, args, seed=0, d=CPU)
    assert all(torch.equal(before[k], tg.local(v)) for k, v in model.state_dict().items())
    assert not opts[0].state and not opts[1].state
    assert all(p.grad is None for p in model.parameters()) if parallelism == "fsdp" else opts[2].flat()[0].eq(0).all()
    assert [g["lr"] for g in opts[0].param_groups] == [g["initial_lr"] for g in opts[0].param_groups]


# ----------------------------------------------------------------------------------------------- presets


def test_medium_preset_carries_the_public_record_numbers() -> None:
    a = tg.PRESETS["medium"]
    assert (a.num_layers, a.model_dim, a.num_heads, a.head_dim, a.attention_pattern) == (
        16,
        1024,
        8,
        128,
        "LSSSLSS-SSSLSSSL",
    )
    assert (a.num_iterations, a.val_seq_len, a.val_tokens, a.train_seq_len, a.windows_per_step) == (
        7050,
        262144,
        10485760,
        65536,
        8,
    )
    assert (a.muon_lr, a.muon_weight_decay, a.adam_lr_head, a.adam_lr_embed, a.adam_lr_scalar) == (
        0.025,
        0.01,
        0.003125,
        0.3,
        0.015,
    )
    assert (a.fp8_x_scale, a.fp8_w_scale, a.fp8_grad_scale, a.parallelism, a.checkpoint_every) == (
        2.0,
        512.0,
        2.0**19,
        "ddp",
        -1,
    )
    assert tg.TRACKS["medium"] == ("track_2_medium", 2.92) and tg.PRESETS["short"].checkpoint_every == -1
    for world_size in (1, 2, 4, 8):
        tg.validate(a, world_size)


@pytest.mark.parametrize(
    ("preset", "total", "hidden", "layers", "width"),
    [("1.5b", 1.86, 1.47, 52, 1536), ("3b", 3.16, 2.52, 32, 2560), ("7b", 7.47, 6.44, 32, 4096)],
)
def test_ladder_matches_its_documented_table(preset: str, total: float, hidden: float, layers: int, width: int) -> None:
    """The numbers of the table in train_gpt.py and docs/log-format.md, recomputed from the model itself."""
    a = tg.PRESETS[preset]
    counts = tg.parameter_counts(a)
    assert (round(counts["total"] / 1e9, 2), round(counts["hidden"] / 1e9, 2)) == (total, hidden)
    assert (a.num_layers, a.model_dim, a.num_heads * a.head_dim, a.parallelism) == (layers, width, width, "fsdp")
    assert tg.TRACKS[preset] == ("scale", None) and a.checkpoint_every > 0
    # FineWeb10B holds 103 train shards of 100M tokens; each feeds the steps whose whole batch (+1) fits in it
    per_shard = tg.steps_in_shard(100_000_000, a.windows_per_step * a.train_seq_len)
    assert -(-a.num_iterations // per_shard) <= 103
    docs = (REPO_ROOT / "docs" / "log-format.md").read_text(encoding="utf-8")
    assert f"| `{preset}` | {layers} | {width} |" in docs
    for world_size in (1, 8, 64):  # one GPU, one node, eight nodes
        tg.validate(a, world_size)


def test_parameter_counts_match_the_built_model() -> None:
    args = tiny_fsdp_args(parallelism="ddp")
    model = tg.GPT(args)
    counts = tg.parameter_counts(args)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["hidden"] == sum(p.numel() for p in model.param_groups()["hidden"])


# ----------------------------------------------------------------------------------------------- setup mistakes


def write_shard(path: Path, n: int) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = 20240520, 1, n
    path.write_bytes(header.tobytes() + (np.arange(n) % 512).astype("<u2").tobytes())


@pytest.fixture
def smoke_env(tmp_path: Path, monkeypatch) -> Path:
    write_shard(tmp_path / "s_val_000000.bin", 9000)
    write_shard(tmp_path / "s_train_000001.bin", 500_000)
    for key in (
        "SPEEDRUN_OVERRIDES",
        "SEED",
        "SPEEDRUN_RESUME",
        "SPEEDRUN_CHECKPOINT_EVERY",
        "SPEEDRUN_CHECKPOINT_KEEP",
        "SPEEDRUN_CHECKPOINT_DIR",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SPEEDRUN_PRESET", "smoke")
    monkeypatch.setenv("DATA_PATH", str(tmp_path))
    return tmp_path


def saved_config(folder: Path, metadata: bool = True, **changes) -> Path:
    """A checkpoint folder as far as preflight looks: config.json and the DCP .metadata file."""
    folder.mkdir(parents=True)
    if metadata:  # real DCP files (of a stand-in state): preflight reads .metadata and checks the data files
        dcp.save({"x": torch.zeros(2)}, checkpoint_id=folder, no_dist=True)
    step = changes.pop("step", 100)
    args = dataclasses.replace(tg.PRESETS["smoke"], **changes)
    meta = dict(format=tg.CHECKPOINT_FORMAT, preset="smoke", hyperparameters=dataclasses.asdict(args), step=step)
    (folder / "config.json").write_text(json.dumps(dict(meta, run_id="abc", world_size=2, parallelism="ddp")))
    return folder


def damaged(folder: Path, name: str) -> Path:
    """Empty a checkpoint's .metadata, or delete one of its data files."""
    if name == ".metadata":
        (folder / name).write_bytes(b"")
    else:
        (folder / name).unlink()
    return folder


def test_resume_mistakes_are_one_clear_message(smoke_env: Path, monkeypatch, capsys) -> None:
    (smoke_env / "broken").mkdir()
    (smoke_env / "broken" / "config.json").write_text("{not json")
    (smoke_env / "foreign").mkdir()
    (smoke_env / "foreign" / "config.json").write_text('{"format": "something-else"}')
    cases = [
        ({}, smoke_env / "nowhere", r"cannot read \S+config.json .*incomplete"),
        ({}, smoke_env / "broken", "config.json is not valid JSON"),
        ({}, smoke_env / "foreign", "is not a speedrun-checkpoint-v1 checkpoint's"),
        ({}, saved_config(smoke_env / "other", num_iterations=150), r"another recipe \(num_iterations: checkpoint 150"),
        ({}, saved_config(smoke_env / "damaged", metadata=False), r"\.metadata is missing"),
        ({}, damaged(saved_config(smoke_env / "empty"), ".metadata"), r"\.metadata cannot be read \(\w+"),
        ({}, damaged(saved_config(smoke_env / "lost"), "__0_0.distcp"), r"1 of its 1 DCP data files are missing"),
        ({}, saved_config(smoke_env / "odd", step="100"), r"config.json is damaged \(step of the wrong type"),
        ({"num_iterations": 100}, saved_config(smoke_env / "end", num_iterations=100), "nothing is left to train"),
        # where the data sit, checkpointing, compilation and the parallelism may change on resume
        ({}, saved_config(smoke_env / "moved", data_path="/old", checkpoint_every=5, checkpoint_keep=3), None),
        ({}, saved_config(smoke_env / "resharded", parallelism="fsdp", compile=True, warmup_steps=0), None),
    ]
    for overrides, path, message in cases:
        monkeypatch.setenv("SPEEDRUN_OVERRIDES", json.dumps(overrides))
        monkeypatch.setenv("SPEEDRUN_RESUME", str(path))
        assert tg.preflight(2) == (0 if message is None else 1), path
        err = capsys.readouterr().err
        assert message is None or (err.startswith(f"error: SPEEDRUN_RESUME={path}") and re.search(message, err)), err


def test_checkpoint_settings_are_checked(smoke_env: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SPEEDRUN_CHECKPOINT_EVERY", "often")
    assert tg.preflight(1) == 1 and "SPEEDRUN_CHECKPOINT_EVERY='often'" in capsys.readouterr().err
    monkeypatch.setenv("SPEEDRUN_CHECKPOINT_EVERY", "25")
    preset, args, overrides = tg.resolve_config(dict(os.environ))
    assert args.checkpoint_every == 25 and overrides == {}  # a run setting, not an override
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv("SPEEDRUN_CHECKPOINT_KEEP", bad)
        assert tg.preflight(1) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: SPEEDRUN_CHECKPOINT_KEEP=") and bad in err and "give N > 0" in err, err
    monkeypatch.setenv("SPEEDRUN_CHECKPOINT_KEEP", "3")
    preset, args, overrides = tg.resolve_config(dict(os.environ))
    assert args.checkpoint_keep == 3 and overrides == {}
    with pytest.raises(tg.SpeedrunError, match="checkpoint_keep must be >= 0"):
        tg.validate(dataclasses.replace(args, checkpoint_keep=-2), 1)
    blocker = smoke_env / "a-file"
    blocker.write_text("")
    with pytest.raises(tg.SpeedrunError, match="cannot create the checkpoint folder .*a-file/run"):
        tg.make_checkpoint_dir(blocker / "run", CPU)


def test_pruning_keeps_the_newest_complete_checkpoints_of_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (5, 10, 100, 1_000_000):  # past step_999999 the names grow a digit: steps sort as numbers
        (run / f"step_{step:06d}").mkdir(parents=True)
        (run / f"step_{step:06d}" / "config.json").write_text("{}")
        (run / f"step_{step:06d}" / "__0_0.distcp").write_bytes(b"x")
    (run / "step_000200").mkdir()  # being written by another save: no config.json yet, left alone
    (run / "step_notes").mkdir()
    removed = tg.prune_checkpoints(run, 2)
    assert removed == [(run / "step_000005", None), (run / "step_000010", None)]
    assert sorted(p.name for p in run.iterdir()) == ["step_000100", "step_000200", "step_1000000", "step_notes"]
    assert tg.prune_checkpoints(run, 2) == []
    assert tg.prune_checkpoints(run, 5) == []
