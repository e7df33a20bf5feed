"""The speedrun trainer: a GPT trained to 3.28 FineWeb val loss as fast as possible on 8x H100.

One self-contained file, read top to bottom: distributed setup, the FP8 head op, Muon, the model,
the data loader, Hyperparameters and presets, logging, then build, warm-up, checkpoints and the timed loop.
Launch it with `./run.sh`, or `torchrun --standalone --nproc_per_node=N train_gpt.py`; on several nodes,
`torchrun --nnodes=M --nproc_per_node=N --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT --rdzv-id=ID
train_gpt.py` on each. The recipe (track_1_short) follows the public modded-nanogpt record of 2025-01-16
(179.5 s), written fresh here; ideas are credited where they appear. Beside it: the medium record's preset,
a CPU smoke preset, and a ladder of 1.5B-7B presets sharded with FSDP2, with checkpoint and resume through
torch.distributed.checkpoint. The log and checkpoint formats are in docs/log-format.md.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
import resource
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.distributed.tensor import Shard as ShardDim
from torch.nn.attention.flex_attention import BlockMask, flex_attention


class SpeedrunError(ValueError):
    """A mistake in the setup (config, data, environment): reported as one paragraph, no traceback."""


# -----------------------------------------------------------------------------------------------
# Distributed setup: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; a plain `python train_gpt.py` is one process.
# Nothing here assumes one node: torchrun's c10d rendezvous (--nnodes, --rdzv-backend=c10d) sets the same
# variables on every node, and LOCAL_RANK picks the GPU within a node.


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def setup_distributed() -> Dist:
    launched = "RANK" in os.environ
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise SpeedrunError(
                f"local rank {local_rank} has no GPU: this node shows {torch.cuda.device_count()}. Start at most one "
                "process per GPU (NPROC, or torchrun --nproc_per_node)."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if launched:  # NCCL between GPUs; gloo between CPU processes (the smoke run, the tests)
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
    return Dist(rank, world_size, local_rank, device)


def ensure_process_group(d: Dist) -> None:
    """FSDP2 and its DeviceMesh need a process group even for one process started without torchrun."""
    if not dist.is_initialized():
        backend = "nccl" if d.cuda else "gloo"
        dist.init_process_group(
            backend, store=dist.HashStore(), rank=0, world_size=1, device_id=d.device if d.cuda else None
        )


def local(t: Tensor) -> Tensor:
    """This rank's part of a tensor: the local slice of a DTensor (fsdp), or the tensor itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that a clock read afterwards measures it (CPU ops are synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# all_gather_into_tensor is called all_gather_single from torch 2.13 on; the GPU machines run 2.11+
all_gather_flat = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)


# -----------------------------------------------------------------------------------------------
# Custom op: the FP8 lm_head matmul (idea and scales: modded-nanogpt 2025-01-13 record, @YouJiacheng).
# Static scales instead of amax tracking keep it to one matmul per product. A torch.library custom op is
# opaque to torch.compile (it sees the fake kernel) while its autograd formula is traced, so the gradient's
# scale-and-cast to e5m2 fuses into the loss backward and only the matmuls are opaque.
# _scaled_mm wants its first operand row-major and its second column-major, dims multiples of 16.


@functools.cache
def compiled_once(fn):
    """torch.compile(fn), made on first use: importing the compiler takes seconds that eager runs and the tools
    that import this file need not spend. Compilation itself happens at the first call (in the warm-up)."""
    return torch.compile(fn)


def _inverse_scale(scale: float, ref: Tensor) -> Tensor:
    return torch.full((), 1.0 / scale, dtype=torch.float32, device=ref.device)  # a fill, not a host-to-device copy


def _to_fp8(x: Tensor, w: Tensor, x_scale: float, w_scale: float) -> tuple[Tensor, Tensor]:
    """The forward's scale-and-cast of both operands to e4m3 (elementwise work around the one matmul)."""
    return x.mul(x_scale).to(torch.float8_e4m3fn), w.mul(w_scale).to(torch.float8_e4m3fn)


@torch.library.custom_op("speedrun::fp8_mm", mutates_args=())
def fp8_mm(
    x: Tensor, w: Tensor, x_scale: float, w_scale: float, grad_scale: float, compiled: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """x_TK @ w_NK.T in float8 e4m3 -> (out_TN in bf16, x_f8, w_f8); the fp8 operands are saved for backward.
    compiled: the scale-and-cast through torch.compile, as the record compiles the inside of its op (the model's
    graph cannot fuse it: it sees the op as opaque). The same values, two fused kernels instead of four."""
    x_f8, w_f8 = (compiled_once(_to_fp8) if compiled else _to_fp8)(x, w, x_scale, w_scale)
    out = torch._scaled_mm(
        x_f8,
        w_f8.t(),  # the transpose of a row-major matrix is column-major, as _scaled_mm wants
        scale_a=_inverse_scale(x_scale, x),
        scale_b=_inverse_scale(w_scale, x),
        out_dtype=torch.bfloat16,
        use_fast_accum=True,
    )
    return out, x_f8, w_f8


@fp8_mm.register_fake
def _(
    x: Tensor, w: Tensor, x_scale: float, w_scale: float, grad_scale: float, compiled: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    out = x.new_empty((x.size(0), w.size(0)), dtype=torch.bfloat16)
    return out, torch.empty_like(x, dtype=torch.float8_e4m3fn), torch.empty_like(w, dtype=torch.float8_e4m3fn)


@torch.library.custom_op("speedrun::fp8_mm_backward", mutates_args=())
def fp8_mm_backward(
    grad_f8: Tensor, x_f8: Tensor, w_f8: Tensor, x_scale: float, w_scale: float, grad_scale: float
) -> tuple[Tensor, Tensor]:
    """Gradients of fp8_mm from the e5m2 output gradient: (grad_x_TK in bf16, grad_w_NK in fp32)."""
    grad_f8 = grad_f8.contiguous()
    grad_x = torch._scaled_mm(
        grad_f8,
        w_f8.t().contiguous().t(),  # w_NK as a column-major second operand
        scale_a=_inverse_scale(grad_scale, grad_f8),
        scale_b=_inverse_scale(w_scale, grad_f8),
        out_dtype=torch.bfloat16,
        use_fast_accum=False,
    )
    # grad_w^T = x^T @ grad, computed as (K, N) and returned transposed: for (N, K) = (50304, 768) this
    # orientation was measured faster in the record.
    grad_w = torch._scaled_mm(
        x_f8.t().contiguous(),
        grad_f8.t().contiguous().t(),
        scale_a=_inverse_scale(x_scale, grad_f8),
        scale_b=_inverse_scale(grad_scale, grad_f8),
        out_dtype=torch.float32,
        use_fast_accum=False,
    ).t()
    return grad_x, grad_w


@fp8_mm_backward.register_fake
def _(
    grad_f8: Tensor, x_f8: Tensor, w_f8: Tensor, x_scale: float, w_scale: float, grad_scale: float
) -> tuple[Tensor, Tensor]:
    n, k = w_f8.shape
    grad_x = x_f8.new_empty(x_f8.shape, dtype=torch.bfloat16)
    return grad_x, w_f8.new_empty_strided((n, k), (1, n), dtype=torch.float32)  # column-major, as the real one


def _fp8_mm_setup_context(ctx, inputs, output) -> None:
    _, _, x_scale, w_scale, grad_scale, _ = inputs
    _, x_f8, w_f8 = output
    ctx.save_for_backward(x_f8, w_f8)
    ctx.scales = x_scale, w_scale, grad_scale
    ctx.set_materialize_grads(False)


def _fp8_mm_autograd(ctx, grad_out: Tensor, *_) -> tuple[Tensor, Tensor, None, None, None, None]:
    x_f8, w_f8 = ctx.saved_tensors
    x_scale, w_scale, grad_scale = ctx.scales
    grad_f8 = grad_out.mul(grad_scale).to(torch.float8_e5m2)  # e5m2: range over precision for gradients
    grad_x, grad_w = torch.ops.speedrun.fp8_mm_backward(grad_f8, x_f8, w_f8, x_scale, w_scale, grad_scale)
    return grad_x, grad_w, None, None, None, None


fp8_mm.register_autograd(_fp8_mm_autograd, setup_context=_fp8_mm_setup_context)


# -----------------------------------------------------------------------------------------------
# Optimizer: Muon (Keller Jordan et al., 2024) for hidden matrices; Adam for the rest (built in build_optimizers).


def zeropower_via_newtonschulz5(G: Tensor, steps: int = 5) -> Tensor:
    """Orthogonalise the last two dims of G approximately: U S V^T -> U S' V^T with S' roughly in [0.7, 1.2].

    A quintic Newton-Schulz iteration whose coefficients (Keller Jordan) maximise the slope at zero, so five
    steps in bf16 push every singular value near 1 without needing them to converge exactly. Batched over
    leading dims (@scottjmaddox, @YouJiacheng), so the merged q/k/v weight is three matrices.
    """
    assert G.ndim >= 2
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.bfloat16()
    transposed = G.size(-2) > G.size(-1)
    if transposed:  # iterate on the smaller Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # Frobenius norm >= spectral norm: spectral norm <= 1
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if transposed:
        X = X.mT
    return X


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-Schulz: SGD with Nesterov momentum whose update is orthogonalised.

    Matrices are grouped by size (by shape when sharded) and dealt round-robin: in each round of world_size
    matrices, rank r orthogonalises the r-th one. How a matrix reaches its owner depends on the parameters:
    - replicated (ddp), as in the modded-nanogpt DistributedMuon record: every rank already holds the averaged
      gradient, so the owner keeps the momentum buffer, orthogonalises, and all-gathers the bf16 updates,
      applying one round while the next is in flight;
    - sharded (fsdp: FSDP2 DTensors, each rank holding one slice of every matrix): each rank keeps the momentum
      of its own slices, so the optimizer state is sharded like the weights and a checkpoint reshards to any
      world size. Per round, one all-to-all brings the owner every slice of its matrix's Nesterov gradient (in
      bf16, where Newton-Schulz starts anyway) and a second sends each rank its slices of the updates: a rank
      moves about two matrices per round, whatever the world size, in buffers the size of one matrix.
    Elementwise math (momentum, Nesterov, weight decay) is the same on slices as on whole matrices, and
    Newton-Schulz sees the same bits, so both layouts compute the same update.

    compiled: Newton-Schulz through torch.compile, as in the record: inductor fuses the scalings and additions
    into the matmuls' epilogues, where eager mode launches a kernel for each (several per matrix per step). Shapes
    vary by matrix, so the second shape seen compiles one dynamic-shape graph for all the rest. Still bf16, but
    a fused step rounds once: compiled and eager differ by bf16 rounding (a few percent after five iterations,
    both about as far from the exact iteration).
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float,
        ns_steps: int,
        rank: int,
        world_size: int,
        weight_decay: float = 0.0,
        compiled: bool = False,
    ):
        params = list(params)
        self.rank, self.world_size = rank, world_size
        self.orthogonalise = compiled_once(zeropower_via_newtonschulz5) if compiled else zeropower_via_newtonschulz5
        self.sharded = isinstance(params[0], DTensor)
        by_size: dict[object, list[Tensor]] = {}
        for p in params:  # deterministic order: every rank builds the same groups
            by_size.setdefault(tuple(p.shape) if self.sharded else p.numel(), []).append(p)
        groups = [dict(params=ps) for ps in by_size.values()]
        defaults = dict(lr=lr, momentum=momentum, ns_steps=ns_steps, nesterov=True, weight_decay=weight_decay)
        super().__init__(groups, defaults)
        # the matrices whose momentum this rank keeps: its slices of all of them, or the replicated ones it owns
        self.owned = [p for ps in by_size.values() for i, p in enumerate(ps) if self.sharded or i % world_size == rank]

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            if self.sharded:
                self._sharded_step(group)
            else:
                self._replicated_step(group)

    def _nesterov(self, p: Tensor, group: dict) -> Tensor:
        """Update p's momentum buffer with its gradient; return the Nesterov gradient (local slices if sharded)."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
        buf, g = local(state["momentum_buffer"]), local(p.grad)
        buf.lerp_(g, 1 - group["momentum"])
        return g.lerp_(buf, group["momentum"]) if group["nesterov"] else buf

    @staticmethod
    def _apply(p: Tensor, update: Tensor, group: dict) -> None:
        """p -= lr * scale * update (with decoupled weight decay first); update has p's (local) numel."""
        # scale so that tall matrices get RMS-matched updates (max(1, rows/cols)^0.5), from the whole matrix's shape
        alpha = -group["lr"] * max(1.0, p.size(-2) / p.size(-1)) ** 0.5
        p = local(p)
        if group["weight_decay"]:
            p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update.reshape(p.shape), alpha=alpha)

    def _replicated_step(self, group: dict) -> None:
        params: list[Tensor] = group["params"]
        pending = None
        for base in range(0, len(params), self.world_size):
            mine = base + self.rank
            if mine < len(params):
                update = self.orthogonalise(self._nesterov(params[mine], group), group["ns_steps"]).flatten()
            else:  # no matrix left for this rank in the last round: send zeros
                update = params[0].new_zeros(params[0].numel(), dtype=torch.bfloat16)
            if self.world_size == 1:
                self._apply(params[base], update, group)
                continue
            gathered = update.new_empty(self.world_size, update.numel())
            work = all_gather_flat(gathered.view(-1), update, async_op=True)
            if pending is not None:
                self._apply_round(*pending)
            pending = (params[base : base + self.world_size], gathered, group, work)
        if pending is not None:
            self._apply_round(*pending)

    def _apply_round(self, params: list[Tensor], updates: Tensor, group: dict, work) -> None:
        work.wait()
        for p, u in zip(params, updates, strict=False):
            self._apply(p, u, group)

    def _sharded_step(self, group: dict) -> None:
        params: list[DTensor] = group["params"]  # all of one shape and placement
        W, shape = self.world_size, params[0].shape
        dim = params[0].placements[0].dim  # the sharded dim (1 for the stacked q/k/v weights, else 0)
        rows = -(-shape[dim] // W)  # rows per slice along dim, as FSDP2 cuts (torch.chunk: the last may be short)

        def rows_first(t: Tensor, n: int) -> Tensor:  # the sharded dim moved first, zero-padded to n rows
            t = t.movedim(dim, 0)
            return torch.cat([t, t.new_zeros(n - t.size(0), *t.shape[1:])]) if t.size(0) < n else t.contiguous()

        for base in range(0, len(params), W):
            round_ = params[base : base + W]
            # send[j]: this rank's slice of the j-th matrix of the round, for its owner j (zeros if there is none)
            send = torch.zeros(W, rows, *shape[:dim], *shape[dim + 1 :], dtype=torch.bfloat16, device=round_[0].device)
            for j, p in enumerate(round_):
                send[j] = rows_first(self._nesterov(p, group), rows)
            recv = send
            if W > 1:
                recv = torch.empty_like(send)
                dist.all_to_all_single(recv, send)  # recv[k]: rank k's slice of the matrix this rank owns
            update = torch.zeros_like(send)
            if self.rank < len(round_):
                full = recv.flatten(0, 1)[: shape[dim]].movedim(0, dim).contiguous()  # the replicated layout
                update = rows_first(self.orthogonalise(full, group["ns_steps"]), W * rows).view_as(send)
            back = update
            if W > 1:
                back = torch.empty_like(update)
                dist.all_to_all_single(back, update)  # back[j]: this rank's slice of the j-th update
            for j, p in enumerate(round_):
                self._apply(p, back[j][: local(p).size(dim)].movedim(0, dim), group)


# -----------------------------------------------------------------------------------------------
# Model: GPT with rotary, QK-norm, ReLU^2, value embeddings, U-net skips and sliding-window FlexAttention.


def norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))  # RMSNorm without a learned weight


def next_multiple(n: int, k: int) -> int:
    return -(-n // k) * k


class CastedLinear(nn.Linear):
    """A bias-free linear layer whose fp32 weight is cast to the activations' dtype at use."""

    def __init__(self, in_features: int, out_features: int, zero_init: bool = False):
        super().__init__(in_features, out_features, bias=False)
        with torch.no_grad():
            if zero_init:  # output projections and the head start at zero (@Grad62304977, muP-style)
                self.weight.zero_()
            else:  # uniform with std 0.5 * fan_in^-0.5
                bound = 3**0.5 * 0.5 * in_features**-0.5
                self.weight.uniform_(-bound, bound)

    def reset_parameters(self) -> None:
        pass  # initialised in __init__

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.type_as(x))


class Rotary(nn.Module):
    """Rotary embedding on half the head dims: head_dim/4 frequencies (1/1024)^linspace(0,1), the other
    head_dim/4 pairs at frequency zero, i.e. not rotated (@YouJiacheng, "half-truncated RoPE")."""

    def __init__(self, head_dim: int, max_seq_len: int, min_freq: float):
        super().__init__()
        freqs = min_freq ** torch.linspace(0, 1, steps=head_dim // 4, dtype=torch.float32)
        freqs = torch.cat([freqs, freqs.new_zeros(head_dim // 4)])  # (head_dim/2,)
        theta_TF = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freqs)
        self.cos = nn.Buffer(theta_TF.cos(), persistent=False)
        self.sin = nn.Buffer(theta_TF.sin(), persistent=False)

    def forward(self, x_BTHD: Tensor) -> Tensor:
        T = x_BTHD.size(-3)
        cos, sin = self.cos[None, :T, None, :], self.sin[None, :T, None, :]
        x1, x2 = x_BTHD.float().chunk(2, dim=-1)  # dim i pairs with dim i + head_dim/2
        y1 = x1 * cos + x2 * sin
        y2 = x2 * cos - x1 * sin
        return torch.cat((y1, y2), dim=-1).type_as(x_BTHD)


def block_sparse_indices(mask_QK: Tensor) -> tuple[Tensor, Tensor]:
    """A dense (q_blocks, kv_blocks) bool mask as BlockMask's (num_blocks, indices): the True columns first."""
    num_Q = mask_QK.sum(dim=-1, dtype=torch.int32)
    indices_QK = mask_QK.to(torch.int8).argsort(dim=-1, descending=True, stable=True).to(torch.int32)
    return num_Q[None, None].contiguous(), indices_QK[None, None].contiguous()


def document_window_block_mask(docs_T: Tensor, window_blocks: Tensor, block_size: int) -> BlockMask:
    """FlexAttention mask where token q attends to token k iff k <= q, both lie in the same document, and
    q // block_size - k // block_size < window_blocks (a sliding window counted in blocks, as in the record).

    docs_T holds the (non-decreasing) document id of each token. The block structure is computed from
    block-level bounds (@YouJiacheng): a kv block is "full" (no mask evaluated) when every pair is visible,
    "partial" when some are, and skipped otherwise. The mask_mod repeats the window test so that the eager
    (unfused, block-structure-blind) FlexAttention path gives the same answer as the compiled kernel.
    """
    n = docs_T.numel() // block_size
    docs_NB = docs_T.view(n, block_size)
    first, last = docs_NB[:, 0], docs_NB[:, -1]  # document ids at each block's ends
    q = torch.arange(n, device=docs_T.device)[:, None]
    k = torch.arange(n, device=docs_T.device)[None, :]
    in_window = (k <= q) & (q - k < window_blocks)
    # documents are contiguous, so for k <= q block k reaches q's documents iff its last id >= q's first id,
    # and every pair is visible iff both blocks lie inside one document and k is strictly before q
    any_visible = in_window & (last[None, :] >= first[:, None])
    all_visible = in_window & (k < q) & (first[None, :] == last[:, None])
    partial_num, partial_idx = block_sparse_indices(any_visible & ~all_visible)
    full_num, full_idx = block_sparse_indices(all_visible)

    def document_causal_window(b, h, q_idx, kv_idx):
        causal = q_idx >= kv_idx
        same_doc = docs_T[q_idx] == docs_T[kv_idx]
        return causal & same_doc & (q_idx // block_size - kv_idx // block_size < window_blocks)

    return BlockMask.from_kv_blocks(
        partial_num, partial_idx, full_num, full_idx, BLOCK_SIZE=block_size, mask_mod=document_causal_window
    )


def block_mask_to_dense(block_mask: BlockMask) -> Tensor:
    """The (Q, K) bool token mask a BlockMask describes: its full blocks, and mask_mod inside its partial blocks."""
    bq, bk = block_mask.BLOCK_SIZE
    nq, nk = block_mask.kv_indices.shape[-2:]
    device = block_mask.kv_indices.device

    def blocks(num: Tensor, idx: Tensor) -> Tensor:  # ordered indices -> (nq, nk) bool
        listed = torch.arange(nk, device=device)[None, :] < num[0, 0][:, None]
        return torch.zeros(nq, nk, dtype=torch.int32, device=device).scatter_add_(1, idx[0, 0].long(), listed.int()) > 0

    def tokens(m: Tensor) -> Tensor:
        return m.repeat_interleave(bq, dim=0).repeat_interleave(bk, dim=1)

    q_idx, kv_idx = torch.arange(nq * bq, device=device)[:, None], torch.arange(nk * bk, device=device)[None, :]
    partial = tokens(blocks(block_mask.kv_num_blocks, block_mask.kv_indices)) & block_mask.mask_mod(0, 0, q_idx, kv_idx)
    if block_mask.full_kv_num_blocks is None:
        return partial
    return partial | tokens(blocks(block_mask.full_kv_num_blocks, block_mask.full_kv_indices))


def attention(q_BHTD: Tensor, k_BHTD: Tensor, v_BHTD: Tensor, mask: BlockMask | Tensor, scale: float) -> Tensor:
    if isinstance(mask, BlockMask):
        return flex_attention(q_BHTD, k_BHTD, v_BHTD, block_mask=mask, scale=scale)
    # CPU: FlexAttention has no backward there (torch 2.13), so the same mask, expanded, goes to SDPA
    return F.scaled_dot_product_attention(q_BHTD, k_BHTD, v_BHTD, attn_mask=mask, scale=scale)


class CausalSelfAttention(nn.Module):
    def __init__(self, args: Hyperparameters, max_seq_len: int):
        super().__init__()
        self.num_heads, self.head_dim, self.attn_scale = args.num_heads, args.head_dim, args.attn_scale
        hdim, dim = args.num_heads * args.head_dim, args.model_dim
        bound = 3**0.5 * 0.5 * dim**-0.5
        self.qkv_w = nn.Parameter(torch.empty(3, hdim, dim).uniform_(-bound, bound))  # merged q, k, v weights
        self.lambdas = nn.Parameter(torch.tensor([0.5, 0.5]))  # v = l0 * v + l1 * value_embedding
        self.rotary = Rotary(args.head_dim, max_seq_len, args.rope_min_freq)
        self.c_proj = CastedLinear(hdim, dim, zero_init=True)

    def forward(self, x_BTD: Tensor, ve_TD: Tensor | None, mask: BlockMask | Tensor) -> Tensor:
        B, T, _ = x_BTD.shape
        qkv = F.linear(x_BTD, self.qkv_w.flatten(end_dim=1).type_as(x_BTD))
        q, k, v = qkv.view(B, T, 3 * self.num_heads, self.head_dim).chunk(3, dim=-2)  # each (B, T, H, Dh)
        q, k = norm(q), norm(k)  # QK-norm
        q, k = self.rotary(q), self.rotary(k)
        if ve_TD is not None:  # value embeddings (@KoszarskyB, @Grad62304977)
            v = self.lambdas[0] * v + self.lambdas[1] * ve_TD.view_as(v)
        else:
            v = self.lambdas[0] * v
        y_BHTD = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, self.attn_scale)
        y_BTD = y_BHTD.transpose(1, 2).contiguous().view(B, T, -1)
        return self.c_proj(y_BTD)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.c_fc = CastedLinear(dim, hidden)
        self.c_proj = CastedLinear(hidden, dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2 (So et al. 2021, @Grad62304977)


class Block(nn.Module):
    def __init__(self, args: Hyperparameters, layer: int, max_seq_len: int):
        super().__init__()
        has_attention = args.attention_pattern[layer] != "-"  # e.g. layer 7 of the record has none
        self.attn = CausalSelfAttention(args, max_seq_len) if has_attention else None
        self.mlp = MLP(args.model_dim, args.mlp_ratio * args.model_dim)
        self.lambdas = nn.Parameter(torch.tensor([1.0, 0.0]))  # x = l0 * x + l1 * x0

    def forward(self, x: Tensor, ve: Tensor | None, x0: Tensor, mask: BlockMask | Tensor | None) -> Tensor:
        x = self.lambdas[0] * x + self.lambdas[1] * x0
        if self.attn is not None:
            x = x + self.attn(norm(x), ve, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, args: Hyperparameters):
        super().__init__()
        self.args = args
        vocab, dim, layers = next_multiple(args.vocab_size, 128), args.model_dim, args.num_layers
        max_seq_len = max(args.train_seq_len, args.val_seq_len)
        self.embed = nn.Embedding(vocab, dim)
        # value embeddings: tables 0..n-1 on the first n layers and again on the last n (@YouJiacheng's 012...012)
        self.value_embeds = nn.ModuleList(nn.Embedding(vocab, dim) for _ in range(args.num_value_embeds))
        self.blocks = nn.ModuleList(Block(args, i, max_seq_len) for i in range(layers))
        self.lm_head = CastedLinear(dim, vocab, zero_init=True)
        # U-net skips (@brendanh0gan): outputs of the first half are added, weighted, to inputs of the second
        self.skip_weights = nn.Parameter(torch.ones(layers // 2))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by optimizer role: Muon takes `hidden`, Adam the rest (each with its own lr)."""
        groups = dict(
            hidden=[p for p in self.blocks.parameters() if p.ndim >= 2],
            embed=[self.embed.weight, *(e.weight for e in self.value_embeds)],
            head=[self.lm_head.weight],
            scalar=[p for p in self.parameters() if p.ndim < 2],
        )
        assert sum(len(g) for g in groups.values()) == len(list(self.parameters()))
        return groups

    def forward(self, input_T: Tensor, target_T: Tensor, window_blocks: Tensor) -> Tensor:
        """Mean cross-entropy of one window: input_T int32 tokens, target_T int64 next tokens (loss in fp32)."""
        return F.cross_entropy(self.logits(input_T, window_blocks), target_T)

    def logits(self, input_T: Tensor, window_blocks: Tensor) -> Tensor:
        """Soft-capped fp32 logits (T, padded vocab) of one window of tokens; T is a multiple of block_size.
        Training and validation use them through forward; tools/ (sampling, evaluation) call this directly."""
        args = self.args
        layers, n_ve = len(self.blocks), len(self.value_embeds)
        ve = [table(input_T) for table in self.value_embeds]
        ve_per_layer = [
            ve[i] if i < n_ve else ve[i - layers + n_ve] if i >= layers - n_ve else None for i in range(layers)
        ]

        docs_T = (input_T == args.vocab_size - 1).cumsum(0)  # the separator opens each document
        long_mask = document_window_block_mask(docs_T, window_blocks, args.block_size)
        short_mask = document_window_block_mask(docs_T, torch.clamp_min(window_blocks // 2, 1), args.block_size)
        if input_T.device.type == "cpu":
            long_mask, short_mask = block_mask_to_dense(long_mask), block_mask_to_dense(short_mask)
        masks = [{"L": long_mask, "S": short_mask, "-": None}[c] for c in args.attention_pattern]

        x = x0 = norm(self.embed(input_T)[None])  # (1, T, D); norm of the embedding by @Grad62304977
        skips = []
        n_skip = len(self.skip_weights)
        for i, block in enumerate(self.blocks):
            if i >= layers - n_skip:
                x = x + self.skip_weights[i - (layers - n_skip)] * skips.pop()
            x = block(x, ve_per_layer[i], x0, masks[i])
            if i < n_skip:
                skips.append(x)

        x_TD = norm(x).view(-1, x.size(-1))
        if self.training and args.fp8_head:
            scales = args.fp8_x_scale, args.fp8_w_scale, args.fp8_grad_scale
            logits = fp8_mm(x_TD, self.lm_head.weight, *scales, args.compile)[0]
        else:  # evaluation uses the bf16 head
            logits = self.lm_head(x_TD)
        # soft cap: cap * sigmoid(z / temp) = cap/2 * (tanh(z / 2 temp) + 1) (Gemma 2; @Grad62304977, @KoszarskyB,
        # @YouJiacheng), in fp32
        return args.logit_cap * torch.sigmoid(logits.float() / args.logit_temperature)


# -----------------------------------------------------------------------------------------------
# Data: FineWeb-format .bin shards (llm.c): 256 int32 header (magic, version, token count), then uint16 tokens.

SHARD_MAGIC, SHARD_VERSION, SHARD_HEADER_BYTES = 20240520, 1, 256 * 4
DEFAULT_DATA_FIX = (
    "run `python data/cached_fineweb10B.py 9` for FineWeb shards, or `python data/synthetic.py` for synthetic ones"
)


class ShardError(SpeedrunError):
    """A file that is not a valid token shard (or holds the wrong tokens); the message names it and the fix."""


def read_shard_header(path: str | os.PathLike, fix: str = DEFAULT_DATA_FIX) -> int:
    """Validate a shard's header against its size; return its token count."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            header = np.frombuffer(f.read(SHARD_HEADER_BYTES), dtype="<i4")
    except OSError as e:
        raise ShardError(f"cannot read shard {path}: {e.strerror or e}; {fix}.") from e
    if header.size < 3:
        raise ShardError(f"{path} is {size} bytes, too short for a shard header: truncated? Delete it and {fix}.")
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: magic {header[0]} is not {SHARD_MAGIC}, so it is not a token shard (.bin); {fix}.")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: shard version {header[1]} is not {SHARD_VERSION}; {fix}.")
    ntok = int(header[2])
    if ntok < 0 or size != SHARD_HEADER_BYTES + 2 * ntok:
        raise ShardError(
            f"{path}: header says {ntok} tokens ({SHARD_HEADER_BYTES + 2 * ntok} bytes) but the file has {size} "
            f"bytes (an interrupted download?); delete it and {fix}."
        )
    return ntok


def read_shard(path: str | os.PathLike, fix: str = DEFAULT_DATA_FIX) -> Tensor:
    """All tokens of a validated shard as a 1-D uint16 tensor."""
    ntok = read_shard_header(path, fix)
    tokens = np.fromfile(path, dtype="<u2", count=ntok, offset=SHARD_HEADER_BYTES)
    if tokens.size != ntok:
        raise ShardError(f"{path} changed while being read; read it again.")
    return torch.from_numpy(tokens.astype(np.uint16, copy=False))


@dataclass(frozen=True)
class Shard:
    path: Path
    split: str  # "train" or "val"
    tokens: int


def data_fix(args: Hyperparameters, data_path: str) -> str:
    if args.vocab_size == 50257:  # FineWeb's train shards hold 100M tokens: 8 for short (9 by custom), 38 for medium
        batch = args.windows_per_step * args.train_seq_len
        shards = max(9, -(-args.num_iterations // max(steps_in_shard(100_000_000, batch), 1)))
        return f"run `python data/cached_fineweb10B.py {shards}` to download FineWeb shards into data/fineweb10B"
    return f"run `python data/synthetic.py --out {data_path} --vocab-size {args.vocab_size}` to write synthetic shards"


def split_paths(args: Hyperparameters, split: str) -> list[Path]:
    """The shard files of a split in the data folder, sorted by name (the order the run reads them in)."""
    folder, fix = Path(args.data_path), data_fix(args, args.data_path)
    if not folder.is_dir():
        raise SpeedrunError(f"data folder {folder} does not exist (DATA_PATH={args.data_path}); {fix}.")
    paths = sorted(folder.glob(f"*_{split}_*.bin"))
    if not paths:
        raise SpeedrunError(f"data folder {folder} holds no {split} shards (*_{split}_*.bin); {fix}.")
    return paths


def plan_shards(args: Hyperparameters, split: str, tokens_needed: int) -> list[Shard]:
    """The first shards of a split that hold tokens_needed tokens read as one stream: all that validation reads."""
    fix = data_fix(args, args.data_path)
    shards, total = [], 0
    for path in split_paths(args, split):
        if total >= tokens_needed:
            break
        shards.append(Shard(path, split, read_shard_header(path, fix)))
        total += shards[-1].tokens
    if total < tokens_needed:
        raise SpeedrunError(
            f"the {split} shards in {args.data_path} hold {total:,} tokens but this run reads {tokens_needed:,}; {fix}."
        )
    return shards


def steps_in_shard(tokens: int, batch_tokens: int) -> int:
    """How many steps one train shard feeds (TrainWindows): global batches of batch_tokens + 1 tokens from its first
    token on, each batch_tokens after the last, while more than batch_tokens + 1 tokens are left (the record's
    loader moves on when pos + batch + 1 >= tokens)."""
    return max(0, (tokens - 2) // batch_tokens)


def plan_train_shards(args: Hyperparameters) -> list[Shard]:
    """The first train shards that feed num_iterations steps in the record's order (TrainWindows): every shard the
    run reads, the last in part, each with the tail it skips. 8 of FineWeb's 100M-token shards for short."""
    fix, batch = data_fix(args, args.data_path), args.windows_per_step * args.train_seq_len
    shards, steps = [], 0
    for path in split_paths(args, "train"):
        if steps >= args.num_iterations:
            break
        shards.append(Shard(path, "train", read_shard_header(path, fix)))
        steps += steps_in_shard(shards[-1].tokens, batch)
    if steps < args.num_iterations:
        total = sum(s.tokens for s in shards)
        raise SpeedrunError(
            f"the train shards in {args.data_path} ({len(shards)}, {total:,} tokens) feed {steps:,} steps but this "
            f"run takes {args.num_iterations:,}: each step reads {batch + 1:,} tokens from one shard, and the tail of "
            f"a shard that cannot hold one more step is skipped, as in the record; {fix}."
        )
    return shards


def hash_shard(shard: Shard, vocab_size: int, fix: str) -> dict:
    """sha256 of the file, checking on the way that every token is below vocab_size."""
    h, top = hashlib.sha256(), 0
    with open(shard.path, "rb") as f:
        h.update(f.read(SHARD_HEADER_BYTES))
        while chunk := f.read(1 << 24):
            h.update(chunk)
            top = max(top, int(np.frombuffer(chunk, dtype="<u2").max()))
    if top >= vocab_size:
        raise ShardError(
            f"{shard.path} holds token {top}, but this preset's vocabulary has {vocab_size} tokens: the data was made "
            f"for another vocabulary. Point DATA_PATH at matching shards or {fix}."
        )
    return dict(name=shard.path.name, split=shard.split, tokens=shard.tokens, sha256=h.hexdigest())


def describe_data(shards: list[Shard], args: Hyperparameters, d: Dist) -> dict:
    """The log's data line. Ranks hash every world_size-th shard and share results, so it is quick on 8 GPUs."""
    fix = data_fix(args, args.data_path)
    mine = {}
    for i in range(d.rank, len(shards), d.world_size):
        try:
            mine[i] = hash_shard(shards[i], args.vocab_size, fix)
        except ShardError as e:  # shared, so that every rank stops with the same message
            mine[i] = str(e)
        except OSError as e:
            mine[i] = f"cannot read shard {shards[i].path}: {e.strerror or e}; {fix}."
    results = [mine]
    if d.world_size > 1:
        results = [None] * d.world_size
        dist.all_gather_object(results, mine)
    merged = {i: r for part in results for i, r in part.items()}
    for i in range(len(shards)):
        if isinstance(merged[i], str):
            raise ShardError(merged[i])
    return dict(path=args.data_path, vocab_size=args.vocab_size, shards=[merged[i] for i in range(len(shards))])


class ShardTokens:
    """The tokens of a list of shards, each memory-mapped on first use: a run reads only the slices it asks for."""

    def __init__(self, shards: list[Shard], device: torch.device):
        self.shards, self.device = shards, device
        self.maps: dict[int, np.ndarray] = {}

    def _tokens(self, i: int) -> np.ndarray:
        if i not in self.maps:
            s = self.shards[i]
            self.maps[i] = np.memmap(s.path, dtype="<u2", mode="r", offset=SHARD_HEADER_BYTES, shape=(s.tokens,))
        return self.maps[i]


class TokenWindows(ShardTokens):
    """Windows of seq_len tokens from the shards read as one stream: window j covers tokens
    [j * seq_len, (j + 1) * seq_len] (one extra for the last target). Validation reads these: its
    10,485,760 tokens lie in the first val shard, where this is the record's order too."""

    def __init__(self, shards: list[Shard], seq_len: int, device: torch.device):
        super().__init__(shards, device)
        self.seq_len = seq_len
        self.starts = np.cumsum([0] + [s.tokens for s in shards])

    def read(self, start: int, n: int) -> np.ndarray:
        out, pos = [], start
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        while pos < start + n:
            lo, hi = pos - self.starts[i], min(start + n, self.starts[i + 1]) - self.starts[i]
            out.append(self._tokens(i)[lo:hi])
            pos += hi - lo
            i += 1
        return np.concatenate(out)

    def __getitem__(self, j: int) -> tuple[Tensor, Tensor]:
        return inputs_and_targets(torch.from_numpy(self.read(j * self.seq_len, self.seq_len + 1)), self.device)


class TrainWindows(ShardTokens):
    """The training windows in the order of the 2025-01-16 record's loader. Each step's global batch, its
    windows_per_step windows of seq_len tokens plus one token for the last target, lies in ONE shard: the steps of
    a shard start at its tokens 0, B, 2B, ... (B = windows_per_step x seq_len), and when what is left of the shard
    cannot hold another batch (steps_in_shard), the next step starts at the next shard's first token and the rest
    is never read. With 100M-token shards and B = 8 x 64 Ki: 190 steps per shard, 385,280 tokens skipped.
    windows[step, j] is window j of the step, tokens [offset + j seq_len, offset + (j + 1) seq_len] of its shard,
    whichever process reads it: 1 process with 8 micro-steps reads exactly what 8 processes read."""

    def __init__(self, shards: list[Shard], seq_len: int, windows_per_step: int, device: torch.device):
        super().__init__(shards, device)
        self.seq_len, self.batch_tokens = seq_len, seq_len * windows_per_step
        self.first_step = np.cumsum([0] + [steps_in_shard(s.tokens, self.batch_tokens) for s in shards])

    def locate(self, step: int, j: int) -> tuple[int, int]:
        """(index of the shard in the list, offset of the window's first token in that shard)."""
        if not 0 <= step < self.first_step[-1]:
            raise IndexError(f"step {step}: these train shards feed steps 0..{self.first_step[-1] - 1}")
        i = int(np.searchsorted(self.first_step, step, side="right")) - 1  # shards that feed no step are passed over
        return i, int(step - self.first_step[i]) * self.batch_tokens + j * self.seq_len

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        i, offset = self.locate(*key)
        tokens = np.array(self._tokens(i)[offset : offset + self.seq_len + 1])  # a copy: the map is read-only
        return inputs_and_targets(torch.from_numpy(tokens), self.device)


def inputs_and_targets(tokens: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """seq_len + 1 tokens -> (inputs int32, targets int64) of seq_len on the device."""
    buf = tokens.to(torch.int32)
    if device.type == "cuda":  # pinned memory lets the copy run asynchronously
        buf = buf.pin_memory()
    buf = buf.to(device, non_blocking=True)
    return buf[:-1], buf[1:].long()


# -----------------------------------------------------------------------------------------------
# Hyperparameters: the recipe, and its presets. A record run has no other knob: changes are code diffs.


@dataclass(frozen=True)
class Hyperparameters:
    # data
    data_path: str = "data/fineweb10B"  # folder of *_train_*.bin and *_val_*.bin shards (env DATA_PATH)
    vocab_size: int = 50257  # unpadded vocabulary; its last token separates documents
    train_seq_len: int = 64 * 1024  # tokens per window; one window per process per micro-step
    windows_per_step: int = 8  # global batch = windows_per_step x train_seq_len tokens, on any world size
    val_seq_len: int = 64 * 1024  # tokens per validation window
    val_tokens: int = 10_485_760  # the first val_tokens of the val shards (the record tracks fix this number)
    # model
    num_layers: int = 12
    model_dim: int = 768
    num_heads: int = 6
    head_dim: int = 128
    mlp_ratio: int = 4  # MLP hidden = mlp_ratio x model_dim
    attention_pattern: str = "LSSSLSS-SSSL"  # per layer: L long window, S short (= long/2), - no attention
    num_value_embeds: int = 3  # value-embedding tables, used on the first and the last num_value_embeds layers
    attn_scale: float = 0.12  # fixed attention scale instead of head_dim^-0.5
    rope_min_freq: float = 1 / 1024  # rotary frequencies (1/1024)^linspace(0, 1)
    logit_cap: float = 30.0  # logits = cap * sigmoid(z / temperature)
    logit_temperature: float = 7.5
    block_size: int = 128  # FlexAttention block size; windows count in blocks
    window_final_tokens: int = 1792  # the long window grows from block_size to this over training
    # FP8 lm_head in training (static scales)
    fp8_head: bool = True
    fp8_x_scale: float = 2.0
    fp8_w_scale: float = 32.0
    fp8_grad_scale: float = 2.0**29  # logit gradients scale as 1/train_seq_len: this suits 64 Ki-token windows
    # optimization
    num_iterations: int = 1393  # optimizer steps
    cooldown_frac: float = 0.4  # lr constant, then decays linearly over this last fraction of the steps ...
    lr_final_frac: float = 0.1  # ... to this fraction of its initial value (at step num_iterations)
    adam_lr_head: float = 0.008
    adam_lr_embed: float = 0.6
    adam_lr_scalar: float = 0.04
    adam_beta1: float = 0.8
    adam_beta2: float = 0.95
    adam_eps: float = 1e-10
    muon_lr: float = 0.05
    muon_weight_decay: float = 0.0  # decoupled: each Muon step first scales its matrices by 1 - lr x this
    muon_momentum: float = 0.95
    muon_momentum_start: float = 0.85  # momentum warms up linearly from this ...
    muon_momentum_warmup_steps: int = 300  # ... over this many steps
    ns_steps: int = 5  # Newton-Schulz iterations
    # run
    val_loss_every: int = 125  # validate every this many steps (and at step 0 and the last step)
    warmup_steps: int = 10  # untimed dummy steps (compilation), undone before the clock starts
    compile: bool = True  # torch.compile the model (ddp: whole; fsdp: each block), Newton-Schulz, the FP8 casts
    parallelism: str = "ddp"  # "ddp": replicated weights; "fsdp": FSDP2 shards weights, gradients, optimizer state
    checkpoint_every: int = -1  # save every N steps and at the end; 0: only at the end; -1: never (env override)
    checkpoint_keep: int = 0  # keep this run's newest N checkpoints, removing older ones; 0: keep all (env override)


def scale_preset(layers: int, width: int, windows: int, steps: int, muon_lr: float, every: int) -> Hyperparameters:
    """A ladder rung: the record's architecture made wider and deeper, sharded with FSDP2 (gigaGPT's idea: one
    model definition, one table of sizes). 4 Ki-token windows keep activations small: by estimate ~20 GB for
    1.5b's 52 blocks, next to its 31 GB of fp32 weights, gradients and optimizer state on one GPU. The long and
    short attention windows are the record's. Learning rates are untuned starting points that follow the
    medium record's rules (head lr 0.1 / sqrt(width); embeddings 0.3; scalars 0.015), and the FP8 head is off:
    at this size it is a few percent of the FLOPs, not worth its static-scale risk in a long run."""
    return dataclasses.replace(
        Hyperparameters(),
        train_seq_len=4096,
        val_seq_len=4096,
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
        parallelism="fsdp",
        checkpoint_every=every,
    )


PRESETS: dict[str, Hyperparameters] = {
    "short": Hyperparameters(),
    # GPT-2 medium class (track_2_medium). Numbers from the public modded-nanogpt medium records of 2025-02-08
    # (weight decay, 28.1 min) and 2025-02-14 (27.7 min; its tuned Newton-Schulz coefficients are code, not
    # numbers, and are not carried over): 16 blocks x 1024, 8 heads x 128, the 012...012 value embeddings, no
    # attention on layer 7, 7050 steps, 256 Ki-token validation windows, FP8 head scales x 2 / 512 / 2^19.
    "medium": dataclasses.replace(
        Hyperparameters(),
        val_seq_len=4 * 64 * 1024,
        num_layers=16,
        model_dim=1024,
        num_heads=8,
        attention_pattern="LSSSLSS-SSSLSSSL",
        fp8_w_scale=512.0,
        fp8_grad_scale=2.0**19,
        num_iterations=7050,
        lr_final_frac=0.0,  # the medium records decay the learning rate to 0, the short record to 0.1
        adam_lr_head=0.1 / 1024**0.5,
        adam_lr_embed=0.3,
        adam_lr_scalar=0.015,
        muon_lr=0.025,
        muon_weight_decay=0.01,
    ),
    # The scale ladder (track "scale": never a record), FSDP2 on any number of GPUs and nodes. Each runs about
    # 10B tokens, one pass over FineWeb10B. Parameters count the 3 value-embedding tables (lookups, not matmuls).
    #   preset  blocks  width  heads x dim  parameters (hidden matrices)  muon lr  batch (windows x 4 Ki)  steps
    #   1.5b    52      1536   12 x 128     1.86B (1.47B)                0.02     128 (0.52M tokens)      19000
    #   3b      32      2560   20 x 128     3.16B (2.52B)                0.015    256 (1.05M tokens)      9500
    #   7b      32      4096   32 x 128     7.47B (6.44B)                0.01     512 (2.10M tokens)      4750
    # 1.5b has the depth, width and batch of the public modded-nanogpt ScaleUp1B run (2024-10-20: 52 x 1536,
    # 12 heads, 0.49M tokens x 20,344 steps); 3b and 7b take Llama-like shapes, doubling the batch per rung.
    "1.5b": scale_preset(52, 1536, windows=128, steps=19000, muon_lr=0.02, every=1000),
    "3b": scale_preset(32, 2560, windows=256, steps=9500, muon_lr=0.015, every=500),
    "7b": scale_preset(32, 4096, windows=512, steps=4750, muon_lr=0.01, every=250),
    # A tiny model on synthetic data (python data/synthetic.py) for 2 CPU cores: the same code paths except the
    # FP8 head (CPU float8 matmuls measured ~10x slower than float32 ones; tests check the op on its own) and
    # compilation (inductor's C++ build took 90 s, more than the whole run). Shorter validation, noted in config.
    # SPEEDRUN_OVERRIDES='{"parallelism": "fsdp"}' runs it sharded.
    "smoke": dataclasses.replace(
        Hyperparameters(),
        data_path="data/synthetic",
        vocab_size=512,
        train_seq_len=256,
        val_seq_len=256,
        val_tokens=32 * 256,
        model_dim=64,
        num_heads=2,
        head_dim=32,
        window_final_tokens=256,
        fp8_head=False,
        num_iterations=200,
        muon_momentum_warmup_steps=40,
        val_loss_every=25,
        warmup_steps=1,
        compile=False,
    ),
}
TRACKS = {
    "short": ("track_1_short", 3.28),
    "medium": ("track_2_medium", 2.92),
    "smoke": ("smoke", None),
    **{name: ("scale", None) for name in ("1.5b", "3b", "7b")},
}


def resolve_config(env: dict[str, str]) -> tuple[str, Hyperparameters, dict]:
    """The preset named by SPEEDRUN_PRESET, with DATA_PATH and SPEEDRUN_OVERRIDES applied."""
    preset = env.get("SPEEDRUN_PRESET", "short")
    if preset not in PRESETS:
        raise SpeedrunError(f"SPEEDRUN_PRESET={preset!r} is not a preset; choose one of {', '.join(PRESETS)}.")
    args = PRESETS[preset]
    if env.get("DATA_PATH"):
        args = dataclasses.replace(args, data_path=env["DATA_PATH"])
    overrides = {}
    if env.get("SPEEDRUN_OVERRIDES"):
        try:
            given = json.loads(env["SPEEDRUN_OVERRIDES"])
        except json.JSONDecodeError as e:
            raise SpeedrunError(
                f"SPEEDRUN_OVERRIDES is not valid JSON ({e}); give an object like '{{\"num_iterations\": 20}}'."
            ) from e
        if not isinstance(given, dict):
            raise SpeedrunError(
                "SPEEDRUN_OVERRIDES must be a JSON object of Hyperparameters fields, e.g. '{\"num_iterations\": 20}'."
            )
        types = {f.name: type(getattr(args, f.name)) for f in dataclasses.fields(args)}
        for key, value in given.items():
            if key not in types:
                raise SpeedrunError(
                    f"SPEEDRUN_OVERRIDES: {key!r} is not a Hyperparameters field; fields: {', '.join(types)}."
                )
            want = types[key]
            ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value, ok = float(value), True
            if not ok:
                raise SpeedrunError(f"SPEEDRUN_OVERRIDES: {key} must be a {want.__name__}, got {value!r}.")
            if key in RUN_SETTING_VARIABLES:
                raise SpeedrunError(
                    f"SPEEDRUN_OVERRIDES: {key} is a run setting, not part of the recipe: set "
                    f"{RUN_SETTING_VARIABLES[key]} instead (an override would disqualify a record run)."
                )
            if value != getattr(args, key):  # only what changes the preset: an override disqualifies a record run
                overrides[key] = value
        args = dataclasses.replace(args, **overrides)
    # run settings, not changes to the recipe: recorded as checkpoint_every / checkpoint_keep, not in overrides
    for field, lowest, meaning in (
        ("checkpoint_every", -1, "N > 0 (every N steps and at the end), 0 (only at the end) or -1 (never)"),
        ("checkpoint_keep", 0, "N > 0 (keep the run's newest N checkpoints) or 0 (keep them all)"),
    ):
        variable = RUN_SETTING_VARIABLES[field]
        value = env_int(env, variable, meaning)
        if value is not None:
            if value < lowest:
                raise SpeedrunError(f"{variable}={value}: give {meaning}.")
            args = dataclasses.replace(args, **{field: value})
    return preset, args, overrides


RUN_SETTING_VARIABLES = {
    "data_path": "DATA_PATH",
    "checkpoint_every": "SPEEDRUN_CHECKPOINT_EVERY",
    "checkpoint_keep": "SPEEDRUN_CHECKPOINT_KEEP",
}


def env_int(env: dict[str, str], name: str, meaning: str) -> int | None:
    """An integer environment variable; None when unset or empty."""
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text, 10)
    except ValueError:
        raise SpeedrunError(f"{name}={text!r} is not a whole number: give {meaning}.") from None


def validate(args: Hyperparameters, world_size: int) -> None:
    """Reject configurations the code cannot run exactly, before any work is done."""
    sizes = (
        "vocab_size",
        "train_seq_len",
        "windows_per_step",
        "val_seq_len",
        "val_tokens",
        "num_layers",
        "model_dim",
        "num_heads",
        "head_dim",
        "mlp_ratio",
        "block_size",
        "window_final_tokens",
    )
    problems = [f"{name}={getattr(args, name)} must be positive" for name in sizes if getattr(args, name) < 1]
    if world_size < 1:
        problems.append(f"world_size={world_size}: a run needs at least one process")
    if problems:  # the checks below divide by these
        raise SpeedrunError("invalid configuration: " + "; ".join(problems) + ".")
    if args.windows_per_step % world_size:
        problems.append(
            f"{world_size} processes cannot share {args.windows_per_step} windows per step equally: use a world size "
            f"that divides {args.windows_per_step} (1, 2, 4 or 8 GPUs)"
        )
    for name in ("train_seq_len", "val_seq_len", "window_final_tokens"):
        if getattr(args, name) % args.block_size:
            problems.append(f"{name}={getattr(args, name)} is not a multiple of block_size={args.block_size}")
    n_val = args.val_tokens // args.val_seq_len
    if args.val_tokens % args.val_seq_len or n_val % args.windows_per_step:
        problems.append(f"val_tokens={args.val_tokens} must be a multiple of windows_per_step x val_seq_len")
    if len(args.attention_pattern) != args.num_layers or set(args.attention_pattern) - set("LS-"):
        problems.append(f"attention_pattern={args.attention_pattern!r} needs one of L, S, - per layer")
    if args.num_layers % 2 or args.num_layers < 2 * args.num_value_embeds:
        problems.append("num_layers must be even (U-net) and at least 2 x num_value_embeds")
    if args.head_dim % 4 or args.num_heads * args.head_dim != args.model_dim:
        problems.append("head_dim must be a multiple of 4 (rotary) and num_heads x head_dim equal model_dim")
    if args.fp8_head and args.model_dim % 16:
        problems.append("model_dim must be a multiple of 16 for the FP8 head")
    if args.parallelism not in ("ddp", "fsdp"):
        problems.append(f"parallelism={args.parallelism!r} is neither 'ddp' (replicated) nor 'fsdp' (sharded)")
    if args.parallelism == "fsdp" and (args.num_heads * args.head_dim) % world_size:
        problems.append(f"fsdp cuts the q/k/v weights into {world_size} equal slices: num_heads x head_dim must divide")
    if args.num_iterations < 1 or args.val_loss_every < 0 or args.warmup_steps < 0 or args.checkpoint_every < -1:
        problems.append("num_iterations must be >= 1, val_loss_every and warmup_steps >= 0, checkpoint_every >= -1")
    if args.checkpoint_keep < 0:
        problems.append("checkpoint_keep must be >= 0 (0 keeps every checkpoint)")
    if problems:
        raise SpeedrunError("invalid configuration: " + "; ".join(problems) + ".")


# -----------------------------------------------------------------------------------------------
# Logging: rank 0 writes logs/<run_id>.txt (docs/log-format.md) and echoes it to the console.

SEPARATOR = "=" * 100


class RunLog:
    def __init__(self, path: Path | None):
        self.path = path
        self.file = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(path, "x", encoding="utf-8")  # kept open for the whole run
            except OSError as e:
                raise SpeedrunError(
                    f"cannot write the log {path}: {e.strerror or e}; set LOG_DIR to a writable folder."
                ) from e

    def __call__(self, line: str, console: bool = True) -> None:
        if self.file is None:
            return
        self.file.write(line + "\n")
        self.file.flush()
        if console:
            print(line, flush=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def gpus_in_use(env: dict[str, str], device_count: int) -> list[str] | None:
    """The GPUs this node's processes use, as nvidia-smi -i names them, when that is not every GPU nvidia-smi
    lists (it ignores CUDA_VISIBLE_DEVICES): the log then shows the hardware the run used, so that `NPROC=2`
    on an 8-GPU node reads as a 2-GPU run. None: show them all."""
    used = int(env.get("LOCAL_WORLD_SIZE", "1"))
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible:
        return visible[:used]
    return [str(i) for i in range(used)] if used < device_count else None


def nvidia_smi(ids: list[str] | None = None) -> str:
    for cmd in ([["nvidia-smi", "-i", ",".join(ids)]] if ids else []) + [["nvidia-smi"]]:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return "nvidia-smi: not available"
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.rstrip("\n")
    return "nvidia-smi: not available"


def environment_lines() -> list[str]:
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    ids = gpus_in_use(dict(os.environ), torch.cuda.device_count()) if torch.cuda.is_available() else None
    return [
        f"Running Python {sys.version}",
        f"Running PyTorch {torch.__version__} compiled for {build}",
        nvidia_smi(ids),
    ]


def parameter_counts(args: Hyperparameters) -> dict[str, int]:
    """The log's `parameters:` line: counts by optimizer role, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        groups = GPT(args).param_groups()
    counts = {role: sum(p.numel() for p in params) for role, params in groups.items()}
    return dict(total=sum(counts.values()), **counts)


def shared_seed_and_run_id(seed: int | None, d: Dist) -> tuple[int, str]:
    """The given seed or a random one, and a uuid4 run id, both drawn on rank 0 and shared."""
    choice = [seed if seed is not None else secrets.randbelow(2**31), str(uuid.uuid4())]
    if d.world_size > 1:
        dist.broadcast_object_list(choice, src=0)
    return choice[0], choice[1]


# -----------------------------------------------------------------------------------------------
# Build and compile: model, optimizers, flat gradient buckets.


def build_model(args: Hyperparameters, seed: int, d: Dist) -> GPT:
    """The model on the device, identical on every rank; sharded with FSDP2 when args.parallelism is fsdp.
    The whole model is built on each rank first (7.5B parameters in fp32 take 30 GB), then cut."""
    torch.manual_seed(seed)
    with torch.device(d.device):
        model = GPT(args)
    # ddp: bf16 embedding tables on CUDA, as in the record (so activations are bf16 throughout); fsdp casts every
    # weight itself. On CPU all stays fp32: bf16 matmuls are fast only on CPUs with AVX512-BF16/AMX.
    if d.cuda and args.parallelism == "ddp":
        for m in model.modules():
            if isinstance(m, nn.Embedding):
                m.bfloat16()
    if d.world_size > 1:  # ranks start identical even if some init kernel were nondeterministic
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)
    if args.parallelism == "fsdp":
        shard_model(model, d)
    return model


def shard_model(model: GPT, d: Dist) -> None:
    """FSDP2 (torch.distributed.fsdp.fully_shard) on each block and on the root (embeddings, head, scalars):
    every weight becomes a DTensor cut along one dim over all ranks, all-gathered just before its module runs
    and freed after; gradients are reduce-scattered as backward goes, so each rank ends up with the sums for
    its own slices. On CUDA weights compute in bf16 and gradients are reduced in fp32 (the lm_head too: the FP8
    op receives the whole, all-gathered bf16 weight, and autograd casts its fp32 weight gradient to bf16 before
    FSDP2 reduces it in fp32). The stacked q/k/v weight (3, hdim, dim) is cut along hdim, not along the 3."""
    ensure_process_group(d)
    mesh, mp = init_device_mesh(d.device.type, (d.world_size,)), mixed_precision(d)

    def placement(p: nn.Parameter) -> ShardDim | None:
        return ShardDim(1) if p.ndim == 3 else None  # None: the default, dim 0

    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp, shard_placement_fn=placement)
    fully_shard(model, mesh=mesh, mp_policy=mp, shard_placement_fn=placement)
    for m in model.modules():
        if isinstance(m, FSDPModule):  # plain sums; train_step divides by the window count, as in ddp
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)


def mixed_precision(d: Dist) -> MixedPrecisionPolicy:
    if d.cuda:
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()  # CPU: fp32 throughout, as in ddp


def compile_model(raw: GPT, args: Hyperparameters) -> nn.Module:
    """ddp: the whole model in one graph (fullgraph: a graph break would be a silent slowdown). fsdp: FSDP2's
    hooks (all-gather before a block, reduce-scatter after) run around every block, so each block is compiled
    on its own, as torchtitan does; compiling the bound forward rather than wrapping the module keeps the hooks
    outside the graph and the state_dict keys unchanged. Embeddings, block masks and head run eagerly. Blocks
    share compiled graphs (3 variants in the ladder: the first block, value embeddings or none), so depth
    costs no extra compilation; the BlockMask passed in each step is an input, not a recompile."""
    if not args.compile:
        return raw
    if args.parallelism == "ddp":
        return torch.compile(raw, dynamic=False, fullgraph=True)
    for block in raw.blocks:
        block.forward = torch.compile(block.forward, dynamic=False, fullgraph=True)
    return raw


class GradBuckets:
    """Every gradient is a view into one flat buffer per (role, dtype), so one all-reduce syncs a bucket.
    Backward accumulates into existing .grad tensors in place, which is what makes this work (as DDP's
    gradient_as_bucket_view); gradients are zeroed, never set to None."""

    def __init__(self, roles: dict[str, list[nn.Parameter]]):
        self.buckets: dict[str, list[Tensor]] = {}
        for role, params in roles.items():
            for dtype in dict.fromkeys(p.dtype for p in params):
                same = [p for p in params if p.dtype == dtype]
                buf = torch.zeros(sum(p.numel() for p in same), dtype=dtype, device=same[0].device)
                offset = 0
                for p in same:
                    p.grad = buf[offset : offset + p.numel()].view_as(p)
                    offset += p.numel()
                self.buckets.setdefault(role, []).append(buf)
        self.works: dict[str, list] = {}

    def zero(self) -> None:
        for bufs in self.buckets.values():
            for buf in bufs:
                buf.zero_()

    def flat(self) -> list[Tensor]:
        return [buf for bufs in self.buckets.values() for buf in bufs]

    def accumulate(self, forward_backward, windows: range, d: Dist) -> dict[int, Tensor]:
        """Gradients of this rank's windows summed in a TreeSum, then their all-reduce started."""
        tree = TreeSum(self, len(windows))
        losses = {}
        for j in windows:
            self.zero()
            losses[j] = forward_backward(j)
            tree.add_window()
        tree.finish()
        self.start_sum(d)
        return losses

    def start_sum(self, d: Dist) -> None:
        if d.world_size > 1:
            self.works = {
                role: [dist.all_reduce(b, async_op=True) for b in bufs] for role, bufs in self.buckets.items()
            }

    def finish_mean(self, role: str, scale: float) -> None:
        """Wait for a role's sums (on CUDA the stream waits, not the host), then turn them into means."""
        for buf, work in zip(self.buckets[role], self.works.pop(role, [None] * len(self.buckets[role])), strict=True):
            if work is not None:
                work.wait()
            buf.mul_(scale)


class TreeSum:
    """Sums the gradients of a process's windows in a fixed binary tree, ((w0+w1)+(w2+w3))+..., instead of in
    arrival order. With windows dealt to processes in contiguous runs of a power of two, each process then holds a
    whole subtree, so 1 process and 2 processes (whose all-reduce adds two numbers, which commutes exactly) add
    the same numbers in the same order: their runs are bitwise identical. A binary counter of partial sums keeps
    at most log2(windows) + 1 copies of the gradients; with one window per process nothing is copied."""

    def __init__(self, grads: GradBuckets, windows: int):
        self.grads, self.windows = grads, windows
        self.stack: list[tuple[int, list[Tensor]]] = []  # (tree level, partial sums), deepest level first

    def add_window(self) -> None:
        """Fold the window whose gradients backward just left in the (zeroed beforehand) buckets."""
        if self.windows == 1:
            return
        level, node = 0, [buf.clone() for buf in self.grads.flat()]
        while self.stack and self.stack[-1][0] == level:
            _, left = self.stack.pop()
            node = [a.add_(b) for a, b in zip(left, node, strict=True)]
            level += 1
        self.stack.append((level, node))

    def finish(self) -> None:
        """Leave the tree's sum in the buckets (levels left over fold right to left if windows is no power of 2)."""
        if self.windows == 1:
            return
        _, total = self.stack.pop()
        while self.stack:
            _, left = self.stack.pop()
            total = [a.add_(b) for a, b in zip(left, total, strict=True)]
        for buf, t in zip(self.grads.flat(), total, strict=True):
            buf.copy_(t)


class ShardedGrads:
    """fsdp: FSDP2 owns the gradients. Each backward reduce-scatters (sums) the window's gradients over the ranks
    and adds the result to the sharded .grad, so a step sums, in order, the cross-rank sums of each micro-step:
    (w0 + w4) + (w1 + w5) + ... on 2 processes of 4 windows each. One process adds exactly that when it runs
    the windows in pairs (0, 4), (1, 5), ..., the first of each without gradient sync, so that FSDP2 adds the
    pair before it reaches the sharded gradient: 1 and 2 processes print bitwise identical losses, as in ddp.
    (Beyond 2 processes a reduce-scatter adds in an order of its own.) The pairing keeps one extra copy of the
    gradients on a single process; nothing else is copied."""

    def __init__(self, model: GPT, roles: dict[str, list[nn.Parameter]], world_size: int):
        self.model, self.roles, self.world_size = model, roles, world_size

    def zero(self) -> None:
        for params in self.roles.values():
            for p in params:
                p.grad = None

    def accumulate(self, forward_backward, windows: range, d: Dist) -> dict[int, Tensor]:
        half = len(windows) // 2
        pairs = self.world_size == 1 and len(windows) == 2 * half
        order = [j for i in range(half) for j in (windows[i], windows[i + half])] if pairs else windows
        self.zero()
        losses = {}
        for k, j in enumerate(order):
            self.model.set_requires_gradient_sync(not pairs or k % 2 == 1)
            losses[j] = forward_backward(j)
        return losses

    def finish_mean(self, role: str, scale: float) -> None:
        for p in self.roles[role]:
            p.grad.mul_(scale)


def gather_window_losses(losses: Tensor, d: Dist) -> Tensor:
    """Every process's per-window losses, concatenated in window order (processes own contiguous runs of windows),
    so that their sum is taken in one fixed order whatever the world size."""
    if d.world_size == 1:
        return losses
    out = losses.new_empty(d.world_size * losses.numel())
    all_gather_flat(out, losses)
    return out


def build_optimizers(
    model: GPT, args: Hyperparameters, d: Dist
) -> tuple[torch.optim.Adam, Muon, GradBuckets | ShardedGrads]:
    groups = model.param_groups()
    adam = torch.optim.Adam(
        [
            dict(params=groups["head"], lr=args.adam_lr_head),
            dict(params=groups["embed"], lr=args.adam_lr_embed),
            dict(params=groups["scalar"], lr=args.adam_lr_scalar),
        ],
        betas=(args.adam_beta1, args.adam_beta2),
        eps=args.adam_eps,
        fused=d.cuda,
    )
    muon = Muon(
        groups["hidden"],
        args.muon_lr,
        args.muon_momentum,
        args.ns_steps,
        d.rank,
        d.world_size,
        args.muon_weight_decay,
        compiled=args.compile,
    )
    for opt in (adam, muon):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    roles = dict(muon=groups["hidden"], adam=groups["head"] + groups["embed"] + groups["scalar"])
    grads = ShardedGrads(model, roles, d.world_size) if args.parallelism == "fsdp" else GradBuckets(roles)
    return adam, muon, grads


def lr_factor(step: int, args: Hyperparameters) -> float:
    """The learning rate's multiplier: 1, then linear decay over the last cooldown_frac of the steps, reaching
    lr_final_frac at step num_iterations: w + f (1 - w) with w = min((1 - step / num_iterations) / cooldown_frac, 1)
    (in this order of operations, the record's float arithmetic)."""
    w = min((1 - step / args.num_iterations) / args.cooldown_frac, 1.0)
    return w + args.lr_final_frac * (1 - w)


def window_blocks(step: int, args: Hyperparameters) -> int:
    """Long attention window in blocks: grows linearly from 1 block to window_final_tokens over training,
    rounded up to whole blocks (@fernbear.bsky.social; block-wise @YouJiacheng). As in the record the ramp
    aims half a block short of the final size, so that the final size is reached (at the end) by rounding up."""
    x = step / args.num_iterations
    return max(1, math.ceil(x * (args.window_final_tokens - args.block_size / 2) / args.block_size))


def window_tensor(step: int, args: Hyperparameters, d: Dist) -> Tensor:
    # a tensor, so a new size recompiles nothing; pinned, so the copy does not stall the host
    return torch.tensor(window_blocks(step, args), dtype=torch.int32, pin_memory=d.cuda).to(d.device, non_blocking=True)


def windows_of_rank(args: Hyperparameters, d: Dist) -> range:
    """The windows of each step this process trains on, a contiguous run: window r of 8 on 8 processes, all 8 in
    order on one (the record's windows on any world size; see TrainWindows)."""
    accum = args.windows_per_step // d.world_size
    return range(d.rank * accum, (d.rank + 1) * accum)


def train_step(step: int, model: nn.Module, opts, windows, args: Hyperparameters, d: Dist, dummy=None) -> Tensor:
    """One optimizer step on windows_per_step windows; returns the mean loss as a device tensor (no sync).
    Process r takes windows r*G .. r*G + G-1 of the step (G = grad_accum_steps; windows: TrainWindows), so the
    math is the same on any world size, and bitwise the same on 1 and 2 processes (see TreeSum and ShardedGrads)."""
    adam, muon, grads = opts
    window = window_tensor(step, args, d)

    def forward_backward(j: int) -> Tensor:
        inputs, targets = windows[step, j] if dummy is None else dummy
        loss = model(inputs, targets, window)
        # backward of the unscaled window mean: the FP8 gradient scale sees the same values on any world size
        loss.backward()
        return loss.detach()

    losses = grads.accumulate(forward_backward, windows_of_rank(args, d), d)
    factor = lr_factor(step, args)
    for opt in (adam, muon):
        for group in opt.param_groups:
            group["lr"] = group["initial_lr"] * factor
    frac = min(step / args.muon_momentum_warmup_steps, 1) if args.muon_momentum_warmup_steps else 1
    for group in muon.param_groups:
        group["momentum"] = (1 - frac) * args.muon_momentum_start + frac * args.muon_momentum
    grads.finish_mean("muon", 1 / args.windows_per_step)
    muon.step()
    grads.finish_mean("adam", 1 / args.windows_per_step)
    adam.step()
    mine = torch.stack([losses[j] for j in sorted(losses)])
    return gather_window_losses(mine, d).sum() / args.windows_per_step


@torch.no_grad()
def evaluate(model: nn.Module, windows: TokenWindows, args: Hyperparameters, d: Dist, step: int) -> float:
    """Mean loss over the val_tokens / val_seq_len validation windows (equal sizes, so the mean of means).
    Each process takes a contiguous run of windows; the sum is taken over all of them in window order.
    Runs in eval mode (the bf16 head) and leaves the model in the mode it found it in."""
    was_training = model.training
    model.eval()
    window = window_tensor(step, args, d)
    n = args.val_tokens // args.val_seq_len
    per_rank = n // d.world_size
    losses = torch.stack([model(*windows[j], window) for j in range(d.rank * per_rank, (d.rank + 1) * per_rank)])
    model.train(was_training)
    return gather_window_losses(losses, d).double().sum().item() / n


# -----------------------------------------------------------------------------------------------
# Warm-up: compile and run the exact training step on dummy data, then restore the initial state.


def warm_up(model: nn.Module, raw: GPT, opts, args: Hyperparameters, seed: int, d: Dist) -> None:
    if args.warmup_steps == 0:
        return
    saved = save_training_state(raw, opts)
    gen = torch.Generator().manual_seed(seed)
    dummy = inputs_and_targets(torch.randint(0, args.vocab_size, (args.train_seq_len + 1,), generator=gen), d.device)
    for step in range(args.warmup_steps):
        train_step(step, model, opts, None, args, d, dummy=dummy)
    restore_training_state(raw, opts, saved)


def save_training_state(raw: GPT, opts) -> tuple[list[Tensor], list[dict]]:
    """The weights and the optimizers' state, to go back to with restore_training_state. The weights (this rank's
    slices, under fsdp) wait in host memory, so that a big model needs no second copy on the device; before the
    first step the optimizers hold no state yet, only their settings."""
    weights = [local(t).to("cpu", copy=True) for t in raw.state_dict().values()]
    return weights, copy.deepcopy([opts[0].state_dict(), opts[1].state_dict()])


def restore_training_state(raw: GPT, opts, saved: tuple[list[Tensor], list[dict]]) -> None:
    weights, settings = saved
    with torch.no_grad():
        for t, w in zip(raw.state_dict().values(), weights, strict=True):
            local(t).copy_(w)
    opts[0].load_state_dict(settings[0])
    opts[1].load_state_dict(settings[1])
    opts[2].zero()


# -----------------------------------------------------------------------------------------------
# Checkpoints: torch.distributed.checkpoint (DCP) folders, written by every rank in parallel, that load on any
# world size and either parallelism. The layout (read by tools/ too):
#   <dir>/step_<NNNNNN>/.metadata, *.distcp   "model": GPT(args).state_dict() (DTensor slices under fsdp)
#                                             "optim": per-parameter optimizer state, by parameter name
#                                             "train": step, data position, train time, RNG states
#   <dir>/step_<NNNNNN>/config.json           written last by rank 0: its presence marks a complete checkpoint

CHECKPOINT_FORMAT = "speedrun-checkpoint-v1"
CHECKPOINT_RUN_SETTINGS = (
    "data_path",
    "checkpoint_every",
    "checkpoint_keep",
    "compile",
    "warmup_steps",
    "val_loss_every",
    "parallelism",
)


@dataclass(frozen=True)
class Resume:
    path: Path  # a step_<NNNNNN> folder
    step: int
    run_id: str
    keys: frozenset[str]  # the saved state's keys, as .metadata lists them ("model.embed.weight", "train.step", ...)


def read_resume(path_text: str, args: Hyperparameters) -> Resume:
    """Check a checkpoint folder before any work: complete, of this format, and of the same recipe."""
    path, fix = Path(path_text), "point SPEEDRUN_RESUME at a step_<NNNNNN> folder that holds a config.json"
    try:
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except OSError as e:
        raise SpeedrunError(
            f"SPEEDRUN_RESUME={path_text}: cannot read {path / 'config.json'} ({e.strerror or e}): the folder is "
            f"missing or the checkpoint incomplete (config.json is written last); {fix}."
        ) from e
    except json.JSONDecodeError as e:
        raise SpeedrunError(f"SPEEDRUN_RESUME={path_text}: config.json is not valid JSON ({e}); {fix}.") from e
    keys = ("format", "preset", "hyperparameters", "step", "run_id")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT or not all(k in meta for k in keys):
        raise SpeedrunError(
            f"SPEEDRUN_RESUME={path_text}: config.json is not a {CHECKPOINT_FORMAT} checkpoint's (it needs "
            f"{', '.join(keys)}); {fix}."
        )
    kinds = dict(hyperparameters=dict, step=int, run_id=str)
    wrong = [k for k, kind in kinds.items() if not isinstance(meta[k], kind) or isinstance(meta[k], bool)]
    if wrong:
        raise SpeedrunError(
            f"SPEEDRUN_RESUME={path_text}: config.json is damaged ({', '.join(wrong)} of the wrong type: "
            "hyperparameters is an object, step an integer, run_id a string); resume from another checkpoint."
        )
    saved, now = meta["hyperparameters"], dataclasses.asdict(args)
    differ = [k for k in now if k not in CHECKPOINT_RUN_SETTINGS and saved.get(k) != now[k]]
    if differ:
        diffs = "; ".join(f"{k}: checkpoint {saved.get(k)!r}, this run {now[k]!r}" for k in differ[:6])
        raise SpeedrunError(
            f"SPEEDRUN_RESUME={path_text} was saved by a run with another recipe ({diffs}). A resumed run continues "
            f"exactly only with the same one: use SPEEDRUN_PRESET={meta['preset']} and the same SPEEDRUN_OVERRIDES."
        )
    if not (path / ".metadata").is_file():
        raise SpeedrunError(
            f"SPEEDRUN_RESUME={path_text}: the DCP file .metadata is missing: the checkpoint is damaged."
        )
    try:  # an untrusted file: whatever reading it raises means it is damaged
        metadata = dcp.FileSystemReader(path).read_metadata()
        files = sorted({info.relative_path for info in metadata.storage_data.values()})
        keys = frozenset(metadata.state_dict_metadata)
    except Exception as e:
        raise SpeedrunError(
            f"SPEEDRUN_RESUME={path_text}: the DCP file .metadata cannot be read ({type(e).__name__}: {e}): the "
            "checkpoint is damaged; resume from another one."
        ) from None
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise SpeedrunError(
            f"SPEEDRUN_RESUME={path_text}: {len(missing)} of its {len(files)} DCP data files are missing "
            f"({', '.join(missing[:4])}): the checkpoint is incomplete; resume from another one."
        )
    if meta["step"] >= args.num_iterations:
        raise SpeedrunError(
            f"SPEEDRUN_RESUME={path_text} is the checkpoint of step {meta['step']}, the end of its "
            f"{args.num_iterations}-step run: nothing is left to train."
        )
    return Resume(path, meta["step"], meta["run_id"], keys)


def optimizer_state(raw: GPT, opts, template: bool = False) -> dict:
    """{"adam"|"muon": {parameter name: its state}}, whole tensors or DTensors, so that it reshards to any world
    size. Muon keeps a replicated matrix's momentum on its owner only, and ownership depends on the world size,
    so each rank writes (and reads) the whole buffers of the matrices it owns. With template=True: zeros of
    the right shapes, for dcp.load to fill."""
    adam, muon, _ = opts
    names = {p: n for n, p in raw.named_parameters()}
    adam_params = [p for group in adam.param_groups for p in group["params"]]

    def adam_zeros(p: Tensor) -> dict:
        return dict(step=torch.zeros(()), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))

    return dict(
        adam={names[p]: adam_zeros(p) if template else adam.state[p] for p in adam_params},
        muon={names[p]: dict(momentum_buffer=torch.zeros_like(p)) if template else muon.state[p] for p in muon.owned},
    )


def train_state(step: int, train_time_ms: float, args: Hyperparameters, d: Dist) -> dict:
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


def make_checkpoint_dir(folder: Path, d: Dist) -> None:
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


def save_checkpoint(
    folder: Path, raw: GPT, opts, args: Hyperparameters, step: int, train_time_ms: float, meta: dict, d: Dist
) -> None:
    state = dict(model=raw.state_dict(), optim=optimizer_state(raw, opts))
    if d.rank == 0:  # rank 0's clock and RNG: DCP writes one copy of a replicated value, from any rank
        state["train"] = train_state(step, train_time_ms, args, d)
    try:
        dcp.save(state, checkpoint_id=folder)
        if d.rank == 0:
            config = meta | dict(step=step, train_time_ms=train_time_ms)
            (folder / "config.json.tmp").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
            os.replace(folder / "config.json.tmp", folder / "config.json")
    except (OSError, dcp.CheckpointException) as e:
        raise SpeedrunError(
            f"cannot write the checkpoint {folder}: {checkpoint_problem(e)}. Free some space or set "
            "SPEEDRUN_CHECKPOINT_DIR to a writable folder (on a filesystem every node sees)."
        ) from e


def checkpoint_problem(e: BaseException) -> str:
    """One line for a failed DCP save or load: the first failing rank's exception, not DCP's traceback text."""
    if isinstance(e, dcp.CheckpointException) and e.failures:
        rank, (exc, _) = next(iter(e.failures.items()))
        return f"{type(exc).__name__} on rank {rank}: {str(exc).rstrip('.')}"
    return f"{type(e).__name__}: {str(e).rstrip('.')}"


def prune_checkpoints(run_folder: Path, keep: int) -> list[tuple[Path, str | None]]:
    """Rank 0, after a save: remove all but the newest `keep` complete checkpoints of this run's folder (never
    another run's, such as the one it resumed from). config.json goes first, so that a removal cut short leaves
    a folder marked incomplete, not a damaged checkpoint that looks whole. Returns (folder, problem or None):
    a checkpoint that cannot be removed is reported, and the run goes on."""
    saved = [f for f in run_folder.glob("step_*") if f.name[5:].isdigit() and (f / "config.json").is_file()]
    complete = sorted(saved, key=lambda f: int(f.name[5:]))
    removed = []
    for folder in complete[: max(len(complete) - keep, 0)]:
        try:
            (folder / "config.json").unlink()
            shutil.rmtree(folder)
            removed.append((folder, None))
        except OSError as e:
            removed.append((folder, str(e.strerror or e)))
    return removed


def load_checkpoint(resume: Resume, raw: GPT, opts, args: Hyperparameters, d: Dist) -> tuple[int, float]:
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
    for p in muon.owned:
        muon.state[p] = state["optim"]["muon"][names[p]]
    torch.set_rng_state(train["rng_cpu"])
    if "rng_cuda" in train:
        torch.cuda.set_rng_state(train["rng_cuda"], d.device)
    return step, float(train["train_time_ms"])


# -----------------------------------------------------------------------------------------------
# The timed loop. The clock runs only while training: it stops for validation, and device work is
# synchronised before every exact reading.


class NonFiniteLoss(SpeedrunError):
    pass


def train(
    model: nn.Module,
    opts,
    train_windows,
    val_windows,
    args: Hyperparameters,
    d: Dist,
    log: RunLog,
    start: tuple[int, float] = (0, 0.0),
    save=None,
) -> float:
    """Steps start[0]+1 .. num_iterations, the clock going on from start[1] ms (a resumed run). save(step, ms),
    if given, writes a checkpoint every checkpoint_every steps and at the end, with the clock stopped."""
    total, (first, train_time_ms) = args.num_iterations, start
    val_loss = float("nan")
    pending = None  # (step, loss tensor, train_time_ms read without a sync) of the step whose loss is unread

    def report(entry) -> None:
        # Reading a step's loss waits for that step; we read it only after the next step is queued, so the
        # device never idles waiting for the host (one step of delay in noticing a NaN, no per-step bubble).
        step, loss_t, ms = entry
        loss = loss_t.item()
        log(f"step:{step}/{total} train_loss:{loss:.4f} train_time:{ms:.0f}ms step_avg:{ms / step:.2f}ms")
        if not math.isfinite(loss):
            raise NonFiniteLoss(f"the training loss became {loss} at step {step}; stopping the run")

    synchronize(d.device)
    t0 = time.perf_counter()
    for step in range(first, total + 1):
        last = step == total
        validating = last or (args.val_loss_every > 0 and (step % args.val_loss_every == 0 or step == first))
        every = args.checkpoint_every
        saving = save is not None and step > first and (last or (every > 0 and step % every == 0))
        if validating or saving:
            synchronize(d.device)
            if step > first:
                train_time_ms += 1000 * (time.perf_counter() - t0)
            if pending is not None:
                report(pending)
                pending = None
            if validating:
                val_loss = evaluate(model, val_windows, args, d, step)
                log(
                    f"step:{step}/{total} val_loss:{val_loss:.4f} train_time:{train_time_ms:.0f}ms "
                    f"step_avg:{train_time_ms / max(step, 1):.2f}ms"
                )
                if not math.isfinite(val_loss):
                    raise NonFiniteLoss(f"the validation loss became {val_loss} at step {step}; stopping the run")
            if saving:
                save(step, train_time_ms)
            synchronize(d.device)
            t0 = time.perf_counter()
        if last:
            break
        loss = train_step(step, model, opts, train_windows, args, d)
        if pending is not None:
            report(pending)
        pending = (step + 1, loss, train_time_ms + 1000 * (time.perf_counter() - t0))
    return val_loss


# -----------------------------------------------------------------------------------------------
# Main: configuration, data check, log header, build, warm-up, timed run, summary.


def peak_memory_line(d: Dist) -> str:
    if d.cuda:
        mib = torch.cuda.max_memory_allocated(d.device) // 2**20, torch.cuda.max_memory_reserved(d.device) // 2**20
    else:  # no caching allocator on CPU: report the process's peak resident set size for both
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        mib = rss, rss
    return f"peak memory allocated: {mib[0]} MiB reserved: {mib[1]} MiB"


@dataclass(frozen=True)
class RunPlan:
    preset: str
    args: Hyperparameters
    overrides: dict
    seed: int | None
    val_shards: list[Shard]
    train_shards: list[Shard]
    checkpoint_root: Path | None  # checkpoints go to <root>/<run_id>/step_<NNNNNN>; None: no checkpoints
    resume: Resume | None


def plan_run(world_size: int) -> RunPlan:
    """Configuration, seed, checkpoints and the shards to read, all checked: a setup mistake surfaces here,
    before any work."""
    env = dict(os.environ)
    preset, args, overrides = resolve_config(env)
    validate(args, world_size)
    seed = env_int(env, "SEED", "an integer seed, or unset it to draw a random one")
    val_shards = plan_shards(args, "val", args.val_tokens + 1)
    train_shards = plan_train_shards(args)
    root = Path(env.get("SPEEDRUN_CHECKPOINT_DIR") or "checkpoints") if args.checkpoint_every >= 0 else None
    resume = read_resume(env["SPEEDRUN_RESUME"], args) if env.get("SPEEDRUN_RESUME") else None
    return RunPlan(preset, args, overrides, seed, val_shards, train_shards, root, resume)


def preflight(world_size: int) -> int:
    """run.sh calls this before torchrun, so that a setup mistake reads as one message, not a launcher traceback."""
    try:
        plan_run(world_size)
    except SpeedrunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def run(code: str, d: Dist) -> None:
    plan = plan_run(d.world_size)
    args, resume = plan.args, plan.resume
    seed, run_id = shared_seed_and_run_id(plan.seed, d)
    data = describe_data(plan.val_shards + plan.train_shards, args, d)
    track, target = TRACKS[plan.preset]
    grad_accum = args.windows_per_step // d.world_size
    checkpoint_dir = None if plan.checkpoint_root is None else plan.checkpoint_root / run_id
    config = dict(
        dataclasses.asdict(args),
        preset=plan.preset,
        track=track,
        world_size=d.world_size,
        grad_accum_steps=grad_accum,
        global_batch_tokens=d.world_size * grad_accum * args.train_seq_len,
        seed=seed,
        run_id=run_id,
        val_tokens=args.val_tokens,
        target_val_loss=target,
        parallelism=args.parallelism,
        device=d.device.type,
        step_avg_excluded_steps=0,
        overrides=plan.overrides,
        data_path=args.data_path,
        checkpoint_dir=None if checkpoint_dir is None else str(checkpoint_dir),
        resumed_from=None if resume is None else dict(path=str(resume.path), step=resume.step, run_id=resume.run_id),
    )

    log_path = Path(os.environ.get("LOG_DIR") or "logs") / f"{run_id}.txt"
    log = RunLog(log_path if d.rank == 0 else None)
    try:
        log(code.removesuffix("\n"), console=False)  # the section before the separator is the file, byte for byte
        log(SEPARATOR, console=False)
        for line in environment_lines():
            log(line)
        log("config: " + json.dumps(config))
        log("data: " + json.dumps(data))
        log("parameters: " + json.dumps(parameter_counts(args)))
        log(SEPARATOR)

        save = None
        if checkpoint_dir is not None:
            make_checkpoint_dir(checkpoint_dir, d)
            meta = dict(
                format=CHECKPOINT_FORMAT,
                preset=plan.preset,
                hyperparameters=dataclasses.asdict(args),
                run_id=run_id,
                world_size=d.world_size,
                parallelism=args.parallelism,
            )

            def save(step: int, train_time_ms: float) -> None:
                started, folder = time.perf_counter(), checkpoint_dir / f"step_{step:06d}"
                save_checkpoint(folder, raw, opts, args, step, train_time_ms, meta, d)
                log(f"checkpoint: step {step} saved to {folder} in {time.perf_counter() - started:.1f}s")
                if args.checkpoint_keep and d.rank == 0:
                    for old, problem in prune_checkpoints(checkpoint_dir, args.checkpoint_keep):
                        if problem is None:
                            log(f"checkpoint: removed {old} (SPEEDRUN_CHECKPOINT_KEEP={args.checkpoint_keep})")
                        else:
                            log(f"checkpoint: could not remove {old} ({problem}); training goes on")

        raw = build_model(args, seed, d)
        model = compile_model(raw, args)
        opts = build_optimizers(raw, args, d)
        started = time.perf_counter()
        warm_up(model, raw, opts, args, seed, d)
        synchronize(d.device)
        log(
            f"warm-up: {args.warmup_steps} untimed steps (compilation included) took {time.perf_counter() - started:.1f}s"
        )
        start = (0, 0.0) if resume is None else load_checkpoint(resume, raw, opts, args, d)
        train_windows = TrainWindows(plan.train_shards, args.train_seq_len, args.windows_per_step, d.device)
        val_windows = TokenWindows(plan.val_shards, args.val_seq_len, d.device)
        try:
            train(model, opts, train_windows, val_windows, args, d, log, start, save)
        except NonFiniteLoss as e:
            log(f"error: {e}. The log up to here is kept in {log_path}.", console=False)
            raise NonFiniteLoss(f"{e}. The log up to here is kept in {log_path}.") from None
        log(peak_memory_line(d))
    finally:
        log.close()
    if d.rank == 0:
        print(f"log written to {log_path}", flush=True)


def main() -> int:
    with open(__file__, encoding="utf-8") as f:
        code = f.read()  # the exact code of this run, captured first; it heads the log
    try:
        d = setup_distributed()
    except SpeedrunError as e:  # every failing process says it: no rank 0 to speak for them yet
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    try:
        run(code, d)
    except SpeedrunError as e:
        if d.rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter teardown: after a complete gloo run, torch's C++ destructors at exit sometimes
    # abort ("terminate called without an active exception", SIGABRT, seen in ~10% of 2-process CPU runs).
    # The log is closed and the process group destroyed by now, so nothing is lost.
    os._exit(status)
