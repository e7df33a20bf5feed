"""The speedrun's record file: a GPT trained to 3.28 FineWeb val loss as fast as possible on 8x H100.

One self-contained file, read top to bottom: the recipe, then the harness (docs/recipe.md maps them; the log:
docs/log-format.md). The recipe (`short`) is the public modded-nanogpt record of 2025-01-16, written fresh; ideas are
credited where they appear. train_scale.py trains the same model from 1.5B to 175B parameters through the same Run."""

from __future__ import annotations

with open(__file__, encoding="utf-8") as _source:
    CODE = _source.read()  # the exact code of this run, read before anything else runs: it heads the log

import collections
import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import resource
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention.flex_attention import BlockMask, flex_attention


class SpeedrunError(ValueError):
    """A mistake in the setup (config, data, environment): reported as one paragraph, no traceback."""


# -----------------------------------------------------------------------------------------------
# Recipe: Hyperparameters and its presets. A record run has no other knob: a change to the recipe is a code diff, and
# the code is in the log. (The RunSettings of the harness below change no number a run computes.)


@dataclasses.dataclass(frozen=True)
class Hyperparameters:
    # data
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
    compile: bool = True  # torch.compile the model, Newton-Schulz and the FP8 casts


# fmt: off
PRESETS: dict[str, Hyperparameters] = {
    "short": Hyperparameters(),
    # GPT-2 medium class (track_2_medium), from the public modded-nanogpt medium records of 2025-02-08 (weight
    # decay, 28.1 min) and 2025-02-14 (27.7 min; its tuned Newton-Schulz coefficients are code and not carried over).
    "medium": dataclasses.replace(
        Hyperparameters(), val_seq_len=4 * 64 * 1024, num_layers=16, model_dim=1024, num_heads=8,
        attention_pattern="LSSSLSS-SSSLSSSL", fp8_w_scale=512.0, fp8_grad_scale=2.0**19, num_iterations=7050,
        lr_final_frac=0.0,  # the medium records decay the learning rate to 0, the short record to 0.1
        adam_lr_head=0.1 / 1024**0.5, adam_lr_embed=0.3, adam_lr_scalar=0.015, muon_lr=0.025, muon_weight_decay=0.01,
    ),
    # A tiny model on synthetic data (python data/synthetic.py) for 2 CPU cores: the same code paths but the FP8 head
    # (CPU float8 matmuls are ~10x slower than float32; tests check the op alone) and compilation (inductor's C++
    # build took 90 s, more than the whole run). Shorter validation, noted in config.
    "smoke": dataclasses.replace(
        Hyperparameters(), vocab_size=512, train_seq_len=256, val_seq_len=256, val_tokens=32 * 256, model_dim=64,
        num_heads=2, head_dim=32, window_final_tokens=256, fp8_head=False, num_iterations=200,
        muon_momentum_warmup_steps=40, val_loss_every=25, warmup_steps=1, compile=False,
    ),
}
# fmt: on
TRACKS = {"short": ("track_1_short", 3.28), "medium": ("track_2_medium", 2.92), "smoke": ("smoke", None)}


# -----------------------------------------------------------------------------------------------
# Custom op: the FP8 lm_head matmul (idea and scales: modded-nanogpt 2025-01-13 record, @YouJiacheng). Static
# scales keep it to one matmul per product. torch.compile sees the op as opaque but traces its autograd formula, so
# the gradient's scale-and-cast to e5m2 fuses into the loss backward. CUDA's _scaled_mm: see fp8_mm's check.


@functools.cache
def compiled_once(fn):
    """torch.compile(fn), made on first use: importing the compiler takes seconds that eager runs need not spend."""
    return torch.compile(fn)


def _inverse_scale(scale: float, ref: Tensor) -> Tensor:
    return torch.full((), 1.0 / scale, dtype=torch.float32, device=ref.device)  # a fill, not a host-to-device copy


def _to_fp8(x: Tensor, w: Tensor, x_scale: float, w_scale: float) -> tuple[Tensor, Tensor]:
    return x.mul(x_scale).to(torch.float8_e4m3fn), w.mul(w_scale).to(torch.float8_e4m3fn)


@torch.library.custom_op("speedrun::fp8_mm", mutates_args=())
def fp8_mm(
    x: Tensor, w: Tensor, x_scale: float, w_scale: float, grad_scale: float, compiled: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """x_TK @ w_NK.T in float8 e4m3 -> (out_TN in bf16, x_f8, w_f8 saved for backward). compiled: the scale-and-cast
    through torch.compile, as the record compiles the inside of its op (opaque to the model's graph)."""
    ok = x.ndim == w.ndim == 2 and x.size(1) == w.size(1) and x.is_contiguous() and w.is_contiguous()
    if not ok or any(n % 16 for n in (*x.shape, w.size(0))):  # CUDA's rule for _scaled_mm: CPU takes any layout
        raise ValueError(f"fp8_mm: x {tuple(x.shape)} @ w {tuple(w.shape)}.T: CUDA takes 2-D, contiguous, dims % 16")
    x_f8, w_f8 = (compiled_once(_to_fp8) if compiled else _to_fp8)(x, w, x_scale, w_scale)
    scales = _inverse_scale(x_scale, x), _inverse_scale(w_scale, x)  # w_f8.t(): column-major, as _scaled_mm wants
    return torch._scaled_mm(x_f8, w_f8.t(), *scales, out_dtype=torch.bfloat16, use_fast_accum=True), x_f8, w_f8


@fp8_mm.register_fake
def _(x, w, x_scale, w_scale, grad_scale, compiled=False):
    out = x.new_empty((x.size(0), w.size(0)), dtype=torch.bfloat16)
    return out, torch.empty_like(x, dtype=torch.float8_e4m3fn), torch.empty_like(w, dtype=torch.float8_e4m3fn)


@torch.library.custom_op("speedrun::fp8_mm_backward", mutates_args=())
def fp8_mm_backward(
    grad_f8: Tensor, x_f8: Tensor, w_f8: Tensor, x_scale: float, w_scale: float, grad_scale: float
) -> tuple[Tensor, Tensor]:
    grad_f8 = grad_f8.contiguous()
    inv_grad, inv_x, inv_w = (_inverse_scale(s, grad_f8) for s in (grad_scale, x_scale, w_scale))
    grad_x = torch._scaled_mm(grad_f8, w_f8.t().contiguous().t(), inv_grad, inv_w, out_dtype=torch.bfloat16)  # w_NK
    # grad_w^T = x^T @ grad as (K, N), returned transposed: for (N, K) = (50304, 768) the record measured it faster
    xT_KT, grad_TN = x_f8.t().contiguous(), grad_f8.t().contiguous().t()
    grad_wT = torch._scaled_mm(xT_KT, grad_TN, inv_x, inv_grad, out_dtype=torch.float32)
    return grad_x, grad_wT.t()


@fp8_mm_backward.register_fake
def _(grad_f8, x_f8, w_f8, x_scale, w_scale, grad_scale):
    n, k = w_f8.shape  # grad_w column-major, as the real one
    return x_f8.new_empty(x_f8.shape, dtype=torch.bfloat16), w_f8.new_empty_strided((n, k), (1, n), dtype=torch.float32)


def _fp8_mm_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*output[1:])  # x_f8, w_f8
    ctx.scales = inputs[2:5]  # x_scale, w_scale, grad_scale
    ctx.set_materialize_grads(False)


def _fp8_mm_autograd(ctx, grad_out: Tensor, *_) -> tuple[Tensor, Tensor, None, None, None, None]:
    x_scale, w_scale, grad_scale = ctx.scales
    grad_f8 = grad_out.mul(grad_scale).to(torch.float8_e5m2)  # e5m2: range over precision for gradients
    grad_x, grad_w = torch.ops.speedrun.fp8_mm_backward(grad_f8, *ctx.saved_tensors, x_scale, w_scale, grad_scale)
    return grad_x, grad_w, None, None, None, None


fp8_mm.register_autograd(_fp8_mm_autograd, setup_context=_fp8_mm_setup_context)


# -----------------------------------------------------------------------------------------------
# Optimizer: Muon (Keller Jordan et al., 2024) for hidden matrices; Adam for the rest (built in build_optimizers).

all_gather_flat = getattr(dist, "all_gather_single", dist.all_gather_into_tensor)  # renamed in 2.13; GPUs run 2.11+


def bf16_matmul(x: Tensor, y: Tensor) -> Tensor:
    """x @ y in bf16 (sums in fp32, rounded once). CPUs lacking bf16 units: the same as an fp32 matmul, ~27x faster."""
    return (x.float() @ y.float()).bfloat16() if x.device.type == "cpu" else x @ y


def zeropower_via_newtonschulz5(G: Tensor, steps: int = 5) -> Tensor:
    """U S V^T -> U S' V^T, S' roughly in [0.7, 1.2], in bf16: a quintic Newton-Schulz iteration whose coefficients
    (Keller Jordan) maximise the slope at zero, batched over leading dims (@scottjmaddox, @YouJiacheng)."""
    assert G.ndim >= 2
    a, b, c = 3.4445, -4.7750, 2.0315
    transposed = G.size(-2) > G.size(-1)  # iterate on the smaller Gram matrix
    X = G.bfloat16().mT if transposed else G.bfloat16()
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # Frobenius norm >= spectral norm: spectral norm <= 1
    for _ in range(steps):
        A = bf16_matmul(X, X.mT)
        B = b * A + bf16_matmul(c * A, A)
        X = a * X + bf16_matmul(B, X)
    return X.mT if transposed else X


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-Schulz: SGD with Nesterov momentum whose update is orthogonalised. As in
    the modded-nanogpt DistributedMuon record, matrices are grouped by size and dealt round-robin: in each round of
    world_size matrices rank r orthogonalises (and keeps the momentum of) the r-th, and the bf16 updates are
    all-gathered, one round applied while the next is in flight. compiled: Newton-Schulz through torch.compile, as
    in the record; it differs from eager by bf16 rounding, a few percent, both as close to the exact iteration."""

    def __init__(self, params, lr, momentum, ns_steps, rank, world_size, weight_decay=0.0, compiled=False):
        self.rank, self.world_size = rank, world_size
        self.orthogonalise = compiled_once(zeropower_via_newtonschulz5) if compiled else zeropower_via_newtonschulz5
        groups: dict[object, list[Tensor]] = {}
        for p in params:  # deterministic order: every rank builds the same groups
            groups.setdefault(self.group_of(p), []).append(p)
        defaults = dict(lr=lr, momentum=momentum, ns_steps=ns_steps, weight_decay=weight_decay)
        super().__init__([dict(params=ps) for ps in groups.values()], defaults)

    @staticmethod
    def group_of(p: Tensor) -> object:  # a round all-gathers flat updates: one size per group (train_scale.py: shape)
        return p.numel()

    def nesterov(self, p: Tensor, momentum: float) -> Tensor:  # updates p's momentum; the Nesterov gradient in p.grad
        if "momentum_buffer" not in self.state[p]:
            self.state[p]["momentum_buffer"] = torch.zeros_like(p.grad)
        buf = self.state[p]["momentum_buffer"]
        buf.lerp_(p.grad, 1 - momentum)
        return p.grad.lerp_(buf, momentum)

    @staticmethod
    def apply_update(w: Tensor, update: Tensor, shape: torch.Size, group: dict) -> None:
        """w -= lr * scale * update, after decoupled weight decay; shape is the whole matrix's (w may be a slice)."""
        alpha = -group["lr"] * max(1.0, shape[-2] / shape[-1]) ** 0.5  # RMS-matched updates for tall matrices
        if group["weight_decay"]:
            w.mul_(1 - group["lr"] * group["weight_decay"])
        w.add_(update.reshape(w.shape), alpha=alpha)

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params, pending = group["params"], None
            for base in range(0, len(params), self.world_size):
                if base + self.rank < len(params):
                    p = params[base + self.rank]
                    update = self.orthogonalise(self.nesterov(p, group["momentum"]), group["ns_steps"]).flatten()
                else:  # no matrix left for this rank in the last round: send zeros
                    update = params[0].new_zeros(params[0].numel(), dtype=torch.bfloat16)
                if self.world_size == 1:
                    self.apply_update(params[base], update, params[base].shape, group)
                    continue
                gathered = update.new_empty(self.world_size, update.numel())
                work = all_gather_flat(gathered.view(-1), update, async_op=True)
                self.apply_round(pending)
                pending = (params[base : base + self.world_size], gathered, group, work)
            self.apply_round(pending)

    def apply_round(self, pending: tuple | None) -> None:
        if pending is not None:
            params, updates, group, work = pending
            work.wait()
            for p, u in zip(params, updates, strict=False):
                self.apply_update(p, u, p.shape, group)


# -----------------------------------------------------------------------------------------------
# Model: GPT with rotary, QK-norm, ReLU^2, value embeddings, U-net skips and sliding-window FlexAttention. GPT owns its
# init (one rule, which train_scale.py draws slice by slice) and its forward, which decodes with a KVCache too.


def norm(x: Tensor) -> Tensor:
    return F.rms_norm(x, (x.size(-1),))  # RMSNorm without a learned weight


class CastedLinear(nn.Linear):
    def __init__(self, in_features: int, out_features: int, zero_init: bool = False):
        self.zero_init = zero_init  # output projections and the head start at zero (@Grad62304977, muP-style)
        super().__init__(in_features, out_features, bias=False)

    def reset_parameters(self) -> None:  # no init of its own: GPT draws every weight by GPT.init_rule
        pass

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight.type_as(x))


class Embedding(nn.Embedding):
    reset_parameters = CastedLinear.reset_parameters  # no init of its own either


class Rotary(nn.Module):
    """Rotary on half the dims: head_dim/4 frequencies (1/1024)^linspace(0,1), the rest not rotated (@YouJiacheng)."""

    def __init__(self, head_dim: int, max_seq_len: int, min_freq: float):
        super().__init__()
        freqs = min_freq ** torch.linspace(0, 1, steps=head_dim // 4, dtype=torch.float32)
        freqs = torch.cat([freqs, freqs.new_zeros(head_dim // 4)])  # (head_dim/2,)
        theta_TF = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freqs)
        self.cos, self.sin = nn.Buffer(theta_TF.cos(), persistent=False), nn.Buffer(theta_TF.sin(), persistent=False)

    def forward(self, x_BTHD: Tensor, start: int = 0) -> Tensor:  # start: the first token's position
        T = x_BTHD.size(-3)
        cos, sin = self.cos[None, start : start + T, None, :], self.sin[None, start : start + T, None, :]
        x1, x2 = x_BTHD.float().chunk(2, dim=-1)  # dim i pairs with dim i + head_dim/2
        return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1).type_as(x_BTHD)


def document_causal_window(docs_T: Tensor, window_blocks: Tensor, block_size: int):
    """The attention rule as a mask_mod: token q sees token k iff k <= q, both lie in one document (docs_T: each
    token's document id, (T,) or (B, T) for B windows), and q // block_size - k // block_size < window_blocks."""
    docs_BT = docs_T.view(-1, docs_T.size(-1))

    def mask_mod(b, h, q_idx, kv_idx):
        same_doc = docs_BT[b, q_idx] == docs_BT[b, kv_idx]
        return (q_idx >= kv_idx) & same_doc & (q_idx // block_size - kv_idx // block_size < window_blocks)

    return mask_mod


def document_window_block_mask(docs_T: Tensor, window_blocks: Tensor, block_size: int) -> BlockMask:
    """document_causal_window as a BlockMask whose block structure comes from block-level bounds (@YouJiacheng): a kv
    block is "full" (no mask evaluated) when every pair is visible, "partial" when some are, skipped otherwise."""
    docs_BNK = docs_T.view(-1, docs_T.size(-1) // block_size, block_size)  # (windows, blocks, block_size)
    n, first, last = docs_BNK.size(1), docs_BNK[..., 0], docs_BNK[..., -1]  # first, last: each block's end doc ids
    q, k = torch.arange(n, device=docs_T.device)[:, None], torch.arange(n, device=docs_T.device)[None, :]
    in_window = (k <= q) & (q - k < window_blocks)
    # documents are contiguous, so for k <= q block k reaches q's documents iff its last id >= q's first id,
    # and every pair is visible iff both blocks lie inside one document and k is strictly before q
    any_visible = in_window & (last[:, None, :] >= first[:, :, None])
    all_visible = in_window & (k < q) & (first[:, None, :] == last[:, :, None])

    def sparse(mask_BQK: Tensor) -> tuple[Tensor, Tensor]:  # a block mask as (number of blocks, their indices)
        indices = mask_BQK.to(torch.int8).argsort(dim=-1, descending=True, stable=True).to(torch.int32)
        return mask_BQK.sum(dim=-1, dtype=torch.int32)[:, None].contiguous(), indices[:, None].contiguous()

    mask_mod = document_causal_window(docs_T, window_blocks, block_size)
    return BlockMask.from_kv_blocks(*sparse(any_visible & ~all_visible), *sparse(all_visible), block_size, mask_mod)


def attention(q_BHTD: Tensor, k_BHTD: Tensor, v_BHTD: Tensor, mask: BlockMask | Tensor, scale: float) -> Tensor:
    if isinstance(mask, BlockMask):
        return flex_attention(q_BHTD, k_BHTD, v_BHTD, block_mask=mask, scale=scale)
    return F.scaled_dot_product_attention(q_BHTD, k_BHTD, v_BHTD, attn_mask=mask, scale=scale)


class CausalSelfAttention(nn.Module):
    def __init__(self, args: Hyperparameters, max_seq_len: int):
        super().__init__()
        self.num_heads, self.head_dim, self.attn_scale = args.num_heads, args.head_dim, args.attn_scale
        hdim, dim = args.num_heads * args.head_dim, args.model_dim
        self.qkv_w = nn.Parameter(torch.empty(3, hdim, dim))  # merged q, k, v weights
        self.lambdas = nn.Parameter(torch.empty(2))  # v = l0 * v + l1 * value embedding (@KoszarskyB, @Grad62304977)
        self.rotary = Rotary(args.head_dim, max_seq_len, args.rope_min_freq)
        self.c_proj = CastedLinear(hdim, dim, zero_init=True)

    def forward(self, x_BTD: Tensor, ve_TD: Tensor | None, mask: BlockMask | Tensor, cache: KVCache | None) -> Tensor:
        B, T, _ = x_BTD.shape
        qkv = F.linear(x_BTD, self.qkv_w.flatten(end_dim=1).type_as(x_BTD))
        q, k, v = qkv.view(B, T, 3 * self.num_heads, self.head_dim).chunk(3, dim=-2)  # each (B, T, H, Dh)
        q, k = norm(q), norm(k)  # QK-norm
        start = 0 if cache is None else cache.length  # decoding: these tokens follow the cached ones
        q, k = self.rotary(q, start), self.rotary(k, start)
        v = self.lambdas[0] * v + self.lambdas[1] * ve_TD.view_as(v) if ve_TD is not None else self.lambdas[0] * v
        if cache is not None:  # the queries see the cached keys and values too
            k, v = cache.update(self, k, v)
        y_BHTD = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), mask, self.attn_scale)
        return self.c_proj(y_BHTD.transpose(1, 2).contiguous().view(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.c_fc, self.c_proj = CastedLinear(dim, hidden), CastedLinear(hidden, dim, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2 (So et al. 2021, @Grad62304977)


class Block(nn.Module):
    def __init__(self, args: Hyperparameters, layer: int, max_seq_len: int):
        super().__init__()
        self.attn = CausalSelfAttention(args, max_seq_len) if args.attention_pattern[layer] != "-" else None
        self.mlp = MLP(args.model_dim, args.mlp_ratio * args.model_dim)
        self.lambdas = nn.Parameter(torch.empty(2))  # x = l0 * x + l1 * x0

    def forward(self, x: Tensor, ve: Tensor | None, x0: Tensor, mask: BlockMask | Tensor | None, cache=None) -> Tensor:
        x = self.lambdas[0] * x + self.lambdas[1] * x0
        if self.attn is not None:
            x = x + self.attn(norm(x), ve, mask, cache)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, args: Hyperparameters):
        super().__init__()
        self.args = args
        vocab, dim, layers = -(-args.vocab_size // 128) * 128, args.model_dim, args.num_layers  # padded vocabulary
        self.embed = Embedding(vocab, dim)
        # value embeddings: tables 0..n-1 on the first n layers and again on the last n (@YouJiacheng's 012...012)
        self.value_embeds = nn.ModuleList(Embedding(vocab, dim) for _ in range(args.num_value_embeds))
        self.blocks = nn.ModuleList(Block(args, i, max(args.train_seq_len, args.val_seq_len)) for i in range(layers))
        self.lm_head = CastedLinear(dim, vocab, zero_init=True)
        # U-net skips (@brendanh0gan): outputs of the first half are added, weighted, to inputs of the second
        self.skip_weights = nn.Parameter(torch.empty(layers // 2))
        rule = self.init_rule()
        with torch.no_grad():  # drawn from torch's generator in the parameters' order
            for name, p in self.named_parameters():
                how, arg = rule[name]
                if how == "normal":
                    p.normal_(0.0, arg)
                elif how == "uniform":
                    p.uniform_(-arg, arg)
                else:
                    p.copy_(torch.tensor(arg, dtype=p.dtype, device=p.device))

    def init_rule(self) -> dict[str, tuple[str, float | tuple[float, ...]]]:
        """How each parameter starts, the one rule (__init__ draws it, train_scale.py slice by slice): ("normal", std),
        ("uniform", bound) or ("values", one for all elements or one for each)."""
        rule: dict[str, tuple[str, float | tuple[float, ...]]] = {}
        uniform = lambda fan_in: ("uniform", 3**0.5 * 0.5 * fan_in**-0.5)  # noqa: E731 (std 0.5 fan_in^-0.5)
        for name, m in self.named_modules():
            at = f"{name}." if name else ""
            if isinstance(m, nn.Embedding):
                rule[at + "weight"] = ("normal", 1.0)
            elif isinstance(m, CastedLinear):
                rule[at + "weight"] = ("values", 0.0) if m.zero_init else uniform(m.in_features)
            elif isinstance(m, CausalSelfAttention):
                rule[at + "qkv_w"] = uniform(m.qkv_w.size(-1))
                rule[at + "lambdas"] = ("values", (0.5, 0.5))  # the value and its embedding, alike
            elif isinstance(m, Block):
                rule[at + "lambdas"] = ("values", (1.0, 0.0))  # no x0 at first
        rule["skip_weights"] = ("values", (1.0,) * len(self.skip_weights))
        return rule

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        hidden, embed = [p for p in self.blocks.parameters() if p.ndim >= 2], [self.embed.weight]
        embed += [e.weight for e in self.value_embeds]
        scalar = [p for p in self.parameters() if p.ndim < 2]
        groups = dict(hidden=hidden, embed=embed, head=[self.lm_head.weight], scalar=scalar)
        assert sum(len(g) for g in groups.values()) == len(list(self.parameters()))
        return groups

    def forward(self, input_T: Tensor, target_T: Tensor, window_blocks: Tensor) -> Tensor:
        """Mean cross-entropy of one window: input_T int32 tokens, target_T int64 next tokens (loss in fp32); of B
        windows (B, T) run as one batch (train_scale.py's micro-steps), each window's mean (B,)."""
        logits = self.logits(input_T, window_blocks)
        if input_T.ndim == 1:
            return F.cross_entropy(logits, target_T)
        return F.cross_entropy(logits, target_T.flatten(), reduction="none").view_as(target_T).mean(-1)

    def logits(self, input_T: Tensor, window_blocks: Tensor, cache: KVCache | None = None) -> Tensor:
        """Soft-capped fp32 logits (T, padded vocab) of a window, T a multiple of block_size, or (B x T, padded vocab)
        of B windows (B, T); with a cache (decoding), of tokens (B, T), T any, that follow the ones it holds."""
        args, input_BT = self.args, input_T.view(-1, input_T.size(-1))  # one window is a batch of one
        layers, n_ve = len(self.blocks), len(self.value_embeds)
        ve = [table(input_BT) for table in self.value_embeds]  # tables 0..n-1, then None, then 0..n-1 again
        ve_per_layer = ve + [None] * (layers - 2 * n_ve) + ve
        docs_BT = (input_BT == args.vocab_size - 1).cumsum(-1)  # the separator opens each document
        (B, T), start = input_BT.shape, 0 if cache is None else cache.length  # the first query's position
        if cache is not None:  # decoding: the ids go on from the cached tokens', whose keys are seen too
            cache.docs_BT[:, start : start + T] = docs_BT + (cache.docs_BT[:, start - 1 : start] if start else 0)
            docs_BT = cache.docs_BT
        masks = {"-": None}
        for kind, blocks in (("L", window_blocks), ("S", torch.clamp_min(window_blocks // 2, 1))):
            if input_T.device.type == "cpu" or cache is not None:  # dense masks (B, 1, queries, keys) for SDPA:
                # FlexAttention has no backward on CPU (torch 2.13), nor a block grid for decoding
                pos, b = torch.arange(start + T, device=input_T.device), torch.arange(B, device=input_T.device)
                visible = document_causal_window(docs_BT, blocks, args.block_size)
                masks[kind] = visible(b[:, None, None, None], 0, pos[start:, None], pos[None, :])
            else:
                masks[kind] = document_window_block_mask(docs_BT, blocks, args.block_size)
        x = x0 = norm(self.embed(input_BT))  # (B, T, D); norm of the embedding by @Grad62304977
        skips, n_skip = [], len(self.skip_weights)
        for i, block in enumerate(self.blocks):
            if i >= layers - n_skip:
                x = x + self.skip_weights[i - (layers - n_skip)] * skips.pop()
            x = block(x, ve_per_layer[i], x0, masks[args.attention_pattern[i]], cache)
            if i < n_skip:
                skips.append(x)
        if cache is not None:
            cache.length += T
        x_TD = norm(x).view(-1, x.size(-1))
        if self.training and args.fp8_head:
            scales = args.fp8_x_scale, args.fp8_w_scale, args.fp8_grad_scale
            logits = fp8_mm(x_TD, self.lm_head.weight, *scales, args.compile)[0]
        else:  # evaluation uses the bf16 head
            logits = self.lm_head(x_TD)
        # soft cap (Gemma 2; @Grad62304977, @KoszarskyB, @YouJiacheng): cap/2 (tanh(z/2temp) + 1) = cap sigmoid(z/temp)
        return args.logit_cap * torch.sigmoid(logits.float() / args.logit_temperature)


class KVCache:
    """What GPT.logits keeps to decode `batch` sequences of up to max_len tokens: keys, values and document ids."""

    def __init__(self, model: GPT, batch: int, max_len: int):
        args, device = model.args, model.lm_head.weight.device
        self.length, self.kv, self.docs_BT = 0, {}, torch.zeros(batch, max_len, dtype=torch.long, device=device)
        longer = Rotary(args.head_dim, max_len, args.rope_min_freq).to(device)  # rotary is relative and attention
        for m in model.modules():  # windowed: positions past the trained length only need longer tables
            if isinstance(m, Rotary) and m.cos.size(0) < max_len:
                m.cos, m.sin = longer.cos, longer.sin

    def update(self, layer: nn.Module, k_BTHD: Tensor, v_BTHD: Tensor) -> tuple[Tensor, Tensor]:
        if layer not in self.kv:
            shape = (k_BTHD.size(0), self.docs_BT.size(1), *k_BTHD.shape[2:])
            self.kv[layer] = k_BTHD.new_empty(shape), v_BTHD.new_empty(shape)
        (keys, values), end = self.kv[layer], self.length + k_BTHD.size(1)
        keys[:, self.length : end], values[:, self.length : end] = k_BTHD, v_BTHD
        return keys[:, :end], values[:, :end]


# -----------------------------------------------------------------------------------------------
# Data: FineWeb-format .bin shards (llm.c): 256 int32 header (magic, version, token count), then uint16 tokens.

SHARD_MAGIC, SHARD_VERSION, SHARD_HEADER_BYTES = 20240520, 1, 256 * 4
Shard = collections.namedtuple("Shard", ["path", "split", "tokens"])  # split: "train" or "val"


class ShardError(SpeedrunError):
    """A file that is not a valid token shard (or holds the wrong tokens); the message names it and the fix."""


def data_fix(args: Hyperparameters, data_path: str) -> str:
    if args.vocab_size == 50257:  # FineWeb's train shards hold 100M tokens: 8 for short (9 by custom), 38 for medium
        per_shard = max(steps_in_shard(100_000_000, args.windows_per_step * args.train_seq_len), 1)
        shards = max(9, -(-args.num_iterations // per_shard))
        return f"run `python data/cached_fineweb10B.py {shards}` to download FineWeb shards into data/fineweb10B"
    return f"run `python data/synthetic.py --out {data_path} --vocab-size {args.vocab_size}` to write synthetic shards"


def read_shard_header(path: str | os.PathLike, fix: str) -> int:
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
        said = f"{path}: header says {ntok} tokens, the file has {size} bytes"
        raise ShardError(f"{said}: cut short? Delete it and {fix}.")
    return ntok


def steps_in_shard(tokens: int, batch_tokens: int) -> int:
    """Steps one train shard feeds (TrainWindows): batches of batch_tokens + 1 tokens, each batch_tokens after the
    last, while more than batch_tokens + 1 tokens are left (the record moves on when pos + batch + 1 >= tokens)."""
    return max(0, (tokens - 2) // batch_tokens)


def plan_shards(args: Hyperparameters, data_path: str, split: str, tokens_needed: int = 0) -> list[Shard]:
    """The first shards of a split, in name order, that hold what the run reads: tokens_needed tokens as one stream
    (TokenWindows), or else num_iterations steps in the record's order (TrainWindows; 8 FineWeb shards for short)."""
    folder, fix, batch = Path(data_path), data_fix(args, data_path), args.windows_per_step * args.train_seq_len
    if not folder.is_dir():
        raise SpeedrunError(f"data folder {folder} does not exist (DATA_PATH={data_path}); {fix}.")
    shards, need, have = [], tokens_needed or args.num_iterations, 0  # have: tokens as one stream, or train steps
    for path in sorted(folder.glob(f"*_{split}_*.bin")):
        if have >= need:
            break
        shards.append(Shard(path, split, read_shard_header(path, fix)))
        have += shards[-1].tokens if tokens_needed else steps_in_shard(shards[-1].tokens, batch)
    if not shards:
        raise SpeedrunError(f"data folder {folder} holds no {split} shards (*_{split}_*.bin); {fix}.")
    if have < need:  # train steps each read batch + 1 tokens from one shard and skip the tails that cannot
        what = f"{have:,} {'tokens' if tokens_needed else f'steps of {batch + 1:,} tokens (shard tails skipped)'}"
        held = f"({len(shards)}, {sum(s.tokens for s in shards):,} tokens)"
        raise SpeedrunError(f"the {split} shards in {data_path} {held} hold {what} but this run needs {need:,}; {fix}.")
    return shards


def describe_data(shards: list[Shard], args: Hyperparameters, data_path: str) -> dict:
    """The log's data line: every shard's sha256, checking on the way that every token is below vocab_size."""
    fix, described = data_fix(args, data_path), []
    for shard in shards:
        h, top = hashlib.sha256(), 0
        try:
            with open(shard.path, "rb") as f:
                h.update(f.read(SHARD_HEADER_BYTES))
                while chunk := f.read(1 << 24):
                    h.update(chunk)
                    top = max(top, int(np.frombuffer(chunk, dtype="<u2").max()))
        except OSError as e:
            raise ShardError(f"cannot read shard {shard.path}: {e.strerror or e}; {fix}.") from e
        if top >= args.vocab_size:
            wrong = f"{shard.path} holds token {top}, but this preset's vocabulary has {args.vocab_size} tokens"
            raise ShardError(f"{wrong}: the data was made for another vocabulary. Point DATA_PATH elsewhere or {fix}.")
        described.append(dict(name=shard.path.name, split=shard.split, tokens=shard.tokens, sha256=h.hexdigest()))
    return dict(path=data_path, vocab_size=args.vocab_size, shards=described)


class TokenWindows:
    """Window j: tokens [j * seq_len, (j + 1) * seq_len] (+1 for the last target) of the shards read as one stream.
    Validation reads these: its 10,485,760 tokens lie in the first val shard, where this is the record's order too."""

    def __init__(self, shards: list[Shard], seq_len: int, tokens: int, device: torch.device):
        self.seq_len, self.device, parts = seq_len, device, []
        for s in shards:  # a copy of just these tokens (21 MB for the record's validation) from the memory maps
            mapped = np.memmap(s.path, "<u2", "r", SHARD_HEADER_BYTES, (s.tokens,))
            parts.append(np.array(mapped[: tokens - sum(len(p) for p in parts)]))
        self.tokens = np.concatenate(parts)

    def __getitem__(self, j: int) -> tuple[Tensor, Tensor]:
        window = self.tokens[j * self.seq_len : (j + 1) * self.seq_len + 1]
        return inputs_and_targets(torch.from_numpy(window), self.device)


class TrainWindows:
    """The training windows in the 2025-01-16 record's order: each step's batch (windows_per_step windows, +1 token)
    lies in ONE shard, at its tokens 0, B, 2B, ... (steps_in_shard). windows[step, j] is the same on any world size."""

    def __init__(self, shards: list[Shard], seq_len: int, windows_per_step: int, device: torch.device):
        self.shards = shards  # memory-mapped: a run reads only the slices it asks for
        self.maps = [np.memmap(s.path, "<u2", "r", SHARD_HEADER_BYTES, (s.tokens,)) for s in shards]
        self.seq_len, self.batch_tokens, self.device = seq_len, seq_len * windows_per_step, device
        self.first_step = np.cumsum([0] + [steps_in_shard(s.tokens, self.batch_tokens) for s in shards])

    def locate(self, step: int, j: int) -> tuple[int, int]:  # (shard index, offset of the window's first token)
        if not 0 <= step < self.first_step[-1]:
            raise IndexError(f"step {step}: these train shards feed steps 0..{self.first_step[-1] - 1}")
        i = int(np.searchsorted(self.first_step, step, side="right")) - 1  # shards that feed no step are passed over
        return i, int(step - self.first_step[i]) * self.batch_tokens + j * self.seq_len

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        i, offset = self.locate(*key)
        tokens = np.array(self.maps[i][offset : offset + self.seq_len + 1])  # a copy: the map is read-only
        return inputs_and_targets(torch.from_numpy(tokens), self.device)


def inputs_and_targets(tokens: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    buf = tokens.to(torch.int32)  # pinned memory (CUDA) lets the copy run asynchronously
    buf = (buf.pin_memory() if device.type == "cuda" else buf).to(device, non_blocking=True)
    return buf[:-1], buf[1:].long()


# -----------------------------------------------------------------------------------------------
# The loop: build, warm-up, schedules, one training step, validation and the timed loop. The clock runs only while
# training: it stops for validation, and device work is synchronised before every exact reading.


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # waits for queued work, so that a clock read measures it (CPU ops are synchronous)
        torch.cuda.synchronize(device)


def build_model(args: Hyperparameters, seed: int, d: Dist) -> GPT:
    torch.manual_seed(seed)
    with torch.device(d.device):
        model = GPT(args)
    # bf16 embedding tables on CUDA, as in the record (bf16 activations); CPUs are fast in fp32 (most lack bf16 units)
    for m in model.modules() if d.cuda else ():
        if isinstance(m, nn.Embedding):
            m.bfloat16()
    if d.world_size > 1:  # ranks start identical even if some init kernel were nondeterministic
        for t in model.state_dict().values():
            dist.broadcast(t, src=0)
    return model


def build_optimizers(model: GPT, args: Hyperparameters, d: Dist, muon: type[Muon], grads) -> tuple:
    """(Adam for embeddings, head and scalars, `muon` for the hidden matrices, the gradient accumulator grads(roles),
    roles: the gradients each optimizer reads), as train_step takes them (train_scale.py: sharded kinds)."""
    groups, betas = model.param_groups(), (args.adam_beta1, args.adam_beta2)
    lrs = dict(head=args.adam_lr_head, embed=args.adam_lr_embed, scalar=args.adam_lr_scalar)
    adam_groups = [dict(params=groups[k], lr=lr) for k, lr in lrs.items()]
    adam = torch.optim.Adam(adam_groups, betas=betas, eps=args.adam_eps, fused=d.cuda)
    kw = dict(weight_decay=args.muon_weight_decay, compiled=args.compile)
    hidden = muon(groups["hidden"], args.muon_lr, args.muon_momentum, args.ns_steps, d.rank, d.world_size, **kw)
    for group in adam.param_groups + hidden.param_groups:
        group["initial_lr"] = group["lr"]
    roles = dict(muon=groups["hidden"], adam=groups["head"] + groups["embed"] + groups["scalar"])
    return adam, hidden, grads(roles)


class GradBuckets:
    """Every gradient is a view into one flat buffer per (role, dtype): one all-reduce syncs a bucket (as DDP's
    gradient_as_bucket_view). A process adds its windows in order, (((w0 + w1) + w2) + w3) on rank 0 of 2, and the
    all-reduce adds two sums, which commutes exactly; one process sums windows 0-3 and 4-7 apart, then adds the two:
    1 and 2 processes are bitwise the same run (beyond 2 a collective adds in an order of its own)."""

    def __init__(self, roles: dict[str, list[nn.Parameter]]):
        self.buckets: dict[str, list[Tensor]] = {}
        for role, params in roles.items():
            for dtype in dict.fromkeys(p.dtype for p in params):
                same = [p for p in params if p.dtype == dtype]
                buf = torch.zeros(sum(p.numel() for p in same), dtype=dtype, device=same[0].device)
                for p, view in zip(same, buf.split([p.numel() for p in same]), strict=True):
                    p.grad = view.view_as(p)
                self.buckets.setdefault(role, []).append(buf)
        self.flat = [buf for bufs in self.buckets.values() for buf in bufs]
        self.works: dict[str, list] = {}

    def zero(self) -> None:
        for buf in self.flat:
            buf.zero_()

    def accumulate(self, forward_backward, windows: range, d: Dist) -> dict[int, Tensor]:
        """This rank's windows' gradients summed into the buckets (see above), then their all-reduce started."""
        half = len(windows) // 2 if d.world_size == 1 else 0
        losses, first_half = {}, None
        for k, j in enumerate(windows):
            if k == half and half:
                first_half = [buf.clone() for buf in self.flat]
            if k in (0, half):
                self.zero()
            losses[j] = forward_backward(j)
        for buf, other in zip(self.flat, first_half or [], strict=False):
            buf.add_(other)
        if d.world_size > 1:
            self.works = {r: [dist.all_reduce(b, async_op=True) for b in bufs] for r, bufs in self.buckets.items()}
        return losses

    def finish_mean(self, role: str, scale: float) -> None:
        """Wait for a role's sums (on CUDA the stream waits, not the host), then turn them into means."""
        for buf, work in zip(self.buckets[role], self.works.pop(role, [None] * len(self.buckets[role])), strict=True):
            if work is not None:
                work.wait()
            buf.mul_(scale)


def warm_up(model: nn.Module, weights: list[Tensor], opts, args: Hyperparameters, seed: int, d: Dist, log) -> None:
    """Compile and run the exact training step on dummy data, then put back the weights (the state_dict's tensors, or
    FSDP2's local slices), kept on the host meanwhile, and the optimizers (no state yet, only their settings)."""
    started = time.perf_counter()
    saved = [w.to("cpu", copy=True) for w in weights], copy.deepcopy([opts[0].state_dict(), opts[1].state_dict()])
    gen = torch.Generator().manual_seed(seed)
    dummy = inputs_and_targets(torch.randint(0, args.vocab_size, (args.train_seq_len + 1,), generator=gen), d.device)
    for step in range(args.warmup_steps):
        train_step(step, model, opts, None, args, d, dummy=dummy)
    with torch.no_grad():
        for w, s in zip(weights, saved[0], strict=True):
            w.copy_(s)
    opts[0].load_state_dict(saved[1][0])
    opts[1].load_state_dict(saved[1][1])
    opts[2].zero()
    synchronize(d.device)
    log(f"warm-up: {args.warmup_steps} untimed steps (compilation included) took {time.perf_counter() - started:.1f}s")


def lr_factor(step: int, args: Hyperparameters) -> float:
    """The lr multiplier: 1, then linear over the last cooldown_frac of steps to lr_final_frac, in the record's math."""
    w = min((1 - step / args.num_iterations) / args.cooldown_frac, 1.0)
    return w + args.lr_final_frac * (1 - w)


def window_blocks(step: int, args: Hyperparameters) -> int:
    """Long attention window in blocks, growing linearly to window_final_tokens and rounded up (@fernbear.bsky.social,
    block-wise @YouJiacheng); aimed half a block short, as in the record, to reach the final size at the end."""
    x = step / args.num_iterations
    return max(1, math.ceil(x * (args.window_final_tokens - args.block_size / 2) / args.block_size))


def window_tensor(step: int, args: Hyperparameters, d: Dist) -> Tensor:  # a tensor: a new size recompiles nothing
    return torch.tensor(window_blocks(step, args), dtype=torch.int32, pin_memory=d.cuda).to(d.device, non_blocking=True)


def windows_of_rank(args: Hyperparameters, d: Dist) -> range:
    """The windows of each step this process trains on, a contiguous run: window r of 8 on 8 processes, all on one."""
    accum = args.windows_per_step // d.world_size
    return range(d.rank * accum, (d.rank + 1) * accum)


def gather_window_losses(losses: Tensor, d: Dist) -> Tensor:
    """Every process's per-window losses in window order, so that their sum has one order on any world size."""
    if d.world_size == 1:
        return losses
    out = losses.new_empty(d.world_size * losses.numel())
    all_gather_flat(out, losses)
    return out


def train_step(step: int, model: nn.Module, opts, windows, args: Hyperparameters, d: Dist, dummy=None) -> Tensor:
    """One optimizer step on this process's windows (windows_of_rank); the mean loss as a device tensor (no sync)."""
    (adam, muon, grads), window = opts, window_tensor(step, args, d)

    def forward_backward(j: int | range) -> Tensor:  # window j, or (train_scale.py) the windows j as one batch
        batch = [windows[step, i] if dummy is None else dummy for i in (j if isinstance(j, range) else [j])]
        inputs, targets = batch[0] if isinstance(j, int) else (torch.stack(t) for t in zip(*batch, strict=True))
        loss = model(inputs, targets, window)  # of each window of the batch: (len(j),)
        # backward of the unscaled window means: the FP8 gradient scale sees the same values on any world size
        (loss.sum() if loss.ndim else loss).backward()
        return loss.detach()

    losses = grads.accumulate(forward_backward, windows_of_rank(args, d), d)
    factor = lr_factor(step, args)
    for group in adam.param_groups + muon.param_groups:
        group["lr"] = group["initial_lr"] * factor
    frac = min(step / args.muon_momentum_warmup_steps, 1) if args.muon_momentum_warmup_steps else 1
    for group in muon.param_groups:
        group["momentum"] = (1 - frac) * args.muon_momentum_start + frac * args.muon_momentum
    grads.finish_mean("muon", 1 / args.windows_per_step)
    muon.step()
    grads.finish_mean("adam", 1 / args.windows_per_step)
    adam.step()
    return gather_window_losses(torch.stack([losses[j] for j in sorted(losses)]), d).sum() / args.windows_per_step


@torch.no_grad()
def evaluate(model: nn.Module, windows: TokenWindows, args: Hyperparameters, d: Dist, step: int) -> float:
    """Mean loss over the validation windows, summed in window order; in eval mode (the bf16 head), then as it was."""
    was_training = model.training
    model.eval()
    window, n = window_tensor(step, args, d), args.val_tokens // args.val_seq_len
    mine = range(d.rank * n // d.world_size, (d.rank + 1) * n // d.world_size)  # n is a multiple of world_size
    losses = torch.stack([model(*windows[j], window) for j in mine])
    model.train(was_training)
    return gather_window_losses(losses, d).double().sum().item() / n


def train(model, opts, run: Run, start: tuple[int, float]) -> float:
    """Steps start[0]+1 .. num_iterations, the clock going on from start[1] ms (stopped for run.saves); returns it."""
    args, d, log, save = run.plan.args, run.d, run.log, run.saves
    total, (first, train_time_ms) = args.num_iterations, start
    train_windows = TrainWindows(run.plan.train_shards, args.train_seq_len, args.windows_per_step, d.device)
    val_windows = TokenWindows(run.plan.val_shards, args.val_seq_len, args.val_tokens + 1, d.device)
    pending = None  # (step, loss tensor, train_time_ms read without a sync) of the step whose loss is unread

    def record(kind: str, step: int, loss: float, ms: float) -> None:  # kind: "train" or "val"
        log(f"step:{step}/{total} {kind}_loss:{loss:.4f} train_time:{ms:.0f}ms step_avg:{ms / max(step, 1):.2f}ms")
        if not math.isfinite(loss):
            what = "training" if kind == "train" else "validation"
            stop = f"the {what} loss became {loss} at step {step}; stopping the run. The log up to here is kept in"
            log(f"error: {stop} {log.path}.", console=False)
            raise SpeedrunError(f"{stop} {log.path}.")

    def report(entry: tuple | None) -> None:
        # Reading a step's loss waits for that step; we read it only after the next step is queued, so the
        # device never idles waiting for the host (one step of delay in noticing a NaN, no per-step bubble).
        if entry is not None:
            record("train", entry[0], entry[1].item(), entry[2])

    synchronize(d.device)
    t0 = time.perf_counter()
    for step in range(first, total + 1):
        last = step == total
        validating = last or (args.val_loss_every > 0 and (step % args.val_loss_every == 0 or step == first))
        saving = save is not None and step > first and (last or (save[0] > 0 and step % save[0] == 0))
        if validating or saving:
            synchronize(d.device)
            train_time_ms += 1000 * (time.perf_counter() - t0) if step > first else 0.0
            report(pending)
            pending = None
            if validating:
                record("val", step, evaluate(model, val_windows, args, d, step), train_time_ms)
            if saving:
                save[1](step, train_time_ms)
            synchronize(d.device)
            t0 = time.perf_counter()
        if last:
            break
        loss = train_step(step, model, opts, train_windows, args, d)
        report(pending)
        pending = (step + 1, loss, train_time_ms + 1000 * (time.perf_counter() - t0))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # CPU (no caching allocator): peak RSS for both
    mib = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()) if d.cuda else (rss * 2**20,) * 2
    log(f"peak memory allocated: {mib[0] // 2**20} MiB reserved: {mib[1] // 2**20} MiB")
    return train_time_ms


# ===============================================================================================
# Harness: the processes, the configuration from the environment (checked before any work), the log and the host's
# identity, the export, and the run skeleton whose hooks train_scale.py fills in. None of it changes a number.


class Dist(collections.namedtuple("Dist", "rank world_size local_rank device")):
    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def setup_distributed() -> Dist:
    """This process among the run's: torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `python train_gpt.py` is one."""
    env, cuda = dict(os.environ), torch.cuda.is_available()
    rank, world_size, local_rank = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))
    if cuda and local_rank >= torch.cuda.device_count():
        n, fix = torch.cuda.device_count(), "start one process per GPU at most"
        raise SpeedrunError(f"local rank {local_rank} has no GPU: this node shows {n}; {fix}.")
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if "RANK" in env:  # NCCL between GPUs; gloo between CPU processes (the smoke run, the tests)
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
    return Dist(rank, world_size, local_rank, device)


@dataclasses.dataclass(frozen=True)
class RunSettings:  # what a run is told besides the recipe (environment variables)
    seed: int | None = None  # SEED; None: drawn at random (the config line has the seed used)
    data_path: str = "data/fineweb10B"  # DATA_PATH: the folder of *_train_*.bin and *_val_*.bin shards
    log_dir: str = "logs"  # LOG_DIR: the log goes to <log_dir>/<run_id>.txt
    export_dir: str | None = None  # SPEEDRUN_EXPORT: write the final weights to <export_dir>/<run_id>/


def env_int(env: dict[str, str], name: str, meaning: str) -> int | None:
    try:  # None when unset or empty
        return int(env[name], 10) if env.get(name, "").strip() else None
    except ValueError:
        raise SpeedrunError(f"{name}={env[name].strip()!r} is not a whole number: give {meaning}.") from None


def run_settings(env: dict[str, str], args: Hyperparameters) -> RunSettings:
    seed = env_int(env, "SEED", "an integer seed, or unset it to draw a random one")
    data = env.get("DATA_PATH") or ("data/fineweb10B" if args.vocab_size == 50257 else "data/synthetic")
    export = env.get("SPEEDRUN_EXPORT") or None
    if export is not None and Path(export).is_file():
        raise SpeedrunError(f"SPEEDRUN_EXPORT={export} is a file; give a folder for the final weights.")
    return RunSettings(seed, data, env.get("LOG_DIR") or "logs", export)


def resolve_config(env: dict[str, str], presets: dict[str, Hyperparameters]) -> tuple[str, Hyperparameters, dict]:
    """The preset named by SPEEDRUN_PRESET with SPEEDRUN_OVERRIDES applied; the overrides that changed it."""
    preset, overrides, example = env.get("SPEEDRUN_PRESET", "short"), {}, '{"num_iterations": 20}'
    if preset not in presets:
        raise SpeedrunError(f"SPEEDRUN_PRESET={preset!r} is not a preset; choose one of {', '.join(presets)}.")
    try:
        given = json.loads(env.get("SPEEDRUN_OVERRIDES") or "{}")
    except json.JSONDecodeError as e:
        raise SpeedrunError(f"SPEEDRUN_OVERRIDES is not valid JSON ({e}); give an object like '{example}'.") from e
    if not isinstance(given, dict):
        raise SpeedrunError(f"SPEEDRUN_OVERRIDES must be a JSON object of Hyperparameters fields, e.g. '{example}'.")
    args = presets[preset]
    types = {f.name: type(getattr(args, f.name)) for f in dataclasses.fields(args)}
    for key, value in given.items():
        if key not in types:
            run = "(run settings, such as the seed and the data folder, have variables: docs/log-format.md)"
            fields = f"fields: {', '.join(types)}"
            raise SpeedrunError(f"SPEEDRUN_OVERRIDES: {key!r} is not a Hyperparameters field {run}; {fields}.")
        want = types[key]
        value = float(value) if want is float and type(value) is int else value
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise SpeedrunError(f"SPEEDRUN_OVERRIDES: {key} must be a {want.__name__}, got {value!r}.")
        if value != getattr(args, key):  # only what changes the preset: an override disqualifies a record run
            overrides[key] = value
    return preset, dataclasses.replace(args, **overrides), overrides


def validate(args: Hyperparameters, world_size: int) -> None:
    sizes = ("vocab_size", "train_seq_len", "windows_per_step", "val_seq_len", "val_tokens", "num_layers")
    sizes += ("model_dim", "num_heads", "head_dim", "mlp_ratio", "block_size", "window_final_tokens")
    problems = [f"{name}={getattr(args, name)} must be positive" for name in sizes if getattr(args, name) < 1]
    if world_size < 1:
        problems.append(f"world_size={world_size}: a run needs at least one process")
    if problems:  # the checks below divide by these
        raise SpeedrunError("invalid configuration: " + "; ".join(problems) + ".")
    W, n, pattern, bs = args.windows_per_step, args.num_layers, args.attention_pattern, args.block_size
    if W % world_size:
        problems.append(f"{world_size} processes cannot share {W} windows per step: use a world size that divides {W}")
    for k in ("train_seq_len", "val_seq_len", "window_final_tokens"):
        if getattr(args, k) % bs:
            problems.append(f"{k}={getattr(args, k)} is not a multiple of block_size={bs}")
    if args.val_tokens % (W * args.val_seq_len):
        problems.append(f"val_tokens={args.val_tokens} must be a multiple of windows_per_step x val_seq_len")
    if len(pattern) != n or set(pattern) - set("LS-"):
        problems.append(f"attention_pattern={pattern!r} needs one of L, S, - per layer")
    if n % 2 or n < 2 * args.num_value_embeds:
        problems.append("num_layers must be even (U-net) and at least 2 x num_value_embeds")
    if args.head_dim % 4 or args.num_heads * args.head_dim != args.model_dim:
        problems.append("head_dim must be a multiple of 4 (rotary) and num_heads x head_dim equal model_dim")
    if args.fp8_head and args.model_dim % 16:
        problems.append("model_dim must be a multiple of 16 for the FP8 head")
    if args.num_iterations < 1 or args.val_loss_every < 0 or args.warmup_steps < 0:
        problems.append("num_iterations must be >= 1, val_loss_every and warmup_steps >= 0")
    if problems:
        raise SpeedrunError("invalid configuration: " + "; ".join(problems) + ".")


class RunLog:
    def __init__(self, path: Path | None):  # rank 0's log, open for the whole run; path None on the other ranks
        self.path, self.file = path, None
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(path, "x", encoding="utf-8")
        except OSError as e:
            fix = "set LOG_DIR to a writable folder"
            raise SpeedrunError(f"cannot write the log {path}: {e.strerror or e}; {fix}.") from e

    def __call__(self, line: str, console: bool = True) -> None:
        if self.file is not None:
            print(line, file=self.file, flush=True)
            if console:
                print(line, flush=True)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def gpus_in_use(env: dict[str, str], device_count: int) -> list[str] | None:
    """The GPUs this node's processes use, as nvidia-smi -i names them (it ignores CUDA_VISIBLE_DEVICES), when not
    all of them (None): `NPROC=2` on an 8-GPU node logs as a 2-GPU run."""
    used = int(env.get("LOCAL_WORLD_SIZE", "1"))
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible:
        return visible[:used]
    return [str(i) for i in range(used)] if used < device_count else None


def nvidia_smi(*args: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.rstrip("\n") if out.returncode == 0 and out.stdout.strip() else None


def gpu_uuids(ids: list[str] | None) -> list[str]:
    """The UUIDs `nvidia-smi -L` gives the GPUs in use (ids as gpus_in_use names them: indices or UUIDs)."""
    listed = re.findall(r"^GPU (\d+): .*\(UUID: (GPU-[0-9A-Za-z-]+)\)", nvidia_smi("-L") or "", re.M)
    if ids is None:
        return [u for _, u in listed]
    return [u for v in ids for i, u in listed if v == i or (v.startswith("GPU-") and u.startswith(v))]


def host_line(d: Dist) -> str:
    """`host: {...}`: this machine as a salted hash of its machine id (stable, and it gives nothing away) and the
    UUIDs of the GPUs the run uses, every node's in rank order, so that runs can be known to share hardware."""
    paths = [p for p in ("/etc/machine-id", "/var/lib/dbus/machine-id") if os.path.isfile(p) and os.access(p, os.R_OK)]
    machine = next((i for p in paths if (i := Path(p).read_text("utf-8", "replace").strip())), socket.gethostname())
    host_id = hashlib.sha256(f"speedrun-host-v1:{machine}".encode()).hexdigest()[:16]
    uuids = gpu_uuids(gpus_in_use(dict(os.environ), torch.cuda.device_count())) if d.cuda and not d.local_rank else []
    if d.world_size > 1:  # each node's local rank 0 speaks for its GPUs
        every = [None] * d.world_size
        dist.all_gather_object(every, uuids)
        uuids = [u for node in every for u in node]
    return "host: " + json.dumps(dict(host_id=host_id, gpu_uuids=uuids))


def parameter_counts(args: Hyperparameters) -> dict[str, int]:
    """The log's `parameters:` line: counts by optimizer role, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        groups = GPT(args).param_groups()
    counts = {role: sum(p.numel() for p in params) for role, params in groups.items()}
    return dict(total=sum(counts.values()), **counts)


# a run's configuration (track: (track, target val loss)), settings and shards, all checked
RunPlan = collections.namedtuple("RunPlan", "preset track args overrides settings val_shards train_shards")
SEPARATOR = "=" * 100  # the log: the code, this line, the environment block, this line, the training lines


class Run:
    """A run, through the one skeleton `execute`: plan (every check before any work), seed and run id, header, model,
    warm-up, timed loop, end. train_scale.py's ScaleRun overrides the hooks (marked so) and adds an OOM message."""

    presets, tracks = PRESETS, TRACKS  # hook: the presets this file runs, each one's track and target
    saves: tuple | None = None  # hook: (every, save(step, train_time_ms)) for the timed loop, or None

    def __init__(self, d: Dist, env: dict[str, str] | None = None):
        self.d, self.env = d, dict(os.environ) if env is None else env

    @classmethod
    def preflight(cls, world_size: int) -> int:
        """run.sh calls this before torchrun, so that a setup mistake reads as one message, not a launcher traceback."""
        try:
            cls(Dist(0, world_size, 0, torch.device("cpu"))).make_plan()
            return 0
        except SpeedrunError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1

    def make_plan(self) -> RunPlan:
        preset, args, overrides = resolve_config(self.env, self.presets)
        settings = self.settings(preset, args)
        val_shards = plan_shards(args, settings.data_path, "val", args.val_tokens + 1)
        train_shards = plan_shards(args, settings.data_path, "train")
        return RunPlan(preset, self.tracks[preset], args, overrides, settings, val_shards, train_shards)

    def settings(self, preset: str, args: Hyperparameters) -> RunSettings:  # hook: the recipe checked, the settings
        validate(args, self.d.world_size)
        return run_settings(self.env, args)

    def choose(self, plan: RunPlan) -> RunPlan:  # hook: rank 0's seed and run id (and what else it decides), for all
        seed = secrets.randbelow(2**31) if plan.settings.seed is None else plan.settings.seed
        self.seed, self.run_id = self.from_rank0([seed, str(uuid.uuid4())])
        return plan

    def from_rank0(self, values: list) -> list:
        if self.d.world_size > 1:
            dist.broadcast_object_list(values, src=0)
        return values

    def log_path(self) -> Path:  # hook
        return Path(self.plan.settings.log_dir) / f"{self.run_id}.txt"

    def header(self, code: str, data: dict, **extra) -> None:  # hook: extra, more of the config line
        """The code, a separator, the environment block (all ranks take part), a separator."""
        plan, d, log, seed, run_id = self.plan, self.d, self.log, self.seed, self.run_id
        args, accum, (track, target) = plan.args, plan.args.windows_per_step // d.world_size, plan.track
        config = dict(dataclasses.asdict(args), preset=plan.preset, track=track, world_size=d.world_size)
        config.update(grad_accum_steps=accum, global_batch_tokens=d.world_size * accum * args.train_seq_len, seed=seed)
        config.update(run_id=run_id, target_val_loss=target, parallelism="ddp", device=d.device.type)
        config.update(step_avg_excluded_steps=0, overrides=plan.overrides, **extra)
        config["run"] = {k: v for k, v in dataclasses.asdict(plan.settings).items() if k != "seed"}
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
        ids = gpus_in_use(dict(os.environ), torch.cuda.device_count()) if d.cuda else None
        # nvidia-smi's table of the GPUs in use, or of the whole node when it refuses the ids (a MIG id, say)
        smi = (nvidia_smi("-i", ",".join(ids)) if ids else None) or nvidia_smi() or "nvidia-smi: not available"
        env = [f"Running Python {sys.version}", f"Running PyTorch {torch.__version__} compiled for {build}", smi]
        env += [host_line(d), "config: " + json.dumps(config), "data: " + json.dumps(data)]
        log(code.removesuffix("\n"), console=False)  # the section before the separator is the code, byte for byte
        log(SEPARATOR, console=False)
        for line in env + ["parameters: " + json.dumps(parameter_counts(args)), SEPARATOR]:
            log(line)

    def prepare(self, args: Hyperparameters) -> tuple:  # hook: (model, what the loop calls, optimizers, weights)
        raw = build_model(args, self.seed, self.d)
        model = torch.compile(raw, dynamic=False, fullgraph=True) if args.compile else raw  # a graph break: slower
        return raw, model, build_optimizers(raw, args, self.d, Muon, GradBuckets), list(raw.state_dict().values())

    def start(self, model: GPT, opts) -> tuple[int, float]:  # hook: the step and train time (ms) to go on from
        return 0, 0.0

    def finish(self, model: GPT, train_time_ms: float) -> None:  # hook: at the end of training
        """SPEEDRUN_EXPORT: rank 0 writes the final weights as `python -m tools sample|evaluate` read them,
        model.safetensors (in their trained dtypes), then config.json (written last: it marks a complete export)."""
        plan, started = self.plan, time.perf_counter()
        if plan.settings.export_dir is None or self.d.rank != 0:
            return
        from safetensors.torch import save_file  # only a run that exports needs it

        folder, state = Path(plan.settings.export_dir) / self.run_id, model.state_dict()
        meta = dict(format="speedrun-export-v1", preset=plan.preset, hyperparameters=dataclasses.asdict(plan.args))
        meta.update(parallelism="ddp", train_time_ms=train_time_ms, step=plan.args.num_iterations, run_id=self.run_id)
        meta.update(world_size=self.d.world_size, data_path=plan.settings.data_path)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(folder / "weights.tmp"))
            os.replace(folder / "weights.tmp", folder / "model.safetensors")
            (folder / "config.json.tmp").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
            os.replace(folder / "config.json.tmp", folder / "config.json")
        except OSError as e:
            where = f"the run finished (its log is complete) but its weights were not written to {folder}"
            fix = "free space or set SPEEDRUN_EXPORT to a writable folder"
            raise SpeedrunError(f"{where}: {e.strerror or e}; {fix}.") from e
        self.log(f"export: final weights written to {folder} in {time.perf_counter() - started:.1f}s")

    def close(self) -> None:  # hook: at the end, whether the run finished or failed
        self.log.close()

    def execute(self, code: str) -> None:
        self.plan = self.choose(self.make_plan())
        args, shards = self.plan.args, self.plan.val_shards + self.plan.train_shards
        data = describe_data(shards, args, self.plan.settings.data_path)
        self.log = RunLog(self.log_path() if self.d.rank == 0 else None)
        try:
            self.header(code, data)
            raw, model, opts, weights = self.prepare(args)
            warm_up(model, weights, opts, args, self.seed, self.d, self.log)
            self.finish(raw, train(model, opts, self, self.start(raw, opts)))
        finally:
            self.close()

    @classmethod
    def main(cls, code: str) -> int:
        d = None
        try:
            d = setup_distributed()
            cls(d).execute(code)
        except SpeedrunError as e:  # rank 0 speaks for all; before there are ranks, every failing process speaks
            if d is None or d.rank == 0:
                print(f"error: {e}", file=sys.stderr, flush=True)
            return 1
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        return 0


preflight = Run.preflight

if __name__ == "__main__":
    status = Run.main(CODE)
    sys.stdout.flush(), sys.stderr.flush()
    # Leave without interpreter teardown: after a complete gloo run, torch's C++ destructors sometimes abort
    # (SIGABRT in ~10% of 2-process CPU runs); the log is closed and the process group destroyed by now.
    os._exit(status)
