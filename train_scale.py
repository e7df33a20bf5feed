"""The scale ladder: train_gpt.py's model, from 1.5B to 175B parameters, sharded over any number of GPUs and nodes.

train_gpt.py is the record file: one model, replicated (ddp), raced on 8 GPUs. This file imports its model (its init
rule and its forward), Muon, data loader, logging, timed loop and run skeleton (train_gpt.Run, whose hooks ScaleRun
fills in), and adds what a model too big for one GPU needs: FSDP2 (weights, gradients and optimizer state sharded
over every rank), Muon on those shards, the model built on the meta device so that each rank only ever holds its own
shards, activation checkpointing, several windows per micro-step, and checkpoints (torch.distributed.checkpoint,
written in the background) that a restarted job continues from. A scale run is never a record (track `scale`).
Before renting a cluster:

    python train_scale.py --plan                                # every preset at 8, 64 and 1,024 GPUs
    python train_scale.py --plan 70b --gpus 64 --gpu-memory 80GiB

prints the memory each GPU needs, term by term, from the meta-device model, the sharding rule itself and the
assumptions it lists. To train, and to turn a checkpoint into safetensors one tensor at a time:

    SPEEDRUN_PRESET=7b torchrun --nproc_per_node=8 train_scale.py      # or ./run.sh; several nodes: docs/scale.md
    python train_scale.py --export checkpoints/<run_id>/step_004750 exports/7b

Its log holds both files' code: this file, a line of 40 '-', a line '# train_gpt.py', then train_gpt.py
(docs/log-format.md). Environment variables: train_gpt.py's, and those of ScaleRunSettings.
"""

from __future__ import annotations

with open(__file__, encoding="utf-8") as _source:
    OWN_CODE = _source.read()  # read first, as train_gpt.py does; the log's code is both files (CODE below)

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor import Shard as ShardDim
from torch.utils.checkpoint import checkpoint

import train_gpt as tg
from train_gpt import SpeedrunError

CODE = OWN_CODE + "-" * 40 + "\n# train_gpt.py\n" + tg.CODE  # one code identity: the log's source section


# -----------------------------------------------------------------------------------------------
# Sharding: FSDP2 cuts every weight along one dim (the rule below) into world_size slices as torch.chunk does.


def shard_dim(shape: torch.Size | tuple[int, ...]) -> int:
    """The dim a weight is cut along: the stacked q/k/v weight (3, hdim, dim) along hdim, every other along dim 0."""
    return 1 if len(shape) == 3 else 0


def shard_rows(n: int, world_size: int, rank: int) -> range:
    """The indices along the cut dim that rank holds of n: torch.chunk's slices (ceil(n / world_size) each, the last
    ones short or empty), which FSDP2 uses."""
    per = -(-n // world_size)
    return range(min(rank * per, n), min((rank + 1) * per, n))


def local(t: Tensor) -> Tensor:
    """This rank's slice of a DTensor (a plain tensor is all local)."""
    return t.to_local() if isinstance(t, DTensor) else t


def ensure_process_group(d: tg.Dist) -> None:
    """FSDP2 and its DeviceMesh need a process group even for one process started without torchrun."""
    if not dist.is_initialized():
        backend = "nccl" if d.cuda else "gloo"
        dist.init_process_group(
            backend, store=dist.HashStore(), rank=0, world_size=1, device_id=d.device if d.cuda else None
        )


def mixed_precision(d: tg.Dist) -> MixedPrecisionPolicy:
    """CUDA: compute in bf16 from the fp32 sharded weights, reduce gradients in fp32. CPU: fp32 throughout."""
    if d.cuda:
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def shard_model(model: tg.GPT, d: tg.Dist) -> None:
    """fully_shard on each block, each embedding table, and the root (the head and the scalars): every weight
    becomes a DTensor slice, all-gathered just before its module runs and freed after (the root's stay gathered
    through the step, as FSDP2 does for a root: the head runs last and first again in backward); gradients are
    reduce-scattered as backward goes, each rank keeping the sums of its slices. The tables are units of their own
    because the lookups need them only at the start of forward and at the end of backward: at 175B each is 2.5 GB.
    The FP8 head receives the all-gathered weight; its fp32 weight gradient is reduced like the others."""
    ensure_process_group(d)
    mesh, mp = init_device_mesh(d.device.type, (d.world_size,)), mixed_precision(d)
    placement = lambda p: ShardDim(shard_dim(p.shape))  # noqa: E731 (FSDP2 calls it per parameter)
    for unit in [model.embed, *model.value_embeds, *model.blocks]:
        fully_shard(unit, mesh=mesh, mp_policy=mp, shard_placement_fn=placement)
    fully_shard(model, mesh=mesh, mp_policy=mp, shard_placement_fn=placement)
    for m in model.modules():
        if isinstance(m, FSDPModule):  # plain sums; train_step divides by the window count, as in ddp
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)


# -----------------------------------------------------------------------------------------------
# Optimizer: Muon on FSDP2 slices, and the gradient accumulation that keeps 1 and 2 processes the same run.


def rows_first(t: Tensor, dim: int, n: int) -> Tensor:
    """t with dim moved first, zero-padded to n rows: a slice laid out for the all-to-all."""
    t = t.movedim(dim, 0)
    return torch.cat([t, t.new_zeros(n - t.size(0), *t.shape[1:])]) if t.size(0) < n else t.contiguous()


class ShardedMuon(tg.Muon):
    """train_gpt.Muon on DTensor slices. Each rank keeps the momentum of its own slices, so the optimizer state is
    sharded like the weights (and a checkpoint reshards to any world size). Matrices are grouped by shape and dealt
    round-robin as in Muon; per round, one all-to-all brings each owner every slice of its matrix's Nesterov
    gradient (in bf16, where Newton-Schulz starts anyway) and a second sends each rank its slices of the updates:
    a rank moves about two matrices per round, whatever the world size. Elementwise math is the same on slices as
    on whole matrices and Newton-Schulz sees the same bits, so the update is Muon's, bitwise."""

    @staticmethod
    def group_of(p: Tensor) -> object:  # a round's slices are laid out alike: one shape per group
        return tuple(p.shape)

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params: list[DTensor] = group["params"]  # all of one shape and placement
            W, shape = self.world_size, params[0].shape
            dim = shard_dim(shape)
            rows = -(-shape[dim] // W)  # rows per slice, as FSDP2 cuts (the last may be short)

            for base in range(0, len(params), W):
                round_ = params[base : base + W]
                # send[j]: this rank's slice of the j-th matrix of the round, for its owner j (zeros if none)
                send = torch.zeros(
                    W, rows, *shape[:dim], *shape[dim + 1 :], dtype=torch.bfloat16, device=round_[0].device
                )
                for j, p in enumerate(round_):
                    send[j] = rows_first(local(self.nesterov(p, group["momentum"])), dim, rows)
                recv = send
                if W > 1:
                    recv = torch.empty_like(send)
                    dist.all_to_all_single(recv, send)  # recv[k]: rank k's slice of the matrix this rank owns
                update = torch.zeros_like(send)
                if self.rank < len(round_):
                    whole = recv.flatten(0, 1)[: shape[dim]].movedim(0, dim).contiguous()
                    update = rows_first(self.orthogonalise(whole, group["ns_steps"]), dim, W * rows).view_as(send)
                back = update
                if W > 1:
                    back = torch.empty_like(update)
                    dist.all_to_all_single(back, update)  # back[j]: this rank's slice of the j-th update
                for j, p in enumerate(round_):
                    self.apply_update(local(p), back[j][: local(p).size(dim)].movedim(0, dim), p.shape, group)


class ShardedGrads:
    """FSDP2 owns the gradients: each backward reduce-scatters (sums) a micro-step's gradients over the ranks and adds
    the result to the sharded .grad, so a step sums, in order, the cross-rank sums of each micro-step: (w0 + w4) +
    (w1 + w5) + ... on 2 processes of 4 windows each. One process adds exactly that when it runs the micro-steps in
    pairs (0, 4), (1, 5), ..., the first of each without gradient sync, so that FSDP2 adds the pair before it
    reaches the sharded gradient: 1 and 2 processes are bitwise the same run, as train_gpt.GradBuckets makes ddp.
    The pairing keeps one extra (unsharded) copy of the gradients on a single process.

    micro_windows: windows per micro-step, run as one batch (one all-gather and one reduce-scatter of the model for
    k windows instead of k); (w0 + w1) + (w4 + w5) on 2 processes with 2. Within a batch the sums run in another
    order than k one-window micro-steps: the same losses to float rounding, not bitwise."""

    def __init__(self, model: tg.GPT, roles: dict[str, list[nn.Parameter]], world_size: int, micro_windows: int = 1):
        self.model, self.roles, self.world_size, self.micro_windows = model, roles, world_size, micro_windows

    def zero(self) -> None:
        for params in self.roles.values():
            for p in params:
                p.grad = None

    def accumulate(self, forward_backward, windows: range, d: tg.Dist) -> dict[int, Tensor]:
        k, half = self.micro_windows, len(windows) // 2
        groups = [windows[i : i + k] for i in range(0, len(windows), k)]
        pairs = self.world_size == 1 and len(windows) == 2 * half and half % k == 0
        order = (
            [g for i in range(len(groups) // 2) for g in (groups[i], groups[i + len(groups) // 2])] if pairs else groups
        )
        self.zero()
        losses = {}
        for n, group in enumerate(order):
            self.model.set_requires_gradient_sync(not pairs or n % 2 == 1)
            loss = forward_backward(group if k > 1 else group[0])  # one window: the record file's own path
            losses.update(zip(group, loss.unbind() if k > 1 else [loss], strict=True))
        return losses

    def finish_mean(self, role: str, scale: float) -> None:
        for p in self.roles[role]:
            p.grad.mul_(scale)


def micro_windows_problem(k: int, args: tg.Hyperparameters, world_size: int) -> str | None:
    """Why k windows per micro-step cannot run on world_size processes, or None: k must divide the windows of each
    process (and on one process each half of the step, which ShardedGrads pairs)."""
    mine = args.windows_per_step // world_size
    unit = mine // 2 if world_size == 1 and mine % 2 == 0 else mine
    if k >= 1 and unit % k == 0:
        return None
    who = f"each of the {world_size} processes trains {mine}" if world_size > 1 else f"the one process trains {mine}"
    halves = f" in two halves of {unit} (paired, so that 1 and 2 processes are the same run)" if unit != mine else ""
    fits = ", ".join(str(n) for n in range(1, unit + 1) if unit % n == 0)
    return (
        f"SPEEDRUN_MICRO_WINDOWS={k}: {who} windows per step{halves}, in micro-steps of k windows: give a k that "
        f"divides {unit} ({fits}), or auto for the largest that fits in memory"
    )


def build_optimizers(model: tg.GPT, args: tg.Hyperparameters, d: tg.Dist, micro_windows: int = 1) -> tuple:
    grads = functools.partial(ShardedGrads, model, world_size=d.world_size, micro_windows=micro_windows)
    return tg.build_optimizers(model, args, d, ShardedMuon, grads)


# -----------------------------------------------------------------------------------------------
# The model on the meta device: built without memory, sharded, then each rank materialises and initialises only
# its own slices, with the record file's init statistics and the same values on any world size.


def row_generator(seed: int, name: str, row: int) -> torch.Generator:
    """The generator of one row (along the cut dim) of one weight: a rank draws exactly its own rows, and a row has
    the same values whichever rank holds it, so the model is the same on any world size."""
    key = hashlib.sha256(f"speedrun-init:{seed}:{name}:{row}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(key[:8], "little") >> 1)


def init_slices(model: tg.GPT, seed: int, d: tg.Dist) -> None:
    """Fill this rank's slice of every weight (the model was materialised empty) by GPT.init_rule, the record file's
    own rule: random matrices row by row from row_generator, values narrowed to the slice; then the rotary tables."""
    rule = model.init_rule()
    with torch.no_grad():
        for name, p in model.named_parameters():
            (how, arg), dim, mine = rule[name], shard_dim(p.shape), local(p)
            rows = shard_rows(p.shape[dim], d.world_size, d.rank)
            if how == "values":  # one value for all, or one for each element: this rank's slice of them
                whole = torch.tensor(arg, dtype=mine.dtype).expand(p.shape)
                mine.copy_(whole.narrow(dim, rows.start, len(rows)))
                continue
            drawn = torch.zeros(mine.movedim(dim, 0).shape)
            for k, row in enumerate(rows):
                if how == "normal":
                    drawn[k].normal_(0.0, arg, generator=row_generator(seed, name, row))
                else:
                    drawn[k].uniform_(-arg, arg, generator=row_generator(seed, name, row))
            mine.copy_(drawn.movedim(0, dim))
    args = model.args
    rotary = tg.Rotary(args.head_dim, max(args.train_seq_len, args.val_seq_len), args.rope_min_freq).to(d.device)
    for m in model.modules():
        if isinstance(m, tg.Rotary):  # non-persistent buffers, left empty by to_empty: one shared copy for all
            m.cos, m.sin = rotary.cos, rotary.sin


def build_model(args: tg.Hyperparameters, seed: int, d: tg.Dist) -> tg.GPT:
    """The model, sharded with FSDP2 over all ranks, each rank materialising only its slices (a 175B model's fp32
    weights are 700 GB: no rank could build it whole)."""
    with torch.device("meta"):
        model = tg.GPT(args)
    shard_model(model, d)
    model.to_empty(device=d.device)
    init_slices(model, seed, d)
    return model


def prepare_blocks(model: tg.GPT, args: tg.Hyperparameters, activation_checkpointing: bool) -> None:
    """Each block's forward compiled on its own (FSDP2's hooks, the all-gather before a block and the reduce-scatter
    after, stay outside the graphs, as in torchtitan; blocks share graphs, so depth costs no compilation), and with
    activation checkpointing run again in backward instead of keeping its activations: a block keeps only its
    input, for a third more compute."""
    for block in model.blocks:
        forward = torch.compile(block.forward, dynamic=False, fullgraph=True) if args.compile else block.forward
        if activation_checkpointing:
            forward = functools.partial(checkpoint, forward, use_reentrant=False)
        block.forward = forward


# -----------------------------------------------------------------------------------------------
# Presets: the ladder. The record's architecture made wider and deeper (gigaGPT's idea: one model definition, one
# table of sizes), 4 Ki-token windows, each run about 10B tokens (one pass over FineWeb10B's 103 train shards).


def rung(layers: int, width: int, windows: int, steps: int, muon_lr: float) -> tg.Hyperparameters:
    """The short and long attention windows are the record's. Learning rates are untuned starting points that
    follow the medium record's rules (head lr 0.1 / sqrt(width); embeddings 0.3; scalars 0.015; decay to 0), and
    the FP8 head is off: at this size it is a few percent of the FLOPs, not worth its static-scale risk."""
    return dataclasses.replace(
        tg.Hyperparameters(),
        train_seq_len=4096,
        val_seq_len=4096,
        val_tokens=max(1, 10_485_760 // (windows * 4096)) * windows * 4096,  # the records' 10.5M, in whole steps
        windows_per_step=windows,
        num_layers=layers,
        model_dim=width,
        num_heads=width // 128,
        attention_pattern=("LSSS" * layers)[: layers - 1] + "L",
        fp8_head=False,
        num_iterations=steps,
        lr_final_frac=0.0,
        adam_lr_head=0.1 / width**0.5,
        adam_lr_embed=0.3,
        adam_lr_scalar=0.015,
        muon_lr=muon_lr,
        val_loss_every=250,
        warmup_steps=2,
    )


# Parameters count the 3 value-embedding tables (lookups, not matmuls). Muon lrs scale about as 1 / sqrt(width).
#   preset  blocks  width  heads x dim  parameters (hidden)  muon lr  batch (windows x 4 Ki)   steps  activations
#   1.5b    52      1536   12 x 128     1.86B (1.47B)        0.02     128 (0.5M tokens)        19000  kept
#   3b      32      2560   20 x 128     3.16B (2.52B)        0.015    256 (1.0M tokens)        9500   kept
#   7b      32      4096   32 x 128     7.47B (6.44B)        0.01     512 (2.1M tokens)        4750   kept
#   13b     40      5120   40 x 128     13.9B (12.6B)        0.01     512 (2.1M tokens)        4750   checkpointed
#   70b     80      8192   64 x 128     66.5B (64.4B)        0.008    1024 (4.2M tokens)       2300   checkpointed
#   175b    96      12288  96 x 128     177B (174B)          0.007    1024 (4.2M tokens)       2300   checkpointed
# 1.5b has the depth, width and batch of the public modded-nanogpt ScaleUp1B run (2024-10-20); 3b and 7b take
# Llama-like shapes; 13b, 70b and 175b gigaGPT's depths and widths (40 x 5120, 80 x 8192, 96 x 12288) with this
# architecture, their batches rounded to 1,024 windows so that 1,024 GPUs share them.
PRESETS: dict[str, tg.Hyperparameters] = {
    "1.5b": rung(52, 1536, windows=128, steps=19000, muon_lr=0.02),
    "3b": rung(32, 2560, windows=256, steps=9500, muon_lr=0.015),
    "7b": rung(32, 4096, windows=512, steps=4750, muon_lr=0.01),
    "13b": rung(40, 5120, windows=512, steps=4750, muon_lr=0.01),
    "70b": rung(80, 8192, windows=1024, steps=2300, muon_lr=0.008),
    "175b": rung(96, 12288, windows=1024, steps=2300, muon_lr=0.007),
    # the smoke model of train_gpt.py, sharded: CPU runs of this file (the tests), 1 to 8 processes
    "tiny": tg.PRESETS["smoke"],
}
# Each preset's defaults for the run settings that are not the recipe: checkpoints, and activation checkpointing
# where a model's activations would not fit beside its states on an 80 GB GPU (python train_scale.py --plan).
PRESET_SETTINGS = {
    "1.5b": dict(checkpoint_every=1000),
    "3b": dict(checkpoint_every=500),
    "7b": dict(checkpoint_every=250),
    "13b": dict(checkpoint_every=250, activation_checkpointing=True),
    "70b": dict(checkpoint_every=100, activation_checkpointing=True),
    "175b": dict(checkpoint_every=100, activation_checkpointing=True),
    "tiny": dict(checkpoint_every=-1),
}


@dataclass(frozen=True)
class ScaleRunSettings(tg.RunSettings):
    """train_gpt.RunSettings and this file's: none changes a number the run computes (logged under "run"), but for
    micro_windows, which changes the order of float sums within a step (the losses to rounding, not bitwise)."""

    checkpoint_dir: str = "checkpoints"  # SPEEDRUN_CHECKPOINT_DIR: checkpoints go to <dir>/<run_id>/step_<NNNNNN>/
    checkpoint_every: int = -1  # SPEEDRUN_CHECKPOINT_EVERY: N > 0 every N steps and at the end; 0 at the end; -1 never
    checkpoint_keep: int = 0  # SPEEDRUN_CHECKPOINT_KEEP: keep this run's newest N checkpoints; 0: keep all
    checkpoint_async: bool = True  # SPEEDRUN_CHECKPOINT_ASYNC=1|0: write in the background (the clock stops to stage)
    resume: str | None = None  # SPEEDRUN_RESUME: a step_<NNNNNN> checkpoint folder, or latest (this run's newest)
    run_id: str | None = None  # SPEEDRUN_RUN_ID: the run's name (log, checkpoint folder); unset: a fresh uuid
    activation_checkpointing: bool = False  # SPEEDRUN_ACTIVATION_CHECKPOINTING=1|0 (default: the preset's)
    micro_windows: int = 0  # SPEEDRUN_MICRO_WINDOWS: windows per micro-step; 0 (auto): the largest the plan fits


LATEST = "latest"  # SPEEDRUN_RESUME=latest
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def switch(env: dict[str, str], variable: str, meaning: tuple[str, str]) -> bool | None:
    """A 1|0 variable: True, False, or None when unset."""
    value = env.get(variable, "").strip()
    if value not in ("", "0", "1"):
        raise SpeedrunError(f"{variable}={value!r}: give 1 ({meaning[0]}) or 0 ({meaning[1]}).")
    return None if not value else value == "1"


def run_settings(env: dict[str, str], preset: str, args: tg.Hyperparameters) -> ScaleRunSettings:
    """The settings from the environment, the preset's defaults where a variable is unset."""
    base, defaults = tg.run_settings(env, args), PRESET_SETTINGS[preset]
    settings = ScaleRunSettings(**dataclasses.asdict(base), **defaults)
    checks = (
        (
            "checkpoint_every",
            "SPEEDRUN_CHECKPOINT_EVERY",
            -1,
            "N > 0 (every N steps and at the end), 0 (at the end) or -1 (never)",
        ),
        (
            "checkpoint_keep",
            "SPEEDRUN_CHECKPOINT_KEEP",
            0,
            "N > 0 (keep the run's newest N checkpoints) or 0 (keep them all)",
        ),
        ("micro_windows", "SPEEDRUN_MICRO_WINDOWS", 1, "N > 0 windows per micro-step, or auto (the largest that fits)"),
    )
    for field, variable, lowest, meaning in checks:
        if field == "micro_windows" and env.get(variable, "").strip() == "auto":
            continue
        value = tg.env_int(env, variable, meaning)
        if value is not None and value < lowest:
            raise SpeedrunError(f"{variable}={value}: give {meaning}.")
        settings = dataclasses.replace(settings, **({field: value} if value is not None else {}))
    switches = dict(
        activation_checkpointing=switch(env, "SPEEDRUN_ACTIVATION_CHECKPOINTING", ("recompute", "keep")),
        checkpoint_async=switch(env, "SPEEDRUN_CHECKPOINT_ASYNC", ("in the background", "while training waits")),
    )
    settings = dataclasses.replace(settings, **{k: v for k, v in switches.items() if v is not None})
    run_id = env.get("SPEEDRUN_RUN_ID", "").strip() or None
    if run_id is not None and not RUN_ID.fullmatch(run_id):
        raise SpeedrunError(
            f"SPEEDRUN_RUN_ID={run_id!r}: a run id names the log and the checkpoint folder; give 1 to 128 letters, "
            "digits, '.', '_' or '-', starting with a letter or digit (under SLURM: SPEEDRUN_RUN_ID=$SLURM_JOB_ID)."
        )
    if settings.export_dir is not None and settings.checkpoint_every < 0:  # the export converts the final checkpoint
        settings = dataclasses.replace(settings, checkpoint_every=0)
    resume = env.get("SPEEDRUN_RESUME", "").strip() or None
    if resume == LATEST and settings.checkpoint_every < 0:
        raise SpeedrunError(
            f"SPEEDRUN_RESUME=latest continues from this run's newest checkpoint, but SPEEDRUN_CHECKPOINT_EVERY="
            f"{settings.checkpoint_every} saves none (the {preset} preset's default): set SPEEDRUN_CHECKPOINT_EVERY=N."
        )
    checkpoint_dir = env.get("SPEEDRUN_CHECKPOINT_DIR") or settings.checkpoint_dir
    return dataclasses.replace(settings, checkpoint_dir=checkpoint_dir, resume=resume, run_id=run_id)


# -----------------------------------------------------------------------------------------------
# Memory plan: what each GPU holds, from the meta-device model and the sharding rule above, before any GPU is rented.

GIB, MIB = 2**30, 2**20
# What the plan counts beyond the model's own tensors, each number with where it comes from (--plan prints them).
GPUS_PER_NODE = 8  # NCCL's peers on the same node (NVLink) and on others (network): an 8-GPU node
CUDA_FIXED = 1 * GIB  # per GPU outside the allocator before any all-to-all: the CUDA context, cuBLAS and NCCL's
# ring/tree channels: 1.06 GB measured on each of 8 H100s (NVIDIA/nccl issue 1685)
NVLINK_PEER = 470 * MIB  # NCCL's send/recv buffers per peer on the node once an all-to-all has run (Muon's spans
# every rank): 3.28 GB more for 7 peers on 8 H100s, 32 channels per pair (NVIDIA/nccl issue 1685)
NET_PEER = 8 * MIB  # per peer on another node: 2 channels (NCCL_NCHANNELS_PER_NET_PEER) x send and receive x
# 2 MiB buffers (the 2 MiB allocations of issue 1685); an assumption, not yet measured
FRAGMENTATION = 0.05  # the caching allocator's reserve beyond its peak, with expandable segments: an allowance
LOGIT_BYTES = dict(cuda=16, cpu=12)  # the head's peak per token and vocabulary entry: CUDA, eager soft cap and loss
# on bf16 logits (bf16 out, fp32 copy, sigmoid, log-softmax and their gradients: ~16, the measure); CPU,
# fp32 throughout: logits, sigmoid (kept) and log-softmax (kept), measured by bench/scale_memory.py
CPU_FIXED = 50 * MIB  # CPU: the code torch maps on first use and its first buffers, measured (bench/scale_memory.py
# on a 2-layer, 16-wide model: 50.6 MiB on 1 process, 50.5 and 50.4 on 2; torch 2.13, one thread)


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes on the rank that holds the most (rank 0: the first slices are the full ones), term by term."""

    parameters: int  # fp32 slices of the weights
    gradients: int  # fp32 slices of the gradients, from the first reduce-scatter to the next step
    optimizer: int  # Adam's two moments (embeddings, head, scalars), Muon's momentum (hidden matrices)
    unsynced: int  # one process: the unsharded fp32 gradient sums of a micro-step pair (ShardedGrads); else 0
    activations: int  # what backward keeps of a micro-step's windows (recompute: each block's input, one block's)
    logits: int  # the head's peak: logits, soft cap, loss and their gradients for a micro-step's windows
    gathered: int  # FSDP2's unsharded weights and gradients in flight, and the all-gather's copy-out buffer
    muon: int  # the largest Muon round: the all-to-all buffers and Newton-Schulz's working set, in bf16
    collectives: int  # CUDA: NCCL's all-to-all buffers, per peer (grow with the world size); CPU: 0
    fixed: int  # CUDA: context, cuBLAS, NCCL's channels; CPU: the code torch loads on first use
    fragmentation: int  # CUDA: the allocator's reserve beyond its peak; CPU: 0

    @property
    def forward_backward(self) -> int:
        """The transient of forward and backward (the gradients come as backward goes)."""
        return self.unsynced + self.activations + self.logits + self.gathered

    @property
    def allocated(self) -> int:
        """The allocator's peak: Muon's round comes after backward has freed the activations and gathered weights."""
        return self.parameters + self.gradients + self.optimizer + max(self.forward_backward, self.muon)

    @property
    def total(self) -> int:
        return self.allocated + self.collectives + self.fixed + self.fragmentation


@functools.cache
def model_shapes(args: tg.Hyperparameters) -> dict[str, list[tuple[int, ...]]]:
    """The shapes of the model's parameters by optimizer role, and of its FSDP2 units (the embedding table and each
    block: "units"; the root's own weights: "root"), from the model built on the meta device (cached: the plan asks
    for the same model at every world size and micro-step)."""
    with torch.device("meta"):
        model = tg.GPT(args)
    shapes = {role: [tuple(p.shape) for p in ps] for role, ps in model.param_groups().items()}
    shapes["units"] = [(sum(p.numel() for p in unit.parameters()),) for unit in [model.embed, *model.blocks]]
    shapes["root"] = [tuple(model.lm_head.weight.shape), *shapes["scalar"]]
    return shapes


def plan_memory(
    args: tg.Hyperparameters, world_size: int, device: str = "cuda", recompute: bool = False, micro_windows: int = 1
) -> MemoryPlan:
    """Per-GPU memory of a training step of `args` on world_size ranks with micro_windows windows per micro-step,
    computed from the model built on the meta device and cut by shard_rows/shard_dim, the rule shard_model gives
    FSDP2, plus the assumptions above. device "cpu" is how the tests run it: fp32 activations, dense attention masks,
    the resident set of the process over what it held before building the model."""
    shapes = model_shapes(args)
    W, k, cuda = world_size, micro_windows, device == "cuda"
    compute = 2 if cuda else 4  # bytes of a weight or activation as computed: bf16 on CUDA, fp32 on CPU
    numel = math.prod

    def mine(shape: tuple[int, ...]) -> int:  # elements of rank 0's slice
        dim = shard_dim(shape)
        return len(shard_rows(shape[dim], W, 0)) * (numel(shape) // shape[dim])

    roles = ("hidden", "embed", "head", "scalar")
    sliced, whole = (sum(f(s) for r in roles for s in shapes[r]) for f in (mine, numel))
    adam = sum(mine(s) for role in ("embed", "head", "scalar") for s in shapes[role])
    optimizer = 4 * (2 * adam + sum(mine(s) for s in shapes["hidden"]))
    muon = 0
    for shape in shapes["hidden"]:  # send, recv, update, back: W slices of the matrix each, plus Newton-Schulz
        dim = shard_dim(shape)
        padded = W * -(-shape[dim] // W) * (numel(shape) // shape[dim])
        m, n = sorted(shape[-2:])
        batch = numel(shape) // (m * n)
        muon = max(muon, 2 * (4 * padded + batch * (4 * m * n + 4 * m * m)))
    root, block = sum(numel(s) for s in shapes["root"]), max(numel(s) for s in shapes["units"])
    # unsharded: the root's weights for the whole step and its gradients at the end of backward, two other units'
    # weights (one in use, one prefetched), the all-gather's output buffer of the prefetched one before its
    # copy-out, and one unit's gradients before their reduce-scatter (CUDA: also their fp32 copy for the reduction)
    gathered = compute * (2 * root + 3 * block) + (4 * (root + block) if cuda else 0)
    T, D, V = args.train_seq_len, args.model_dim, shapes["head"][0][0]
    attention = sum(c != "-" for c in args.attention_pattern)
    mlp = 3 + 2 * args.mlp_ratio  # per token, in units of D: measured with saved-tensor hooks (tests)
    per_layer = [T * D * compute * (mlp + (9 if c != "-" else 0)) for c in args.attention_pattern]
    kept = T * D * compute * len(per_layer) if recompute else sum(per_layer)  # recompute: each block's input
    kept += max(per_layer) if recompute else 0  # the block being recomputed
    kept += 0 if cuda else attention * 4 * T * T  # CPU: SDPA keeps each layer's mask as fp32
    kept += T * D * compute * (4 + args.num_value_embeds)  # the embeddings, x0 and the final norm
    nvlink = min(W, GPUS_PER_NODE) - 1
    allocator = MemoryPlan(
        parameters=4 * sliced,
        gradients=4 * sliced,
        optimizer=optimizer,
        unsynced=4 * whole if W == 1 else 0,
        activations=k * kept,
        logits=k * T * V * LOGIT_BYTES[device],
        gathered=gathered,
        muon=muon,
        collectives=(nvlink * NVLINK_PEER + (W - 1 - nvlink) * NET_PEER) if cuda and W > 1 else 0,
        fixed=CUDA_FIXED if cuda else CPU_FIXED,
        fragmentation=0,
    )
    return dataclasses.replace(allocator, fragmentation=int(FRAGMENTATION * allocator.allocated) if cuda else 0)


def assumptions(device: str = "cuda") -> list[str]:
    """What plan_memory assumes beyond the model's tensors, one line each, as --plan prints them."""
    if device == "cpu":
        return [
            "fp32 weights, activations and logits; SDPA's dense masks kept as fp32 (T^2 per attention layer)",
            f"fixed: {CPU_FIXED / MIB:.0f} MiB, the code torch maps on first use (measured, torch 2.13, one thread)",
            f"logits: {LOGIT_BYTES['cpu']} bytes per token and vocabulary entry at the head's peak",
        ]
    return [
        "bf16 compute from fp32 slices (FSDP2 MixedPrecisionPolicy), fp32 gradient reduction, fp32 optimizer state",
        f"fixed: {CUDA_FIXED / GIB:.2f} GiB per GPU for the CUDA context, cuBLAS and NCCL's ring/tree channels "
        "(NVIDIA/nccl issue 1685)",
        f"collectives: Muon's all-to-all over every rank; NCCL buffers of {NVLINK_PEER / MIB:.0f} MiB per peer on the "
        f"node (issue 1685) and {NET_PEER / MIB:.0f} MiB per peer elsewhere (assumed), {GPUS_PER_NODE} GPUs a node",
        f"logits: {LOGIT_BYTES['cuda']} bytes per token and vocabulary entry at the eager head's peak",
        f"fragmentation: {FRAGMENTATION:.0%} of the allocator's peak (expandable segments, set by train_scale.py)",
        "not counted: the validation pass (smaller than a training step), host memory (checkpoint staging)",
    ]


def device_memory(d: tg.Dist) -> int | None:
    """The bytes a GPU has (None on CPU): what the largest micro-step must fit in."""
    return torch.cuda.get_device_properties(d.device).total_memory if d.cuda else None


def choose_micro_windows(
    args: tg.Hyperparameters, world_size: int, device: str, recompute: bool, memory: int | None
) -> int:
    """The largest windows per micro-step that the plan fits in `memory` (the fewest all-gathers and
    reduce-scatters of the model per step); 1 when none does, and on CPU (memory None)."""
    best = 1
    for k in range(2, args.windows_per_step // world_size + 1) if memory is not None else ():
        if micro_windows_problem(k, args, world_size) is None:  # the plan grows with k: stop at the first too big
            if plan_memory(args, world_size, device, recompute, k).total > memory:
                break
            best = k
    return best


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(GiB|GB|MiB|MB)?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 80GiB, 141GB or 40960MiB")
    unit = {"GiB": GIB, "GB": 10**9, "MiB": MIB, "MB": 10**6, None: GIB}[m[2]]
    return int(float(m[1]) * unit)


PLAN_TERMS = (
    ("params", "parameters"),
    ("grads", "gradients"),
    ("optim", "optimizer"),
    ("unsync", "unsynced"),
    ("activ", "activations"),
    ("logits", "logits"),
    ("gather", "gathered"),
    ("muon", "muon"),
    ("comms", "collectives"),
    ("fixed", "fixed"),
    ("frag", "fragmentation"),
    ("total", "total"),
)


def plan_row(preset: str, n: int, gpu_memory: int, device: str = "cuda", micro_windows: int | None = None) -> tuple:
    """(windows per micro-step, MemoryPlan, verdict) of a preset on n GPUs: the largest micro-step that fits unless
    micro_windows is given."""
    args, recompute = PRESETS[preset], PRESET_SETTINGS[preset].get("activation_checkpointing", False)
    if problem := cannot_run(args, n):
        return 1, plan_memory(args, n, device, recompute), "no: " + problem.removeprefix("invalid configuration: ")
    k = micro_windows or choose_micro_windows(args, n, device, recompute, gpu_memory)
    if problem := micro_windows_problem(k, args, n):
        return k, plan_memory(args, n, device, recompute), f"no: {problem}"
    plan = plan_memory(args, n, device, recompute, k)
    return k, plan, "yes" if plan.total <= gpu_memory else f"no: needs {plan.total / GIB:.1f} GiB"


def plan_table(
    presets: list[str], gpus: list[int], gpu_memory: int, device: str = "cuda", micro_windows: int | None = None
) -> str:
    """The plan as a table: one row per preset and GPU count, GiB per GPU, then what it assumes."""
    rows = [("preset", "GPUs", "micro", *(short for short, _ in PLAN_TERMS), "fits")]
    for preset in presets:
        recompute = PRESET_SETTINGS[preset].get("activation_checkpointing", False)
        for n in gpus:
            k, p, verdict = plan_row(preset, n, gpu_memory, device, micro_windows)
            sizes = [f"{getattr(p, field) / GIB:.2f}" for _, field in PLAN_TERMS]
            rows.append((preset + (" (recompute)" if recompute else ""), str(n), str(k), *sizes, verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    last = len(rows[0]) - 1
    lines = [
        "  ".join(c.ljust(w) if i in (0, last) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    notes = [
        f"GiB per GPU on rank 0; micro: windows per micro-step, the largest that fits unless --micro-windows; fits: "
        f"total <= {gpu_memory / GIB:.1f} GiB; total = params + grads + optim + max(unsync + activ + logits + gather, "
        "muon) + comms + fixed + frag (Muon's round comes after backward has freed the activations)",
        *assumptions(device),
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n" + "\n".join(f"  {note}" for note in notes)


def plan_vs_measured(plan: MemoryPlan, measured: dict[str, int], title: str) -> str:
    """bench/scale_memory.py's terms next to the plan's, MiB (rank 0)."""
    pairs = [
        ("parameters", plan.parameters),
        ("gradients", plan.gradients),
        ("optimizer", plan.optimizer),
        ("fixed", plan.fixed + plan.collectives),
        ("forward_backward", plan.forward_backward + plan.gradients),
        ("muon", plan.muon),
        ("peak", plan.total - plan.fragmentation),
    ]
    lines = [f"{title}: MiB on rank 0, plan vs measured", f"  {'term':<17} {'plan':>10} {'measured':>10} {'diff':>7}"]
    for name, planned in pairs:
        got = measured[name]
        diff = f"{(planned - got) / got:+.0%}" if got > 0 else "-"
        lines.append(f"  {name:<17} {planned / MIB:10.1f} {got / MIB:10.1f} {diff:>7}")
    lines.append(
        "  (fixed: plan's fixed + comms; forward_backward: unsync + activ + logits + gather + the gradients as they "
        "come; peak: the whole step's, the allocator's reserve beyond its peak (frag) left out)"
    )
    return "\n".join(lines)


# -----------------------------------------------------------------------------------------------
# Checkpoints: torch.distributed.checkpoint (DCP) folders, written by every rank in parallel, that load on any
# world size. The layout (read by tools/use/checkpoints.py too):
#   <dir>/step_<NNNNNN>/.metadata, *.distcp   "model": GPT(args).state_dict() (DTensor slices)
#                                             "optim": per-parameter optimizer state, by parameter name
#                                             "train": step, data position, train time, RNG states
#   <dir>/step_<NNNNNN>/config.json           written last by rank 0: its presence marks a complete checkpoint

CHECKPOINT_FORMAT = "speedrun-checkpoint-v1"
# Recipe fields a resumed run may change: they change no weight (how often to validate, compilation, warm-up).
RESUME_MAY_CHANGE = ("compile", "warmup_steps", "val_loss_every")


@dataclass(frozen=True)
class Resume:
    path: Path  # a step_<NNNNNN> folder
    step: int
    run_id: str
    keys: frozenset[str]  # the saved state's keys, as .metadata lists them ("model.embed.weight", "train.step", ...)
    seed: int | None  # the seed of the run that saved it (checkpoints since the seed was saved)


def read_resume(path_text: str, args: tg.Hyperparameters, given: str | None = None) -> Resume:
    """Check a checkpoint folder before any work: complete, of this format, and of the same recipe. given: what
    SPEEDRUN_RESUME said, when it is not the folder itself (latest)."""
    path, fix = Path(path_text), "point SPEEDRUN_RESUME at a step_<NNNNNN> folder that holds a config.json"
    variable = f"SPEEDRUN_RESUME={path_text}" if given is None else f"SPEEDRUN_RESUME={given} ({path_text})"
    try:
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except OSError as e:
        raise SpeedrunError(
            f"{variable}: cannot read {path / 'config.json'} ({e.strerror or e}): the folder is "
            f"missing or the checkpoint incomplete (config.json is written last); {fix}."
        ) from e
    except json.JSONDecodeError as e:
        raise SpeedrunError(f"{variable}: config.json is not valid JSON ({e}); {fix}.") from e
    keys = ("format", "preset", "hyperparameters", "step", "run_id")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or not all(k in meta for k in keys):
        raise SpeedrunError(
            f"{variable}: config.json is not a {CHECKPOINT_FORMAT} checkpoint's (it needs {', '.join(keys)}); {fix}."
        )
    kinds = dict(hyperparameters=dict, step=int, run_id=str)
    wrong = [k for k, kind in kinds.items() if not isinstance(meta[k], kind) or isinstance(meta[k], bool)]
    if wrong:
        raise SpeedrunError(
            f"{variable}: config.json is damaged ({', '.join(wrong)} of the wrong type: "
            "hyperparameters is an object, step an integer, run_id a string); resume from another checkpoint."
        )
    saved, now = meta["hyperparameters"], dataclasses.asdict(args)
    differ = [k for k in now if k not in RESUME_MAY_CHANGE and saved.get(k) != now[k]]
    if differ:
        diffs = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, this run {now[k]!r}" for k in differ[:6])
        raise SpeedrunError(
            f"{variable} was saved by a run with another recipe ({diffs}). A resumed run continues "
            f"exactly only with the same one: use SPEEDRUN_PRESET={meta['preset']} and the same SPEEDRUN_OVERRIDES."
        )
    if not (path / ".metadata").is_file():
        raise SpeedrunError(f"{variable}: the DCP file .metadata is missing: the checkpoint is damaged.")
    try:  # an untrusted file: whatever reading it raises means it is damaged
        metadata = dcp.FileSystemReader(path).read_metadata()
        files = sorted({info.relative_path for info in metadata.storage_data.values()})
        keys = frozenset(metadata.state_dict_metadata)
    except Exception as e:
        raise SpeedrunError(
            f"{variable}: the DCP file .metadata cannot be read ({type(e).__name__}: {e}): the "
            "checkpoint is damaged; resume from another one."
        ) from None
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise SpeedrunError(
            f"{variable}: {len(missing)} of its {len(files)} DCP data files are missing "
            f"({', '.join(missing[:4])}): the checkpoint is incomplete; resume from another one."
        )
    if meta["step"] >= args.num_iterations:
        raise SpeedrunError(
            f"{variable} is the checkpoint of step {meta['step']}, the end of its "
            f"{args.num_iterations}-step run: nothing is left to train."
        )
    seed = meta.get("seed")
    return Resume(path, meta["step"], meta["run_id"], keys, seed if isinstance(seed, int) and seed >= 0 else None)


def optimizer_state(raw: tg.GPT, opts, template: bool = False) -> dict:
    """{"adam"|"muon": {parameter name: its state}}, as DTensors, so that it reshards to any world size. With
    template=True: zeros of the right shapes, for dcp.load to fill."""
    adam, muon, _ = opts
    names = {p: n for n, p in raw.named_parameters()}
    adam_params, hidden = ([p for group in opt.param_groups for p in group["params"]] for opt in (adam, muon))

    def adam_zeros(p: Tensor) -> dict:
        return dict(step=torch.zeros(()), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))

    return dict(
        adam={names[p]: adam_zeros(p) if template else adam.state[p] for p in adam_params},
        muon={names[p]: dict(momentum_buffer=torch.zeros_like(p)) if template else muon.state[p] for p in hidden},
    )


def train_state(step: int, train_time_ms: float, args: tg.Hyperparameters, d: tg.Dist) -> dict:
    """Step, data position, train time and RNG states (the same on every rank: all were seeded alike, and
    training draws no random numbers)."""
    state = dict(
        step=torch.tensor(step),
        # the data position: windows consumed, step x windows_per_step; TrainWindows maps them to shards and offsets
        next_window=torch.tensor(step * args.windows_per_step),
        train_time_ms=torch.tensor(train_time_ms, dtype=torch.float64),
        rng_cpu=torch.get_rng_state(),
    )
    if d.cuda:
        state["rng_cuda"] = torch.cuda.get_rng_state(d.device)
    return state


def make_checkpoint_dir(folder: Path, d: tg.Dist) -> None:
    """Rank 0 creates the run's checkpoint folder; every rank must then see it, since each writes its own part."""
    problem = None
    if d.rank == 0:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            problem = f"cannot create the checkpoint folder {folder} ({e.strerror or e}); set SPEEDRUN_CHECKPOINT_DIR"
    if d.world_size > 1:
        dist.barrier()
    if problem is None and not folder.is_dir():
        problem = (
            f"rank {d.rank} does not see the checkpoint folder {folder} that rank 0 created: SPEEDRUN_CHECKPOINT_DIR "
            "must be on a filesystem that every node shares"
        )
    problems = [problem]
    if d.world_size > 1:  # every rank stops with the same message, none waits in a collective
        problems = [None] * d.world_size
        dist.all_gather_object(problems, problem)
    if any(problems):
        raise SpeedrunError(next(p for p in problems if p) + ".")


class Saver:
    """The run's checkpoints, <dir>/<run_id>/step_<NNNNNN>/. Asynchronous (SPEEDRUN_CHECKPOINT_ASYNC=1, the default):
    dcp.async_save copies this rank's slices to host memory while the clock is stopped (the staging), then writes
    them in a background thread while training goes on, its collectives on a gloo group of their own (as
    torchtitan does: NCCL has no CPU tensors, and the training's collectives must not interleave with them). When
    the write is complete rank 0 writes config.json (in that thread, so that a run killed later still has it) and
    prunes. One save is in flight at a time: the next save, and the end of the run, wait for it."""

    def __init__(self, folder: Path, raw: tg.GPT, opts, args, meta: dict, settings: ScaleRunSettings, d, log):
        self.folder, self.raw, self.opts, self.args, self.meta = folder, raw, opts, args, meta
        self.settings, self.d, self.log = settings, d, log
        self.group = dist.new_group(backend="gloo") if settings.checkpoint_async else None
        self.pending = None  # (folder, future, its callback's end) of the write in flight
        self.done: list[str] = []  # rank 0's log lines from the background thread, logged at the next wait
        self.failed: BaseException | None = None
        self.last: Path | None = None  # the newest complete checkpoint this run saved

    def save(self, step: int, train_time_ms: float) -> None:
        """Called by train_gpt.train with the clock stopped."""
        self.wait()
        to, started = self.folder / f"step_{step:06d}", time.perf_counter()
        state = dict(model=self.raw.state_dict(), optim=optimizer_state(self.raw, self.opts))
        if self.d.rank == 0:  # rank 0's clock and RNG: DCP writes one copy of a replicated value, from any rank
            state["train"] = train_state(step, train_time_ms, self.args, self.d)
        config = self.meta | dict(step=step, train_time_ms=train_time_ms)
        try:
            if self.group is None:
                dcp.save(state, checkpoint_id=to)
                self.complete(to, config, started, None)
                return
            response = dcp.async_save(state, checkpoint_id=to, process_group=self.group)
        except (OSError, dcp.CheckpointException) as e:
            raise SpeedrunError(self.problem(to, e)) from e
        future = getattr(response, "upload_completion", response)  # a Future; newer torch may return both
        staged, finished = time.perf_counter() - started, threading.Event()

        def written(f) -> None:  # in DCP's thread, once every rank's files are written (or the write failed)
            try:
                if f.exception() is None:
                    self.complete(to, config, started, staged)
            finally:
                finished.set()

        future.add_done_callback(written)
        self.pending = (to, future, finished)

    def complete(self, to: Path, config: dict, started: float, staged: float | None) -> None:
        """Rank 0, once every rank's files are written: config.json last (it marks a complete checkpoint), then
        pruning. Runs in DCP's thread for an asynchronous save: problems are kept for wait to raise."""
        try:
            if self.d.rank == 0:
                (to / "config.json.tmp").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
                os.replace(to / "config.json.tmp", to / "config.json")
            took = f"in {time.perf_counter() - started:.1f}s"
            how = (
                took
                if staged is None
                else f"{took} (staged in {staged:.1f}s with the clock stopped, then written while training)"
            )
            lines = [f"checkpoint: step {config['step']} saved to {to} {how}"]
            if self.settings.checkpoint_keep and self.d.rank == 0:
                keep = f"SPEEDRUN_CHECKPOINT_KEEP={self.settings.checkpoint_keep}"
                for old, problem in prune_checkpoints(self.folder, self.settings.checkpoint_keep):
                    lines.append(
                        f"checkpoint: removed {old} ({keep})"
                        if problem is None
                        else f"checkpoint: could not remove {old} ({problem}); training goes on"
                    )
            self.done.extend(lines)
            self.last = to
        except OSError as e:
            self.failed = e

    def wait(self, quiet: bool = False) -> None:
        """Wait for the write in flight, log what it did, and raise what went wrong (quiet: the run failed already,
        only let the write finish, so that a restart can continue from it)."""
        if self.pending is not None:
            to, future, finished = self.pending
            self.pending = None
            try:
                future.result()
                finished.wait()  # a future's waiters wake before its callbacks have run
                if self.failed is not None:
                    raise self.failed
            except (Exception, dcp.CheckpointException) as e:  # DCP's failures, whatever they are
                if not quiet:
                    raise SpeedrunError(self.problem(to, e)) from e
        while self.done:
            self.log(self.done.pop(0))

    @staticmethod
    def problem(to: Path, e: BaseException) -> str:
        return (
            f"cannot write the checkpoint {to}: {checkpoint_problem(e)}. Free some space or set "
            "SPEEDRUN_CHECKPOINT_DIR to a writable folder (on a filesystem every node sees)."
        )


def checkpoint_problem(e: BaseException) -> str:
    """One line for a failed DCP save or load: the first failing rank's exception, not DCP's traceback text."""
    if isinstance(e, dcp.CheckpointException) and e.failures:
        rank, (exc, _) = next(iter(e.failures.items()))
        return f"{type(exc).__name__} on rank {rank}: {str(exc).rstrip('.')}"
    return f"{type(e).__name__}: {str(e).rstrip('.')}"


def complete_checkpoints(run_folder: Path) -> list[Path]:
    """The run folder's complete checkpoints (those with a config.json), oldest first, by step."""
    saved = [f for f in run_folder.glob("step_*") if f.name[5:].isdigit() and (f / "config.json").is_file()]
    return sorted(saved, key=lambda f: int(f.name[5:]))


def prune_checkpoints(run_folder: Path, keep: int) -> list[tuple[Path, str | None]]:
    """Rank 0, after a save: remove all but the newest `keep` complete checkpoints of this run's folder (never
    another run's, such as the one it resumed from). config.json goes first, so that a removal cut short leaves
    a folder marked incomplete, not a damaged checkpoint that looks whole. Returns (folder, problem or None):
    a checkpoint that cannot be removed is reported, and the run goes on."""
    complete, removed = complete_checkpoints(run_folder), []
    for folder in complete[: max(len(complete) - keep, 0)]:
        try:
            (folder / "config.json").unlink()
            shutil.rmtree(folder)
            removed.append((folder, None))
        except OSError as e:
            removed.append((folder, str(e.strerror or e)))
    return removed


def load_checkpoint(resume: Resume, raw: tg.GPT, opts, args: tg.Hyperparameters, d: tg.Dist) -> tuple[int, float]:
    """Load weights, optimizer state and RNG into the built model; return (step, train_time_ms) to go on from."""
    adam, muon, _ = opts
    try:
        train = train_state(0, 0.0, args, d)
        train = {k: v for k, v in train.items() if f"train.{k}" in resume.keys}  # a CPU run saved no CUDA RNG
        state = dict(model=raw.state_dict(), optim=optimizer_state(raw, opts, template=True), train=train)
        dcp.load(state, checkpoint_id=resume.path)
    except (Exception, dcp.CheckpointException) as e:  # damaged data files: whatever DCP raises (a BaseException)
        raise SpeedrunError(
            f"cannot load the checkpoint {resume.path}: {checkpoint_problem(e)}. Its files are damaged or do not fit "
            "this model; resume from another checkpoint."
        ) from e
    step = int(train["step"])
    if step != resume.step or int(train["next_window"]) != step * args.windows_per_step:
        raise SpeedrunError(
            f"the checkpoint {resume.path} disagrees with its config.json (step {step}): it is damaged."
        )
    names = {p: n for n, p in raw.named_parameters()}
    adam_params = [p for group in adam.param_groups for p in group["params"]]
    adam.load_state_dict(
        dict(
            state={i: state["optim"]["adam"][names[p]] for i, p in enumerate(adam_params)},
            param_groups=adam.state_dict()["param_groups"],
        )
    )
    for p in (p for group in muon.param_groups for p in group["params"]):  # each rank: its slices of every matrix
        muon.state[p] = state["optim"]["muon"][names[p]]
    torch.set_rng_state(train["rng_cpu"])
    if "rng_cuda" in train:
        torch.cuda.set_rng_state(train["rng_cuda"], d.device)
    return step, float(train["train_time_ms"])


EXPORT_FORMAT = "speedrun-export-v1"  # the folder tools/use reads (model.safetensors, then config.json)
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int64: "I64"}


class OneMetadataReader(dcp.FileSystemReader):
    """A checkpoint's reader that reads .metadata once for the many one-tensor loads of an export (it lists every
    rank's slice of every tensor: tens of MB on a large cluster)."""

    def read_metadata(self, *args, **kwargs):
        if not hasattr(self, "_metadata"):
            self._metadata = super().read_metadata(*args, **kwargs)
        return self._metadata


def export_checkpoint(source: Path, out: Path, force: bool = False) -> Path:
    """A checkpoint's weights as an export folder: out/model.safetensors (every weight whole, as trained: fp32),
    then out/config.json (the checkpoint's, "format": "speedrun-export-v1"; written last, it marks a complete
    export), the folder `python -m tools sample|evaluate` read. Offline and one tensor at a time, as torchtitan
    converts its DCP checkpoints: the process holds one weight, never the model (266 GB at 70b). The safetensors
    header is written first from the checkpoint's metadata, then each tensor, read whole from every rank's slices."""
    where = f"cannot export the checkpoint {source}"
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"config.json is not a {CHECKPOINT_FORMAT} checkpoint's")
        reader = OneMetadataReader(source)
        stored = reader.read_metadata().state_dict_metadata
    except Exception as e:  # a missing folder, an incomplete checkpoint, a damaged file: one message
        raise SpeedrunError(
            f"{where}: {type(e).__name__}: {e}. Give a complete step_<NNNNNN> checkpoint folder (config.json is "
            "written last, when every rank's files are)."
        ) from None
    tensors = {k.removeprefix("model."): m for k, m in stored.items() if k.startswith("model.") and hasattr(m, "size")}
    if out.resolve() == source.resolve() or (out.is_dir() and any(out.iterdir()) and not force) or out.is_file():
        raise SpeedrunError(
            f"{where} to {out}: it is a file, the checkpoint itself or a folder that is not empty; "
            "choose a new folder (or pass --force to overwrite an export)."
        )
    header: dict = {"__metadata__": {"format": "pt", "speedrun": EXPORT_FORMAT}}
    offset = 0
    for name, m in tensors.items():
        size = m.size.numel() * m.properties.dtype.itemsize
        header[name] = dict(
            dtype=SAFETENSORS_DTYPES[m.properties.dtype], shape=list(m.size), data_offsets=[offset, offset + size]
        )
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").unlink(missing_ok=True)  # an overwritten export is incomplete until its new config.json
    tmp = out / "model.safetensors.tmp"
    try:
        with open(tmp, "wb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "assuming the intent is to load in a single process": it is
            f.write(len(text).to_bytes(8, "little") + text)
            for name, m in tensors.items():
                whole = torch.empty(m.size, dtype=m.properties.dtype)
                dcp.load({"model": {name: whole}}, storage_reader=reader, no_dist=True)
                f.write(whole.reshape(-1).view(torch.uint8).numpy().data)
        os.replace(tmp, out / "model.safetensors")
        exported = config | dict(format=EXPORT_FORMAT, exported_from=str(source))
        (out / "config.json.tmp").write_text(json.dumps(exported, indent=1) + "\n", encoding="utf-8")
        os.replace(out / "config.json.tmp", out / "config.json")
    except (OSError, dcp.CheckpointException) as e:
        raise SpeedrunError(f"{where} to {out}: {checkpoint_problem(e)}; free space, or use another checkpoint.") from e
    finally:
        tmp.unlink(missing_ok=True)
    return out


# -----------------------------------------------------------------------------------------------
# Main: ScaleRun, train_gpt.Run's one skeleton with this file's hooks (what a sharded run checks, builds, saves and
# exports); --plan prints the memory plan instead, --export converts a checkpoint.


def cannot_run(args: tg.Hyperparameters, world_size: int) -> str | None:
    """Why args cannot train on world_size processes (train_gpt.validate's reasons and FSDP2's), or None. A world size
    must divide the batch (windows_per_step: the same global batch on any world size) and the q/k/v weight's
    num_heads x head_dim rows (FSDP2 cuts a dim other than 0 into equal slices only)."""
    windows, hdim, n = args.windows_per_step, args.num_heads * args.head_dim, world_size
    if n >= 1 and windows >= 1 and hdim >= 1 and (windows % n or hdim % n):
        fits = [m for m in range(1, windows + 1) if windows % m == 0 and hdim % m == 0]
        nearest = [
            m for m in (max((m for m in fits if m < n), default=0), min((m for m in fits if m > n), default=0)) if m
        ]
        why = [f"share the {windows:,} windows of a step"] if windows % n else []
        why += [f"cut the {hdim:,} rows of num_heads x head_dim into equal slices (FSDP2)"] if hdim % n else []
        text = f"invalid configuration: {n:,} processes cannot {' nor '.join(why)}; the nearest world sizes that can "
        text += f"are {' and '.join(f'{m:,}' for m in nearest)} (any that divides both; docs/scale.md, world sizes)"
        if windows % n and not hdim % n:  # a batch that n processes share: another recipe, an experiment
            batch = max(1, round(windows / n)) * n
            val = max(1, round(args.val_tokens / (batch * args.val_seq_len))) * batch * args.val_seq_len
            change = json.dumps(dict(windows_per_step=batch, val_tokens=val))
            text += f", or change the recipe to a batch {n:,} share: SPEEDRUN_OVERRIDES='{change}'"
        return text + "."
    try:
        tg.validate(args, world_size)
    except SpeedrunError as e:
        return str(e)
    return None


def stable_run_id(settings: ScaleRunSettings, env: dict[str, str]) -> str | None:
    """The run id a restart keeps: SPEEDRUN_RUN_ID, or with SPEEDRUN_RESUME=latest torchrun's rendezvous id
    (TORCHELASTIC_RUN_ID: the same across torchrun --max-restarts; --rdzv-id=$SLURM_JOB_ID keeps it across a
    SLURM requeue). None: a fresh uuid for a run that is not meant to continue itself."""
    elastic = env.get("TORCHELASTIC_RUN_ID", "")
    if settings.run_id is not None or settings.resume != LATEST or elastic in ("", "none"):
        return settings.run_id
    if not RUN_ID.fullmatch(elastic):
        raise SpeedrunError(
            f"SPEEDRUN_RESUME=latest takes the run id from torchrun's rendezvous id, but {elastic!r} cannot name a "
            "folder: set SPEEDRUN_RUN_ID to letters, digits, '.', '_' or '-' (under SLURM: $SLURM_JOB_ID)."
        )
    return elastic


def find_resume(settings: ScaleRunSettings, args: tg.Hyperparameters, env: dict[str, str]) -> Resume | None:
    """The checkpoint to continue from, checked: SPEEDRUN_RESUME's folder, or with latest the newest complete one of
    this run's folder (None before its first save, or while the run id is not known yet: preflight, before torchrun
    gives it)."""
    if settings.resume is None:
        return None
    if settings.resume != LATEST:
        return read_resume(settings.resume, args)
    run_id = stable_run_id(settings, env)
    newest = complete_checkpoints(Path(settings.checkpoint_dir) / run_id) if run_id is not None else []
    return read_resume(str(newest[-1]), args, given=LATEST) if newest else None


def log_path(log_dir: str, run_id: str) -> Path:
    """<log_dir>/<run_id>.txt, or for a restart of the run <run_id>.1.txt, .2.txt, ...: one log per start."""
    folder = Path(log_dir)
    return next(p for n in range(10**6) if not (p := folder / (f"{run_id}.{n}.txt" if n else f"{run_id}.txt")).exists())


class ScaleRun(tg.Run):
    """train_gpt.Run, the one run skeleton, with this file's hooks: the ladder's presets (track scale), the model
    sharded (FSDP2, built on the meta device) with ShardedMuon and ShardedGrads, a start from a checkpoint, checkpoints
    on the way (Saver), one log per start of a run, and the export of its last checkpoint."""

    presets, tracks = PRESETS, dict.fromkeys(PRESETS, ("scale", None))
    resume: Resume | None = None
    saver: Saver | None = None

    def settings(self, preset: str, args: tg.Hyperparameters) -> ScaleRunSettings:
        if problem := cannot_run(args, self.d.world_size):
            raise SpeedrunError(problem)
        settings = run_settings(self.env, preset, args)
        k, world_size = settings.micro_windows, self.d.world_size
        if k and (problem := micro_windows_problem(k, args, world_size)):
            raise SpeedrunError(problem + ".")
        find_resume(settings, args, self.env)
        return settings

    def choose(self, plan: tg.RunPlan) -> tg.RunPlan:
        """Rank 0 decides what every rank needs alike: the checkpoint to continue from, the seed, the run id and the
        micro-step (a restart finds the same newest checkpoint on every node, but a folder read twice could differ)."""
        settings, args, env = plan.settings, plan.args, self.env
        if settings.resume == LATEST and stable_run_id(settings, env) is None:
            raise SpeedrunError(
                "SPEEDRUN_RESUME=latest continues this run's newest checkpoint after a restart, so the run needs an id "
                "that a restart keeps: set SPEEDRUN_RUN_ID (under SLURM: SPEEDRUN_RUN_ID=$SLURM_JOB_ID), or start it "
                "with torchrun, whose rendezvous id it then takes."
            )
        resume = find_resume(settings, args, env) if self.d.rank == 0 else None
        recompute, memory = settings.activation_checkpointing, device_memory(self.d)
        k = settings.micro_windows or choose_micro_windows(
            args, self.d.world_size, self.d.device.type, recompute, memory
        )
        seed = settings.seed if settings.seed is not None else getattr(resume, "seed", None)
        choice = [secrets.randbelow(2**31) if seed is None else seed, stable_run_id(settings, env) or str(uuid.uuid4())]
        self.seed, self.run_id, resume_path, micro = self.from_rank0(choice + [resume and str(resume.path), k])
        given = LATEST if settings.resume == LATEST else None
        self.resume = None if resume_path is None else read_resume(resume_path, args, given)
        return plan._replace(settings=dataclasses.replace(settings, micro_windows=micro))

    def log_path(self) -> Path:
        return log_path(self.plan.settings.log_dir, self.run_id)

    def header(self, code: str, data: dict, **extra) -> None:
        resume, folder = self.resume, Path(self.plan.settings.checkpoint_dir) / self.run_id
        resumed = None if resume is None else dict(path=str(resume.path), step=resume.step, run_id=resume.run_id)
        super().header(code, data, parallelism="fsdp", resumed_from=resumed)
        if self.plan.settings.resume == LATEST and resume is None:
            self.log(f"resume: no complete checkpoint in {folder} yet: from step 0")

    def prepare(self, args: tg.Hyperparameters) -> tuple:
        """The sharded model (each block compiled on its own: FSDP2's hooks stay outside the graphs), its optimizers
        and its local slices, which warm-up puts back."""
        torch.manual_seed(self.seed)
        model = build_model(args, self.seed, self.d)
        prepare_blocks(model, args, self.plan.settings.activation_checkpointing)
        opts = build_optimizers(model, args, self.d, self.plan.settings.micro_windows)
        return model, model, opts, [local(t) for t in model.state_dict().values()]

    def start(self, model: tg.GPT, opts) -> tuple[int, float]:
        """The checkpoint's step and clock, its weights and state loaded; and the Saver of this run's checkpoints."""
        settings, args = self.plan.settings, self.plan.args
        start = (0, 0.0) if self.resume is None else load_checkpoint(self.resume, model, opts, args, self.d)
        if settings.checkpoint_every >= 0:
            folder = Path(settings.checkpoint_dir) / self.run_id
            make_checkpoint_dir(folder, self.d)
            meta = dict(format=CHECKPOINT_FORMAT, preset=self.plan.preset, hyperparameters=dataclasses.asdict(args))
            meta.update(run_id=self.run_id, world_size=self.d.world_size, parallelism="fsdp")
            meta.update(data_path=settings.data_path, seed=self.seed)
            self.saver = Saver(folder, model, opts, args, meta, settings, self.d, self.log)
            self.saves = (settings.checkpoint_every, self.saver.save)
        return start

    def finish(self, model: tg.GPT, train_time_ms: float) -> None:
        """The last checkpoint written, then (SPEEDRUN_EXPORT) exported from it, one tensor at a time."""
        if self.saver is not None:
            self.saver.wait()
        if self.plan.settings.export_dir is not None and self.d.rank == 0 and self.saver and self.saver.last:
            started, out = time.perf_counter(), Path(self.plan.settings.export_dir) / self.run_id
            export_checkpoint(self.saver.last, out)
            self.log(f"export: final weights written to {out} in {time.perf_counter() - started:.1f}s")

    def close(self) -> None:
        if self.saver is not None and self.saver.pending is not None:  # a failed run: let the write in flight finish
            self.saver.wait(quiet=True)
        super().close()

    def execute(self, code: str) -> None:
        try:
            super().execute(code)
        except torch.cuda.OutOfMemoryError as e:
            micro, n = self.plan.settings.micro_windows, self.d.world_size
            raise SpeedrunError(
                f"out of GPU memory with {micro} window(s) per micro-step ({e}). Set SPEEDRUN_MICRO_WINDOWS to a "
                f"smaller one, or run on more GPUs: `python train_scale.py --plan {self.plan.preset} --gpus {n}` shows "
                "what each GPU needs."
            ) from e


def restart_problem(env: dict[str, str]) -> str | None:
    """Why a process that torchrun restarted cannot form its process group, or None. torchrun's c10d rendezvous
    shares its TCP store with the processes by default, and that store keeps the first start's keys (gloo's
    addresses, NCCL's unique id), which a restart then reads (pytorch/pytorch issue 135712)."""
    restarts = env.get("TORCHELASTIC_RESTART_COUNT", "0")
    if restarts in ("", "0") or env.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    return (
        f"torchrun restarted this run (TORCHELASTIC_RESTART_COUNT={restarts}), but its rendezvous store, which the "
        "processes share, still holds the first start's keys, so the process group cannot form again (pytorch "
        "issue 135712): start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in its environment (docs/scale.md)."
    )


def main() -> int:
    if problem := restart_problem(dict(os.environ)):
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {problem}", file=sys.stderr, flush=True)
        return 1
    return ScaleRun.main(CODE)


preflight = ScaleRun.preflight


def plan_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python train_scale.py --plan", description="per-GPU memory of a preset")
    parser.add_argument("preset", nargs="?", choices=[p for p in PRESETS], help="one preset (default: all)")
    parser.add_argument("--gpus", type=int, action="append", help="GPUs (default: 8, 64 and 1,024); repeatable")
    parser.add_argument("--gpu-memory", type=parse_bytes, default=80 * GIB, help="per GPU (default 80GiB)")
    parser.add_argument("--micro-windows", type=int, help="windows per micro-step (default: the largest that fits)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: the tests' fp32 layout")
    opts = parser.parse_args(argv)
    if any(n < 1 for n in opts.gpus or []):
        parser.error("--gpus takes a positive number of GPUs")
    if opts.micro_windows is not None and opts.micro_windows < 1:
        parser.error("--micro-windows takes a positive number of windows")
    presets = [opts.preset] if opts.preset else list(PRESETS)
    print(plan_table(presets, opts.gpus or [8, 64, 1024], opts.gpu_memory, opts.device, opts.micro_windows))
    return 0


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python train_scale.py --export", description="a checkpoint's weights as safetensors, one at a time"
    )
    parser.add_argument("checkpoint", type=Path, help="a step_<NNNNNN> checkpoint folder")
    parser.add_argument("out", type=Path, help="the export folder to write (model.safetensors, config.json)")
    parser.add_argument("--force", action="store_true", help="overwrite a folder that is not empty")
    opts = parser.parse_args(argv)
    try:
        started = time.perf_counter()
        out = export_checkpoint(opts.checkpoint, opts.out, opts.force)
    except SpeedrunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = (out / "model.safetensors").stat().st_size
    print(f"exported {opts.checkpoint} -> {out}/ ({size / MIB:.1f} MiB) in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    # the caching allocator grows its segments instead of adding new ones: less fragmentation (the plan allows 5%)
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    for flag, command in (("--plan", plan_main), ("--export", export_main)):
        if flag in sys.argv[1:]:
            sys.exit(command([a for a in sys.argv[1:] if a != flag]))
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # as train_gpt.py: leave without interpreter teardown after a gloo run
