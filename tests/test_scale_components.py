"""train_scale.py's parts on their own: the model built on the meta device (its init, its memory), sharded Muon
against the replicated one, FSDP2 with the CUDA mixed-precision policy and the FP8 head, per-block compilation
and activation checkpointing, the memory plan against measured peaks, the presets and their table, and the
checks that catch a wrong resume or checkpoint setting before any work."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from scale_worker import CASES, MEMORY_MODEL

import train_gpt as tg
import train_scale as ts
from conftest import REPO_ROOT

CPU = tg.Dist(0, 1, 0, torch.device("cpu"))

# ----------------------------------------------------------------------------------------------- measured in fresh processes


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    """tests/scale_worker.py on 1 process and on 2 (see there), and on the tiny preset (1 and 4 windows per
    micro-step) in processes of their own: {world size or case: [each rank's result]}, and the folder with the
    gathered init of each world size."""
    out = tmp_path_factory.mktemp("worker")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    worker = str(REPO_ROOT / "tests" / "scale_worker.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    for cmd in (
        [sys.executable, worker, str(out)],
        [*torchrun, worker, str(out)],
        [sys.executable, worker, str(out), "tiny/1"],
        [sys.executable, worker, str(out), "tiny/4"],
    ):
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {w: [json.loads((out / f"30m_1_rank{r}_of{w}.json").read_text()) for r in range(w)] for w in (1, 2)}
    tiny = {case: [json.loads((out / f"{case.replace('/', '_')}_rank0_of1.json").read_text())] for case in CASES}
    return dict(results, **{case: ranks for case, ranks in tiny.items() if case.startswith("tiny")}, out=out)


@pytest.mark.slow
def test_sharded_muon_equals_replicated_muon_bitwise(measured) -> None:
    """Two processes holding FSDP2-style slices (torch.chunk cuts, uneven and empty ones included) compute the
    very weights and momentum of one process holding whole matrices, step after step."""
    assert [r["muon_equal"] for r in measured[2]] == [True, True]


@pytest.mark.slow
def test_the_plan_cuts_weights_as_fsdp2_does(measured) -> None:
    """shard_rows and shard_dim, which plan_memory and init_slices use, are FSDP2's cut, weight by weight."""
    for ranks in (measured[1], measured[2]):
        for result in ranks:
            assert all(local == rule for local, rule in result["shapes"].values()), result["shapes"]


@pytest.mark.slow
def test_the_model_is_initialised_alike_on_any_world_size(measured) -> None:
    one, two = (torch.load(measured["out"] / f"init_of{w}.pt") for w in (1, 2))
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


@pytest.mark.slow
def test_a_rank_builds_only_its_slices(measured) -> None:
    """Built on the meta device and materialised slice by slice: each of 2 processes peaks at half the memory one
    process needs, which is the model's fp32 weights (MEMORY_MODEL: ~110 MB)."""
    one = measured[1][0]["build_mib"]
    weights = sum(p.numel() for p in tg.GPT(MEMORY_MODEL).parameters()) * 4 / 2**20
    assert abs(one - weights) <= 0.15 * weights, (one, weights)
    for rank in measured[2]:
        assert 0.4 <= rank["build_mib"] / one <= 0.6, (rank["build_mib"], one)


@pytest.mark.slow
def test_the_memory_plan_is_within_10_percent_of_the_measured_peak(measured) -> None:
    """plan_memory for device "cpu" against bench/scale_memory.py's measurement of a fresh process (build, optimizers,
    two steps), term by term: the 30M model on 1 process (window pairs, whole gradients) and on 2, the tiny preset
    with 1 and with 4 windows per micro-step. The steady terms are the tensors' own bytes (the sharding rule and
    FSDP2's padding), forward and backward the transient that the micro-step multiplies, fixed the code torch maps."""
    cases = [(1, 1, MEMORY_MODEL, measured[1]), (2, 1, MEMORY_MODEL, measured[2])]
    cases += [(1, int(case[-1]), CASES[case], measured[case]) for case in ("tiny/1", "tiny/4")]
    for world_size, k, args, ranks in cases:
        plan = ts.plan_memory(args, world_size, "cpu", micro_windows=k)
        for rank in ranks:
            got = rank["terms"]
            where = (args.num_layers, world_size, k, got)
            for term in ("parameters", "optimizer"):  # tensors' bytes: the slices and FSDP2's padding
                assert abs(getattr(plan, term) - got[term]) <= 0.01 * got[term], where
            assert abs(plan.gradients - got["gradients"]) <= 0.05 * got["gradients"], where
            assert (
                abs(plan.forward_backward + plan.gradients - got["forward_backward"]) <= 0.1 * got["forward_backward"]
            )
            assert abs(plan.fixed - got["fixed"]) <= 0.15 * got["fixed"], where
            assert abs(plan.total - got["peak"]) <= 0.1 * got["peak"], where
    tiny = [measured[case][0]["terms"]["forward_backward"] for case in ("tiny/1", "tiny/4")]
    assert tiny[1] > 2.5 * tiny[0]  # four windows per micro-step: the transient grows with them


# ----------------------------------------------------------------------------------------------- in one process


@pytest.fixture
def process_group():
    """One-process gloo group, as train_scale.py starts for FSDP2 without torchrun; torn down afterwards."""
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def tiny_args(**changes) -> tg.Hyperparameters:
    base = dataclasses.replace(ts.PRESETS["tiny"], vocab_size=300, num_layers=4, attention_pattern="LS-L")
    return dataclasses.replace(base, num_value_embeds=1, **changes)


def dummy_window(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 299, (257,), generator=torch.Generator().manual_seed(seed))
    tokens[[0, 90, 200]] = 299
    return tokens[:-1].int(), tokens[1:]


def test_the_init_has_the_record_files_statistics(process_group) -> None:
    """Slice by slice from per-row generators, the weights are distributed as train_gpt.GPT draws them: N(0, 1)
    tables, uniform matrices of std 0.5 fan_in^-0.5, zero projections and head, the record's scalars."""
    args = tiny_args(model_dim=256, num_heads=2, head_dim=128, vocab_size=512)
    model = ts.build_model(args, seed=0, d=CPU)
    ours, rules = dict(model.named_parameters()), model.init_rule()
    torch.manual_seed(0)
    record = dict(tg.GPT(args).named_parameters())
    assert ours.keys() == record.keys()
    for name, p in ours.items():
        got, want = ts.local(p).detach(), record[name].detach()
        assert got.shape == want.shape and got.dtype == want.dtype, name
        if want.ndim < 2 or not want.any():  # scalars and zero-initialised matrices: exactly the record's
            assert torch.equal(got, want), name
            continue
        how, bound = rules[name]
        expected_std = 1.0 if how == "normal" else bound / 3**0.5  # uniform(-b, b): std b / sqrt(3)
        assert got.std().item() == pytest.approx(expected_std, rel=0.02), name
        assert want.std().item() == pytest.approx(expected_std, rel=0.02), name  # the record's, the same
        assert abs(got.mean().item()) < 5 * expected_std / got.numel() ** 0.5, name
        if how == "uniform":
            assert got.abs().max() <= bound and want.abs().max() <= bound, name
        assert not torch.equal(got, want)  # values of their own: the same distribution, not the same draw


def test_one_init_rule_for_the_record_and_the_sharded_build(process_group, monkeypatch) -> None:
    """GPT.init_rule is the one place the init is written: change it there (every uniform bound doubled, the x0 mix
    switched on) and both train_gpt.GPT and the meta-device build that draws it slice by slice follow."""
    args = tiny_args(model_dim=128, num_heads=1, head_dim=128)
    rule = tg.GPT.init_rule

    def changed(model: tg.GPT) -> dict:
        new = {k: (how, 2 * arg) if how == "uniform" else (how, arg) for k, (how, arg) in rule(model).items()}
        return new | {k: ("values", (1.0, 0.5)) for k in new if re.fullmatch(r"blocks\.\d+\.lambdas", k)}

    monkeypatch.setattr(tg.GPT, "init_rule", changed)
    for model in (tg.GPT(args), ts.build_model(args, seed=0, d=CPU)):
        weights = {name: ts.local(p).detach() for name, p in model.named_parameters()}
        for name, (how, arg) in rule(model).items():
            if how == "uniform":  # well past the old bound, never past the new one
                assert 1.5 * arg < weights[name].abs().max() <= 2 * arg, name
        assert (
            weights["blocks.0.lambdas"].tolist() == [1.0, 0.5]
            and weights["blocks.1.attn.lambdas"].tolist() == [0.5] * 2
        )


def test_one_forward_for_training_sampling_the_sharded_model_and_resume(process_group, monkeypatch, tmp_path) -> None:
    """Block.forward is the one place a block is wired: rewire it there (the MLP before attention) and the full forward,
    sampling's KV-cache decoding (tools/use/generate.py), the FSDP2-sharded model and a model loaded back from a
    checkpoint (tools/use/checkpoints.py, as a resumed run and the tools load it) all compute the new network."""
    from helpers.use_factory import randomize, write_checkpoint
    from tools.use.checkpoints import load_model
    from tools.use.generate import CachedDecoder

    args = tiny_args(block_size=16, window_final_tokens=48)  # 16 blocks of 16 tokens: the window bites
    model = randomize(tg.GPT(args), seed=1).eval()
    inputs, targets = dummy_window(3)
    window = torch.tensor(3, dtype=torch.int32)
    with torch.no_grad():
        before = model.logits(inputs, window)

    def mlp_first(block: tg.Block, x, ve, x0, mask, cache=None):
        x = block.lambdas[0] * x + block.lambdas[1] * x0
        x = x + block.mlp(tg.norm(x))
        return x + block.attn(tg.norm(x), ve, mask, cache) if block.attn is not None else x

    monkeypatch.setattr(tg.Block, "forward", mlp_first)
    with torch.no_grad():
        after = model.logits(inputs, window)
        assert (after - before).abs().max() > 0.1  # the rewiring matters
        decoder = CachedDecoder(model, batch=1, max_len=256, window_blocks=3)
        decoded = torch.cat([decoder.extend(inputs[None, i : i + 40]) for i in range(0, 256, 40)], dim=1)[0]
        torch.testing.assert_close(decoded, after, atol=5e-5, rtol=1e-5)
        sharded = ts.build_model(args, seed=0, d=CPU)
        for name, p in sharded.named_parameters():
            ts.local(p).copy_(dict(model.named_parameters())[name])
        sharded.eval()
        torch.testing.assert_close(sharded(inputs, targets, window), model(inputs, targets, window))
        loaded = load_model(write_checkpoint(tmp_path, model, args), "cpu").model
        assert torch.equal(loaded.logits(inputs, window), after)


def test_fsdp_with_the_cuda_precision_policy_and_fp8_head(process_group, monkeypatch) -> None:
    """What CUDA runs: bf16 compute, fp32 gradient reduction, and the FP8 head op fed the all-gathered weight."""
    bf16 = torch.distributed.fsdp.MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    monkeypatch.setattr(ts, "mixed_precision", lambda d: bf16)
    args = tiny_args(fp8_head=True, fp8_grad_scale=2.0**21)
    model = ts.build_model(args, seed=0, d=CPU)
    opts = ts.build_optimizers(model, args, CPU)
    head = model.lm_head.weight
    assert isinstance(head, ts.DTensor) and head.dtype == torch.float32  # sharded master weights stay fp32
    losses = [tg.train_step(s, model, opts, None, args, CPU, dummy=dummy_window(0)).item() for s in range(3)]
    assert isinstance(head.grad, ts.DTensor) and head.grad.dtype == torch.float32 and head.abs().sum() > 0
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 0.2, losses


class DistinctWindows:
    """train_gpt.TrainWindows' interface: a window of its own for every (step, j), separators included."""

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        step, j = key
        return dummy_window(100 * step + j)


def test_k_windows_per_micro_step_give_the_losses_of_k_one_window_micro_steps(process_group) -> None:
    """ShardedGrads runs k windows as one batch (one FSDP2 all-gather and reduce-scatter for k): each window's loss,
    the step's summed gradients and the next steps' losses are those of k one-window micro-steps, to float rounding
    (sums in another order; bf16 Newton-Schulz makes a few 1e-4 of it after some steps)."""
    args, runs = tiny_args(), {}
    for k in (1, 2, 4):  # 8 windows a step on one process: two halves of 4, paired
        model = ts.build_model(args, seed=0, d=CPU)
        opts = ts.build_optimizers(model, args, CPU, micro_windows=k)
        seen, batches = {}, []
        muon_step = opts[1].step

        def step_and_keep(seen=seen, model=model, muon_step=muon_step) -> None:  # the gradients Muon is given
            seen.setdefault("grads", {n: p.grad.full_tensor().clone() for n, p in model.named_parameters()})
            muon_step()

        opts[1].step = step_and_keep
        forward = model.forward

        def batched(inputs, targets, window, forward=forward, batches=batches):  # what a micro-step is given
            batches.append(tuple(inputs.shape))
            return forward(inputs, targets, window)

        model.forward = batched
        losses = [tg.train_step(s, model, opts, DistinctWindows(), args, CPU).item() for s in range(2)]
        runs[k] = losses, seen["grads"], batches[:4]
    assert runs[1][2] == [(256,)] * 4 and runs[2][2] == [(2, 256)] * 4 and runs[4][2] == [(4, 256)] * 4
    for k in (2, 4):
        assert runs[k][0][0] == pytest.approx(runs[1][0][0], rel=1e-6)  # same weights: the same window losses
        for name, grad in runs[1][1].items():
            torch.testing.assert_close(runs[k][1][name], grad, rtol=1e-4, atol=1e-6, msg=name)
        assert runs[k][0] == pytest.approx(runs[1][0], abs=1e-3)
    assert ts.micro_windows_problem(3, args, 1).startswith("SPEEDRUN_MICRO_WINDOWS=3: the one process trains 8 windows")
    assert ts.micro_windows_problem(8, args, 1) is not None and ts.micro_windows_problem(4, args, 2) is None


def test_activation_checkpointing_recomputes_the_same_step(process_group) -> None:
    """A block kept whole or recomputed in backward gives bitwise the same training steps."""
    results = {}
    for recompute in (False, True):
        args = tiny_args()
        model = ts.build_model(args, seed=0, d=CPU)
        ts.prepare_blocks(model, args, recompute)
        opts = ts.build_optimizers(model, args, CPU)
        results[recompute] = [tg.train_step(s, model, opts, None, args, CPU, dummy=dummy_window(2)) for s in range(2)]
    assert results[True] == results[False]
    kept, recomputed = (ts.plan_memory(ts.PRESETS["13b"], 8, "cuda", r).activations for r in (False, True))
    assert recomputed < kept / 5  # what the 13b, 70b and 175b presets buy with it


@pytest.mark.slow
def test_fsdp_blocks_compile_and_match_eager(process_group) -> None:
    """Each block's forward compiled (fullgraph) inside FSDP2's hooks: training steps match eager mode."""
    results = {}
    for compiled in (False, True):  # two blocks: two graphs (the first block, whose x is x0, and the other)
        args = tiny_args(compile=compiled, num_layers=2, attention_pattern="LS")
        model = ts.build_model(args, seed=0, d=CPU)
        ts.prepare_blocks(model, args, activation_checkpointing=False)
        opts = ts.build_optimizers(model, args, CPU)
        results[compiled] = [
            tg.train_step(s, model, opts, None, args, CPU, dummy=dummy_window(1)).item() for s in range(3)
        ]
    assert results[True] == pytest.approx(results[False], rel=1e-4), results


def test_warm_up_restores_the_initial_state(process_group) -> None:
    """Warm-up trains on dummy data, then puts back the initial slices (kept on the host) and empty optimizers."""
    args = tiny_args(warmup_steps=2)
    model = ts.build_model(args, seed=0, d=CPU)
    opts = ts.build_optimizers(model, args, CPU)
    before = {k: ts.local(v).clone() for k, v in model.state_dict().items()}
    tg.warm_up(model, [ts.local(t) for t in model.state_dict().values()], opts, args, 0, CPU, log=lambda line: None)
    assert all(torch.equal(before[k], ts.local(v)) for k, v in model.state_dict().items())
    assert not opts[0].state and not opts[1].state and all(p.grad is None for p in model.parameters())
    assert [g["lr"] for g in opts[0].param_groups] == [g["initial_lr"] for g in opts[0].param_groups]


def saved_bytes_per_layer(pattern: str, T: int, D: int = 128) -> float:
    """Bytes the autograd graph keeps for one more layer of the given kind (what backward needs), measured."""

    def saved(layers: int) -> int:
        args = tiny_args(num_layers=layers, attention_pattern=pattern * layers, model_dim=D, num_heads=1, head_dim=D)
        args = dataclasses.replace(args, vocab_size=512, train_seq_len=T, val_seq_len=T, num_value_embeds=1)
        model = tg.GPT(args)
        own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
        kept: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.untyped_storage().data_ptr() not in own:
                kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        tokens = torch.randint(0, 511, (T + 1,), generator=torch.Generator().manual_seed(0))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(tokens[:-1].int(), tokens[1:], torch.tensor(2, dtype=torch.int32))
        return sum(kept.values())

    return (saved(4) - saved(2)) / 2


def test_the_activation_estimate_counts_what_autograd_keeps() -> None:
    """plan_memory's per-layer activations on CPU (fp32): an MLP-only block keeps (3 + 2 mlp_ratio) D per token,
    attention 9 D more and its dense mask as fp32 (T^2 floats)."""
    T, D = 256, 128
    assert saved_bytes_per_layer("-", T, D) == pytest.approx(T * D * 4 * 11, rel=0.02)
    assert saved_bytes_per_layer("L", T, D) == pytest.approx(T * D * 4 * 20 + 4 * T * T, rel=0.02)


# ----------------------------------------------------------------------------------------------- presets and plan


@pytest.mark.parametrize(
    ("preset", "total", "hidden", "layers", "width"),
    [
        ("1.5b", 1.86, 1.47, 52, 1536),
        ("3b", 3.16, 2.52, 32, 2560),
        ("7b", 7.47, 6.44, 32, 4096),
        ("13b", 13.9, 12.6, 40, 5120),
        ("70b", 66.5, 64.4, 80, 8192),
        ("175b", 177.0, 174.0, 96, 12288),
    ],
)
def test_ladder_matches_its_documented_table(preset: str, total: float, hidden: float, layers: int, width: int) -> None:
    """The numbers of the table in train_scale.py and docs/log-format.md, recomputed from the model itself."""
    a = ts.PRESETS[preset]
    counts = tg.parameter_counts(a)
    digits = 2 if total < 10 else 1 if total < 100 else 0
    assert (round(counts["total"] / 1e9, digits), round(counts["hidden"] / 1e9, digits)) == (total, hidden)
    assert (a.num_layers, a.model_dim, a.num_heads * a.head_dim) == (layers, width, width)
    assert ts.PRESET_SETTINGS[preset]["checkpoint_every"] > 0
    # FineWeb10B holds 103 train shards of 100M tokens; each feeds the steps whose whole batch (+1) fits in it
    per_shard = tg.steps_in_shard(100_000_000, a.windows_per_step * a.train_seq_len)
    assert -(-a.num_iterations // per_shard) <= 103
    assert a.val_tokens % (a.windows_per_step * a.val_seq_len) == 0
    docs = (REPO_ROOT / "docs" / "log-format.md").read_text(encoding="utf-8")
    assert f"| `{preset}` | {layers} | {width} |" in docs
    for world_size in (1, 8, 64):  # one GPU, one node, eight nodes
        assert ts.cannot_run(a, world_size) is None


POWERS_OF_TWO = [2**i for i in range(11)]  # 1 to 1,024 GPUs


def fewest_gpus(preset: str, memory: int = 80 * 2**30) -> tuple[int, int, float]:
    """(the fewest GPUs of `memory` that the plan fits a preset on, its windows per micro-step there, GiB per GPU)."""
    for n in POWERS_OF_TWO:
        k, plan, verdict = ts.plan_row(preset, n, memory)
        if verdict == "yes":
            return n, k, round(plan.total / 2**30, 1)
    raise AssertionError(f"{preset} fits on no GPU count up to 1,024")


def test_gigagpt_shapes_and_where_they_fit() -> None:
    """13b, 70b and 175b are gigaGPT's depths and widths; the plan says which clusters hold them."""
    shapes = {p: (ts.PRESETS[p].num_layers, ts.PRESETS[p].model_dim) for p in ("13b", "70b", "175b")}
    assert shapes == {"13b": (40, 5120), "70b": (80, 8192), "175b": (96, 12288)}
    assert all(ts.PRESET_SETTINGS[p]["activation_checkpointing"] for p in shapes)
    assert [fewest_gpus(p)[0] for p in shapes] == [4, 16, 64]


def test_docs_and_readme_agree_with_the_plan_for_every_preset() -> None:
    """docs/scale.md's table (the fewest 80 GiB GPUs, the micro-step there, the GiB per GPU, the world sizes) and the
    README's sentence are what `python train_scale.py --plan` computes today."""
    docs = (REPO_ROOT / "docs" / "scale.md").read_text(encoding="utf-8")
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    fewest = []
    for preset in ts.PRESETS:
        n, k, gib = fewest_gpus(preset)
        sizes = [m for m in POWERS_OF_TWO if ts.cannot_run(ts.PRESETS[preset], m) is None]
        row = f"| `{preset}` | {n} | {k} | {gib} | {', '.join(f'{m:,}' for m in sizes)} |"
        assert row in docs, row
        fewest.append(f"{preset}: {n}" if preset != "tiny" else "")
    sentence = "The fewest 80 GiB GPUs each preset fits on, by the plan: " + ", ".join(f for f in fewest if f) + "."
    assert " ".join(sentence.split()) in " ".join(readme.split()), sentence


def test_the_plan_picks_the_largest_micro_step_that_fits() -> None:
    """--plan's micro column: the most windows per micro-step whose plan fits (the fewest all-gathers of the model
    per step); one more window, where the batch allows it, does not fit; the activations and logits grow with it."""
    memory = 80 * ts.GIB
    for preset in ("1.5b", "7b", "70b"):
        args, recompute = ts.PRESETS[preset], ts.PRESET_SETTINGS[preset].get("activation_checkpointing", False)
        for n in (8, 64):
            k = ts.choose_micro_windows(args, n, "cuda", recompute, memory)
            assert ts.micro_windows_problem(k, args, n) is None
            assert ts.plan_memory(args, n, "cuda", recompute, k).total <= memory or k == 1
            bigger = [
                m for m in range(k + 1, args.windows_per_step // n + 1) if not ts.micro_windows_problem(m, args, n)
            ]
            if bigger:
                assert ts.plan_memory(args, n, "cuda", recompute, bigger[0]).total > memory, (preset, n, k)
    one, four = (ts.plan_memory(ts.PRESETS["1.5b"], 8, "cuda", False, k) for k in (1, 4))
    assert (four.activations, four.logits, four.parameters) == (4 * one.activations, 4 * one.logits, one.parameters)
    assert ts.choose_micro_windows(ts.PRESETS["1.5b"], 8, "cpu", False, None) == 1  # CPU: one window, as the record


def test_the_plan_counts_the_collectives_by_world_size() -> None:
    """Muon's all-to-all spans every rank: NCCL's buffers grow with the peers on the node, then with those beyond."""
    comms = [ts.plan_memory(ts.PRESETS["70b"], n, "cuda", True).collectives for n in (1, 2, 8, 64, 1024)]
    assert comms[0] == 0 and comms[1] == ts.NVLINK_PEER and comms[2] == 7 * ts.NVLINK_PEER
    assert comms[3] == 7 * ts.NVLINK_PEER + 56 * ts.NET_PEER and comms[4] > 10 * ts.GIB
    cpu = ts.plan_memory(ts.PRESETS["70b"], 64, "cpu", True)
    assert (cpu.collectives, cpu.fragmentation, cpu.fixed) == (0, 0, ts.CPU_FIXED)


def test_the_plan_prints_every_preset_at_8_64_and_1024_gpus_and_its_assumptions() -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert ts.plan_main([]) == 0
    lines = out.getvalue().splitlines()
    rows = [re.match(r"(\S+)(?: \(recompute\))?\s+(\d+)\s", line) for line in lines[1:] if not line.startswith("  ")]
    assert sorted((m[1], int(m[2])) for m in rows) == sorted((p, n) for p in ts.PRESETS for n in (8, 64, 1024))
    assert "no: 1,024 processes cannot share the 128 windows of a step" in out.getvalue()  # 1.5b's batch
    assert [ln.strip() for ln in lines if ln.startswith("  ")][1:] == ts.assumptions("cuda")


def test_the_plan_command_line(capsys) -> None:
    cmd = [sys.executable, "train_scale.py", "--plan", "70b", "--gpus", "64", "--gpu-memory", "80GiB"]
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("70b")]
    k = ts.choose_micro_windows(ts.PRESETS["70b"], 64, "cuda", True, 80 * ts.GIB)
    plan = ts.plan_memory(ts.PRESETS["70b"], 64, "cuda", recompute=True, micro_windows=k)
    sizes = [f"{getattr(plan, field) / 2**30:.2f}" for _, field in ts.PLAN_TERMS]
    assert row.split()[2:] == ["64", str(k), *sizes, "yes"]
    assert "fixed: 1.00 GiB per GPU" in done.stdout
    for bad, message in (
        (["--gpu-memory", "lots"], "'lots' is not a size like 80GiB"),
        (["--micro-windows", "0"], "--micro-windows takes a positive number of windows"),
    ):
        with pytest.raises(SystemExit) as stopped:
            ts.plan_main(["70b", *bad])
        assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_world_sizes_that_cannot_share_the_batch_get_the_nearest_that_can() -> None:
    """96 and 192 GPUs: a clear message with the nearest world sizes that work, and for a model whose attention rows
    they do cut evenly, a batch they share (as an override: another recipe)."""
    message = ts.cannot_run(ts.PRESETS["70b"], 96)
    assert message.startswith("invalid configuration: 96 processes cannot share the 1,024 windows of a step nor cut ")
    assert "the nearest world sizes that can are 64 and 128" in message and "SPEEDRUN_OVERRIDES" not in message
    message = ts.cannot_run(ts.PRESETS["175b"], 192)
    assert "nearest world sizes that can are 128 and 256" in message
    override = json.loads(message.split("SPEEDRUN_OVERRIDES='")[1].split("'")[0])
    changed = dataclasses.replace(ts.PRESETS["175b"], **override)
    assert override["windows_per_step"] == 960 and ts.cannot_run(changed, 192) is None
    tail = "the nearest world sizes that can are 8 (any that divides both; docs/scale.md, world sizes)."
    assert ts.cannot_run(ts.PRESETS["tiny"], 24).endswith(tail)


# ----------------------------------------------------------------------------------------------- setup mistakes


def write_shard(path: Path, n: int) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = 20240520, 1, n
    path.write_bytes(header.tobytes() + (np.arange(n) % 512).astype("<u2").tobytes())


@pytest.fixture
def tiny_env(tmp_path: Path, monkeypatch) -> Path:
    write_shard(tmp_path / "s_val_000000.bin", 9000)
    write_shard(tmp_path / "s_train_000001.bin", 500_000)
    for key in [k for k in os.environ if k.startswith("SPEEDRUN_")] + ["SEED"]:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SPEEDRUN_PRESET", "tiny")
    monkeypatch.setenv("DATA_PATH", str(tmp_path))
    return tmp_path


def saved_config(folder: Path, metadata: bool = True, **changes) -> Path:
    """A checkpoint folder as far as preflight looks: config.json and the DCP .metadata file."""
    folder.mkdir(parents=True)
    if metadata:  # real DCP files (of a stand-in state): preflight reads .metadata and checks the data files
        dcp.save({"x": torch.zeros(2)}, checkpoint_id=folder, no_dist=True)
    step, run_id = changes.pop("step", 100), changes.pop("run_id", "abc")
    hyperparameters = dataclasses.asdict(ts.PRESETS["tiny"]) | changes
    meta = dict(format=ts.CHECKPOINT_FORMAT, preset="tiny", hyperparameters=hyperparameters, step=step, seed=1234)
    (folder / "config.json").write_text(json.dumps(dict(meta, run_id=run_id, world_size=2, parallelism="fsdp")))
    return folder


def damaged(folder: Path, name: str) -> Path:
    """Empty a checkpoint's .metadata, or delete one of its data files."""
    if name == ".metadata":
        (folder / name).write_bytes(b"")
    else:
        (folder / name).unlink()
    return folder


def test_resume_mistakes_are_one_clear_message(tiny_env: Path, monkeypatch, capsys) -> None:
    (tiny_env / "broken").mkdir()
    (tiny_env / "broken" / "config.json").write_text("{not json")
    (tiny_env / "foreign").mkdir()
    (tiny_env / "foreign" / "config.json").write_text('{"format": "something-else"}')
    cases = [
        ({}, tiny_env / "nowhere", r"cannot read \S+config.json .*incomplete"),
        ({}, tiny_env / "broken", "config.json is not valid JSON"),
        ({}, tiny_env / "foreign", "is not a speedrun-checkpoint-v1 checkpoint's"),
        ({}, saved_config(tiny_env / "other", num_iterations=150), r"another recipe \(num_iterations: checkpoint 150"),
        ({}, saved_config(tiny_env / "damaged", metadata=False), r"\.metadata is missing"),
        ({}, damaged(saved_config(tiny_env / "empty"), ".metadata"), r"\.metadata cannot be read \(\w+"),
        ({}, damaged(saved_config(tiny_env / "lost"), "__0_0.distcp"), r"1 of its 1 DCP data files are missing"),
        ({}, saved_config(tiny_env / "odd", step="100"), r"config.json is damaged \(step of the wrong type"),
        ({"num_iterations": 100}, saved_config(tiny_env / "end", num_iterations=100), "nothing is left to train"),
        # validation, compilation and the warm-up change no weight; nor do the run settings of older checkpoints
        ({}, saved_config(tiny_env / "moved", data_path="/old", checkpoint_every=5, parallelism="ddp"), None),
        ({}, saved_config(tiny_env / "resharded", compile=True, warmup_steps=0, val_loss_every=5), None),
    ]
    for overrides, path, message in cases:
        monkeypatch.setenv("SPEEDRUN_OVERRIDES", json.dumps(overrides))
        monkeypatch.setenv("SPEEDRUN_RESUME", str(path))
        assert ts.preflight(2) == (0 if message is None else 1), path
        err = capsys.readouterr().err
        assert message is None or (err.startswith(f"error: SPEEDRUN_RESUME={path}") and re.search(message, err)), err


def test_run_settings_come_from_their_variables(tiny_env: Path, monkeypatch, capsys) -> None:
    """The checkpoint and recompute settings: the preset's defaults, the variables, and a message for a bad one."""
    assert ts.run_settings({}, "70b", ts.PRESETS["70b"]) == ts.ScaleRunSettings(
        data_path="data/fineweb10B", checkpoint_every=100, activation_checkpointing=True
    )
    env = dict(
        SPEEDRUN_CHECKPOINT_EVERY="25",
        SPEEDRUN_CHECKPOINT_KEEP="3",
        SPEEDRUN_CHECKPOINT_DIR="/ck",
        SPEEDRUN_RESUME="/ck/x/step_000010",
        SPEEDRUN_ACTIVATION_CHECKPOINTING="1",
        SPEEDRUN_CHECKPOINT_ASYNC="0",
        SPEEDRUN_MICRO_WINDOWS="2",
        SPEEDRUN_RUN_ID="job-4711.a",
        SEED="4",
    )
    got = ts.run_settings(env, "tiny", ts.PRESETS["tiny"])
    assert (got.checkpoint_every, got.checkpoint_keep, got.checkpoint_dir, got.resume, got.seed) == (
        25,
        3,
        "/ck",
        "/ck/x/step_000010",
        4,
    )
    assert got.activation_checkpointing and got.data_path == "data/synthetic"
    assert (got.checkpoint_async, got.micro_windows, got.run_id) == (False, 2, "job-4711.a")
    auto = ts.run_settings(dict(SPEEDRUN_MICRO_WINDOWS="auto", SPEEDRUN_EXPORT="out"), "tiny", ts.PRESETS["tiny"])
    assert (auto.micro_windows, auto.checkpoint_async, auto.checkpoint_every) == (0, True, 0)  # export: a final save
    assert not (
        {f.name for f in dataclasses.fields(ts.ScaleRunSettings)}
        & {f.name for f in dataclasses.fields(tg.Hyperparameters)}
    )
    for variable, bad, message in [
        ("SPEEDRUN_CHECKPOINT_EVERY", "often", "is not a whole number"),
        ("SPEEDRUN_CHECKPOINT_EVERY", "-2", "give N > 0"),
        ("SPEEDRUN_CHECKPOINT_KEEP", "-1", "give N > 0 (keep"),
        ("SPEEDRUN_ACTIVATION_CHECKPOINTING", "yes", "give 1 (recompute) or 0 (keep)"),
        ("SPEEDRUN_CHECKPOINT_ASYNC", "true", "give 1 (in the background) or 0 (while training waits)"),
        ("SPEEDRUN_MICRO_WINDOWS", "0", "give N > 0 windows per micro-step, or auto"),
        ("SPEEDRUN_MICRO_WINDOWS", "3", "each of the 2 processes trains 4 windows per step, in micro-steps of k"),
        ("SPEEDRUN_RUN_ID", "../x", "a run id names the log and the checkpoint folder"),
        ("SPEEDRUN_RESUME", "latest", "SPEEDRUN_CHECKPOINT_EVERY=-1 saves none (the tiny preset's default)"),
    ]:
        monkeypatch.setenv(variable, bad)
        assert ts.preflight(2) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {variable}=") and message in err, err
        monkeypatch.delenv(variable)
    monkeypatch.setenv("SPEEDRUN_PRESET", "short")  # a record preset is train_gpt.py's
    assert ts.preflight(1) == 1 and "choose one of 1.5b, 3b, 7b, 13b, 70b, 175b, tiny" in capsys.readouterr().err
    blocker = tiny_env / "a-file"
    blocker.write_text("")
    with pytest.raises(tg.SpeedrunError, match="cannot create the checkpoint folder .*a-file/run"):
        ts.make_checkpoint_dir(blocker / "run", CPU)


def test_resume_latest_finds_the_newest_complete_checkpoint_of_the_run(tiny_env: Path, monkeypatch, capsys) -> None:
    """SPEEDRUN_RESUME=latest: the run id a restart keeps (SPEEDRUN_RUN_ID, or torchrun's rendezvous id), the newest
    folder with a config.json in <dir>/<run_id>/ (a save cut short has none), none before the first save."""
    monkeypatch.setenv("SPEEDRUN_RESUME", "latest")
    monkeypatch.setenv("SPEEDRUN_CHECKPOINT_EVERY", "4")
    monkeypatch.setenv("SPEEDRUN_CHECKPOINT_DIR", str(tiny_env / "ck"))
    args = ts.PRESETS["tiny"]

    def found(**env: str) -> ts.Resume | None:
        settings = ts.run_settings(dict(os.environ, **env), "tiny", args)
        return ts.find_resume(settings, args, dict(os.environ, **env))

    assert found() is None and found(TORCHELASTIC_RUN_ID="none") is None  # no id yet: preflight before torchrun
    assert found(TORCHELASTIC_RUN_ID="rdzv-1") is None  # the first start: nothing saved yet
    saved_config(tiny_env / "ck" / "rdzv-1" / "step_000004", step=4, run_id="rdzv-1")
    saved_config(tiny_env / "ck" / "rdzv-1" / "step_000008", step=8, metadata=False)
    (tiny_env / "ck" / "rdzv-1" / "step_000008" / "config.json").unlink()  # a save cut short
    saved_config(tiny_env / "ck" / "job-7" / "step_000012", step=12)
    assert found(TORCHELASTIC_RUN_ID="rdzv-1").path == tiny_env / "ck" / "rdzv-1" / "step_000004"
    assert found(TORCHELASTIC_RUN_ID="rdzv-1", SPEEDRUN_RUN_ID="job-7").step == 12  # the given id comes first
    assert found(TORCHELASTIC_RUN_ID="rdzv-1").seed == 1234
    with pytest.raises(tg.SpeedrunError, match="takes the run id from torchrun's rendezvous id, but 'a:b'"):
        found(TORCHELASTIC_RUN_ID="a:b")
    damaged(tiny_env / "ck" / "job-7" / "step_000012", "__0_0.distcp")
    monkeypatch.setenv("SPEEDRUN_RUN_ID", "job-7")
    assert ts.preflight(1) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: SPEEDRUN_RESUME=latest ({tiny_env / 'ck' / 'job-7' / 'step_000012'}): 1 of its 1 ")
    (tiny_env / "logs").mkdir()
    (tiny_env / "logs" / "job-7.txt").write_text("the first start\n")
    assert ts.log_path(str(tiny_env / "logs"), "job-7") == tiny_env / "logs" / "job-7.1.txt"


def test_a_torchrun_restart_that_cannot_form_its_process_group_is_one_clear_message() -> None:
    """torchrun restarted the processes, its c10d rendezvous store shared with them (the default): the first start's
    keys would be read again, so the run stops with the variable that fixes it (docs/scale.md)."""
    env = dict(TORCHELASTIC_RESTART_COUNT="1", TORCHELASTIC_USE_AGENT_STORE="True")
    assert "start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in ts.restart_problem(env)
    assert ts.restart_problem(dict(env, TORCHELASTIC_USE_AGENT_STORE="False")) is None  # with the variable
    assert ts.restart_problem(dict(env, TORCHELASTIC_RESTART_COUNT="0")) is None  # the first start


@pytest.mark.slow
def test_the_export_holds_one_weight_at_a_time(tmp_path: Path, capsys) -> None:
    """`train_scale.export_checkpoint` on a checkpoint of the 30M model (110 MB of weights, the largest 1.6 MB): the
    process's resident set grows by a few MB, never by the model, and the file holds the checkpoint's weights."""
    from safetensors.torch import load_file

    gen = torch.Generator().manual_seed(0)
    model = {k: torch.randn(v.shape, generator=gen) for k, v in tg.GPT(MEMORY_MODEL).state_dict().items()}
    whole = sum(t.numel() * 4 for t in model.values())
    folder = saved_config(tmp_path / "run" / "step_000001", metadata=False, step=1)
    dcp.save({"model": model}, checkpoint_id=folder, no_dist=True)
    script = (
        "import sys, torch, train_gpt as tg, train_scale as ts; from pathlib import Path; "
        "from bench.scale_memory import Meter; meter = Meter(tg.Dist(0, 1, 0, torch.device('cpu'))); "
        "meter.reset(); before = meter.now(); ts.export_checkpoint(Path(sys.argv[1]), Path(sys.argv[2])); "
        "print(meter.peak() - before)"
    )
    out = tmp_path / "export"
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder), str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    grew = int(done.stdout.split()[-1])
    assert whole > 100 * 2**20 and grew < 0.2 * whole, (grew, whole)
    exported = load_file(str(out / "model.safetensors"))
    assert exported.keys() == model.keys() and all(torch.equal(exported[k], model[k]) for k in model)
    assert ts.export_main([str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 1  # `train_scale.py --export`
    err = capsys.readouterr().err
    assert err.startswith("error: cannot export the checkpoint ") and "Give a complete step_<NNNNNN> checkpoint" in err
    assert ts.export_main([str(folder), str(tmp_path / "again")]) == 0
    assert f"exported {folder} -> {tmp_path / 'again'}/ (" in capsys.readouterr().out


def test_pruning_keeps_the_newest_complete_checkpoints_of_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for step in (5, 10, 100, 1_000_000):  # past step_999999 the names grow a digit: steps sort as numbers
        (run / f"step_{step:06d}").mkdir(parents=True)
        (run / f"step_{step:06d}" / "config.json").write_text("{}")
        (run / f"step_{step:06d}" / "__0_0.distcp").write_bytes(b"x")
    (run / "step_000200").mkdir()  # being written by another save: no config.json yet, left alone
    (run / "step_notes").mkdir()
    removed = ts.prune_checkpoints(run, 2)
    assert removed == [(run / "step_000005", None), (run / "step_000010", None)]
    assert sorted(p.name for p in run.iterdir()) == ["step_000100", "step_000200", "step_1000000", "step_notes"]
    assert ts.prune_checkpoints(run, 2) == []
    assert ts.prune_checkpoints(run, 5) == []
