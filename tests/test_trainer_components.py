"""train_gpt.py's fast parts checked against slow, obviously correct references on small random inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
import train_gpt as tg  # noqa: E402

# ----------------------------------------------------------------------------------------------- block masks


def reference_mask(docs: torch.Tensor, window_blocks: int, block_size: int) -> torch.Tensor:
    """The rule, token by token: k <= q, same document, and fewer than window_blocks blocks apart."""
    T = docs.numel()
    m = torch.zeros(T, T, dtype=torch.bool)
    for q in range(T):
        for k in range(q + 1):
            m[q, k] = bool(docs[q] == docs[k]) and q // block_size - k // block_size < window_blocks
    return m


def block_mask_to_dense(block_mask) -> torch.Tensor:
    """The (Q, K) bool token mask a BlockMask describes, read entry by entry: its full blocks, and its mask_mod
    inside its partial blocks."""
    bq, bk = block_mask.BLOCK_SIZE
    nq, nk = block_mask.kv_indices.shape[-2:]
    partial = decode_blocks(block_mask.kv_num_blocks, block_mask.kv_indices, nq)
    full = decode_blocks(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, nq)
    dense = torch.zeros(nq * bq, nk * bk, dtype=torch.bool)
    qi, ki = torch.arange(bq)[:, None], torch.arange(bk)[None, :]
    for q in range(nq):
        for k in full[q]:
            dense[q * bq : (q + 1) * bq, k * bk : (k + 1) * bk] = True
        for k in partial[q]:
            dense[q * bq : (q + 1) * bq, k * bk : (k + 1) * bk] = block_mask.mask_mod(0, 0, q * bq + qi, k * bk + ki)
    return dense


def decode_blocks(num: torch.Tensor, idx: torch.Tensor, n: int) -> list[set[int]]:
    """Which kv blocks a BlockMask lists for each q block, read one entry at a time."""
    return [{int(idx[0, 0, q, i]) for i in range(int(num[0, 0, q]))} for q in range(n)]


def random_layouts(T: int, seed: int) -> list[torch.Tensor]:
    """Token streams (separator = 9) with one document, many tiny ones, separators on block edges, random ones."""
    g = torch.Generator().manual_seed(seed)
    streams = [torch.zeros(T, dtype=torch.long), torch.full((T,), 9)]
    edges = torch.zeros(T, dtype=torch.long)
    edges[::16] = 9
    edges[15::32] = 9
    streams.append(edges)
    for p in (0.01, 0.05, 0.3):
        s = torch.randint(0, 9, (T,), generator=g)
        s[torch.rand(T, generator=g) < p] = 9
        streams.append(s)
    return streams


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_block_mask_matches_dense_reference(seed: int) -> None:
    T, bs = 128, 16  # 8 blocks: windows from one block to wider than the sequence
    n = T // bs
    for tokens in random_layouts(T, seed):
        docs = (tokens == 9).cumsum(0)
        for w in range(1, n + 2):
            bm = tg.document_window_block_mask(docs, torch.tensor(w, dtype=torch.int32), bs)
            ref = reference_mask(docs, w, bs)
            assert torch.equal(block_mask_to_dense(bm), ref), f"window {w}, docs {docs.tolist()}"
            # the CPU path evaluates the same rule on every pair
            pos = torch.arange(T)
            rule = tg.document_causal_window(docs, torch.tensor(w, dtype=torch.int32), bs)
            assert torch.equal(rule(0, 0, pos[:, None], pos[None, :]), ref)
            # the block classification is exact: full = every pair visible, partial = some, absent = none
            partial = decode_blocks(bm.kv_num_blocks, bm.kv_indices, n)
            full = decode_blocks(bm.full_kv_num_blocks, bm.full_kv_indices, n)
            for q in range(n):
                for k in range(n):
                    tile = ref[q * bs : (q + 1) * bs, k * bs : (k + 1) * bs]
                    expected = "full" if tile.all() else "partial" if tile.any() else "none"
                    got = "full" if k in full[q] else "partial" if k in partial[q] else "none"
                    assert got == expected, f"block ({q}, {k}), window {w}: {got} but the tile is {expected}"


@pytest.mark.slow  # torch.compile: inductor's C++ builds take 10-25 s on 2 cores
def test_compiled_flex_attention_uses_the_block_structure_correctly() -> None:
    """The fused kernel skips mask_mod in full blocks and skips absent blocks: compare it with naive attention.
    As in the model, the BlockMask is built inside the compiled graph (fullgraph: no graph breaks)."""
    torch.manual_seed(0)
    T, bs, H, D = 512, 128, 2, 32

    @torch.compile(fullgraph=True, dynamic=False)
    def attend(tokens, window, q, k, v):
        bm = tg.document_window_block_mask((tokens == 9).cumsum(0), window, bs)
        return tg.flex_attention(q, k, v, block_mask=bm, scale=0.12)

    tokens = torch.randint(0, 9, (T,))
    tokens[[0, 100, 130, 131, 300, 383, 384]] = 9
    docs = (tokens == 9).cumsum(0)
    q, k, v = (torch.randn(1, H, T, D) for _ in range(3))
    qi, ki = torch.arange(T)[:, None], torch.arange(T)[None, :]
    for w in (1, 2, 4):
        out = attend(tokens, torch.tensor(w, dtype=torch.int32), q, k, v)
        ref_mask = (ki <= qi) & (docs[qi] == docs[ki]) & (qi // bs - ki // bs < w)
        naive = torch.softmax((q @ k.mT * 0.12).masked_fill(~ref_mask, float("-inf")), dim=-1) @ v
        torch.testing.assert_close(out, naive, atol=1e-5, rtol=1e-4)


def test_a_batch_of_windows_gets_each_windows_masks_and_losses() -> None:
    """train_scale.py runs several windows as one batch (B, T): the block mask (CUDA) and the dense mask (CPU) of
    the batch are each window's own, stacked, and GPT.forward gives each window's mean loss, as one window alone."""
    T, bs, w = 128, 16, 3
    docs_BT = torch.stack([(tokens == 9).cumsum(0) for tokens in random_layouts(T, 0)[2:6]])
    window = torch.tensor(w, dtype=torch.int32)
    batch = tg.document_window_block_mask(docs_BT, window, bs)
    pos, b = torch.arange(T), torch.arange(len(docs_BT))[:, None, None, None]
    dense = tg.document_causal_window(docs_BT, window, bs)(b, 0, pos[:, None], pos[None, :])
    for i, docs in enumerate(docs_BT):
        one = tg.document_window_block_mask(docs, window, bs)
        for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"):
            assert torch.equal(getattr(batch, name)[i], getattr(one, name)[0]), (i, name)
        assert torch.equal(dense[i, 0], reference_mask(docs, w, bs))
    args = dataclasses.replace(tg.PRESETS["smoke"], num_layers=2, attention_pattern="LS", num_value_embeds=1)
    torch.manual_seed(0)
    model = tg.GPT(args)
    with torch.no_grad():  # the zero-initialised head would make every loss ln(vocab)
        model.lm_head.weight.normal_(0, 0.05)
    tokens = torch.randint(0, 512, (3, 257))
    tokens[:, [0, 100]] = 511
    alone = [model(t[:-1].int(), t[1:], torch.tensor(2, dtype=torch.int32)) for t in tokens]
    together = model(tokens[:, :-1].int(), tokens[:, 1:], torch.tensor(2, dtype=torch.int32))
    assert together.shape == (3,) and len({round(x.item(), 3) for x in alone}) == 3
    torch.testing.assert_close(together, torch.stack(alone), rtol=1e-6, atol=1e-6)


def test_cpu_attention_path_equals_naive_attention_with_gradients() -> None:
    torch.manual_seed(1)
    T, bs = 256, 128
    tokens = torch.randint(0, 9, (T,))
    tokens[[0, 60, 200]] = 9
    docs = (tokens == 9).cumsum(0)
    pos = torch.arange(T)
    mask = tg.document_causal_window(docs, torch.tensor(1, dtype=torch.int32), bs)(0, 0, pos[:, None], pos[None, :])
    q, k, v = (torch.randn(1, 2, T, 16, requires_grad=True) for _ in range(3))
    out = tg.attention(q, k, v, mask, 0.12)
    naive = torch.softmax((q @ k.mT * 0.12).masked_fill(~mask, float("-inf")), dim=-1) @ v
    torch.testing.assert_close(out, naive, atol=1e-5, rtol=1e-4)
    g1 = torch.autograd.grad(out.square().sum(), (q, k, v))
    g2 = torch.autograd.grad(naive.square().sum(), (q, k, v))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)


# ----------------------------------------------------------------------------------------------- rotary


def test_rotary_matches_complex_rotation() -> None:
    torch.manual_seed(0)
    T, H, D = 40, 3, 16
    rot = tg.Rotary(D, max_seq_len=64, min_freq=1 / 1024)
    x = torch.randn(2, T, H, D)
    y = rot(x)
    freqs = [(1 / 1024) ** (i / (D // 4 - 1)) for i in range(D // 4)] + [0.0] * (D // 4)
    expected = torch.empty_like(x)
    for t in range(T):
        for i in range(D // 2):  # dim i pairs with dim i + D/2, rotated by -t * freq_i
            z = torch.complex(x[:, t, :, i].double(), x[:, t, :, i + D // 2].double()) * complex(
                math.cos(t * freqs[i]), -math.sin(t * freqs[i])
            )
            expected[:, t, :, i], expected[:, t, :, i + D // 2] = z.real.float(), z.imag.float()
    torch.testing.assert_close(y, expected, atol=2e-5, rtol=1e-5)
    assert torch.equal(y[:, :, :, D // 4 : D // 2], x[:, :, :, D // 4 : D // 2])  # zero-frequency half untouched


def test_rotary_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(1)
    D = 32
    rot = tg.Rotary(D, max_seq_len=128, min_freq=1 / 1024)
    q, k = torch.randn(D), torch.randn(D)

    def score(tq: int, tk: int) -> float:
        xs = torch.zeros(1, 128, 1, D)
        xs[0, tq, 0], ys = q, torch.zeros(1, 128, 1, D)
        ys[0, tk, 0] = k
        return float(rot(xs)[0, tq, 0] @ rot(ys)[0, tk, 0])

    for shift in (1, 17, 60):
        assert score(10, 3) == pytest.approx(score(10 + shift, 3 + shift), rel=1e-4, abs=1e-4)


# ----------------------------------------------------------------------------------------------- Newton-Schulz


def conditioned(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U diag(s) V^T with singular values spread over [0.1, 1]."""
    g = torch.Generator().manual_seed(seed)
    *batch, m, n = shape
    r = min(m, n)
    U = torch.linalg.qr(torch.randn(*batch, m, r, generator=g))[0]
    V = torch.linalg.qr(torch.randn(*batch, n, r, generator=g))[0]
    s = torch.linspace(0.1, 1, r)[torch.randperm(r, generator=g)]
    return U @ torch.diag_embed(s.expand(*batch, r)) @ V.mT, U, V


@pytest.mark.parametrize("shape", [(64, 64), (32, 96), (96, 32), (3, 48, 48), (128, 512)])
def test_newton_schulz_orthogonalises(shape: tuple[int, ...]) -> None:
    G, U, V = conditioned(shape, seed=sum(shape))
    X = tg.zeropower_via_newtonschulz5(G, steps=5)
    assert X.dtype == torch.bfloat16 and X.shape == G.shape
    s = torch.linalg.svdvals(X.float())
    assert s.min() > 0.6 and s.max() < 1.2, f"singular values {s.min():.3f}..{s.max():.3f} are not near 1"
    core = U.mT @ X.float() @ V  # the same singular vectors: U^T X V is diagonal
    off = core - torch.diag_embed(torch.diagonal(core, dim1=-2, dim2=-1))
    assert off.norm() < 0.05 * core.norm()
    if shape[-2] != shape[-1]:  # a tall matrix is iterated as its wide transpose
        assert torch.equal(tg.zeropower_via_newtonschulz5(G.mT), X.mT)


@pytest.mark.parametrize("shape", [(64, 256), (3, 48, 48)])
def test_bf16_matmul_on_cpu_rounds_as_a_bf16_matmul(shape: tuple[int, ...]) -> None:
    """On CPU Newton-Schulz multiplies through fp32 (bf16_matmul): the result is a bf16 matmul's, fp32 sums rounded
    once to bf16; only the order of the sums differs, so an element may land one bf16 step away, never more."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).bfloat16()
    y = torch.randn(*shape[:-2], shape[-1], shape[-2], generator=g).bfloat16()
    ours, native = tg.bf16_matmul(x, y), x @ y
    assert ours.dtype == torch.bfloat16 and ours.shape == native.shape
    step = torch.finfo(torch.bfloat16).eps * native.float().abs().clamp_min(1e-30)
    assert ((ours.float() - native.float()).abs() <= step).all()
    assert (ours == native).float().mean() > 0.95


def test_muon_step_single_process_matches_formula() -> None:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(48, 16))
    p0 = p.detach().clone()
    g = torch.randn(48, 16)
    p.grad = g.clone()
    opt = tg.Muon([p], lr=0.05, momentum=0.9, ns_steps=5, rank=0, world_size=1)
    opt.step()
    buf = 0.1 * g  # momentum buffer starts at zero: lerp(0, g, 0.1)
    nesterov = g + 0.9 * (buf - g)
    expected = p0 - 0.05 * (48 / 16) ** 0.5 * tg.zeropower_via_newtonschulz5(nesterov).float()
    torch.testing.assert_close(p.detach(), expected, atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------------------------- FP8 head


def fp8_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = F.rms_norm(torch.randn(64, 128, generator=g), (128,)).bfloat16()  # the head sees normed activations
    w = torch.randn(256, 128, generator=g) * 0.05
    grad = (torch.randn(64, 256, generator=g) * 2**-17).bfloat16()  # about a 64 Ki-token mean loss's gradients
    return x, w, grad


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def test_fp8_head_matches_float32_forward_and_backward() -> None:
    x, w, grad = fp8_inputs()
    x.requires_grad_(), w.requires_grad_()
    out = tg.fp8_mm(x, w, 2.0, 32.0, 2.0**29)[0]
    assert out.dtype == torch.bfloat16 and out.shape == (64, 256)
    x32, w32 = x.detach().float().requires_grad_(), w.detach().clone().requires_grad_()
    ref = x32 @ w32.T
    assert rel_err(out, ref) < 0.08  # e4m3 keeps 3 mantissa bits: a few percent
    out.backward(grad)
    ref.backward(grad.float())
    assert x.grad.dtype == torch.bfloat16 and w.grad.dtype == torch.float32
    assert rel_err(x.grad, x32.grad) < 0.12  # e5m2 gradients keep 2 mantissa bits
    assert rel_err(w.grad, w32.grad) < 0.12


def test_fp8_head_rejects_what_cuda_scaled_mm_rejects() -> None:
    """CPU _scaled_mm multiplies any layout; CUDA's needs x row-major, w.t() column-major and dims multiples of 16.
    The op checks that itself, so a layout bug shows on CPU instead of as a cuBLAS error on the first GPU run."""
    x, w, _ = fp8_inputs(4)
    good = tg.fp8_mm(x, w, 2.0, 32.0, 2.0**29)[0]
    assert good.shape == (64, 256) and good.is_contiguous()
    for bad_x, bad_w in [
        (x.t().contiguous().t(), w),  # x column-major
        (x, w.t().contiguous().t()),  # w column-major: w_f8.t() would be row-major
        (x[:56], w),  # 56 rows
        (x[:, :120].contiguous(), w[:, :120].contiguous()),  # inner dim 120
        (x, w[:250]),  # 250 outputs
    ]:
        with pytest.raises(ValueError, match=r"fp8_mm: x \(.*CUDA takes 2-D, contiguous, dims % 16"):
            tg.fp8_mm(bad_x, bad_w, 2.0, 32.0, 2.0**29)


def test_fp8_ops_pass_torch_library_checks() -> None:
    x, w, grad = fp8_inputs(1)
    x.requires_grad_(), w.requires_grad_()
    # opcheck's schema and aot tests sum float8 outputs, which CPU kernels do not implement: the forward op is
    # checked for fake/autograd registration here and traced by torch.compile in the next test.
    torch.library.opcheck(
        tg.fp8_mm, (x, w, 2.0, 32.0, 2.0**29), test_utils=("test_faketensor", "test_autograd_registration")
    )
    saved = (
        (grad * 2**29).to(torch.float8_e5m2),
        (x.detach() * 2).to(torch.float8_e4m3fn),
        (w.detach() * 32).to(torch.float8_e4m3fn),
    )
    torch.library.opcheck(
        tg.fp8_mm_backward,
        (*saved, 2.0, 32.0, 2.0**29),
        test_utils=("test_faketensor", "test_autograd_registration", "test_aot_dispatch_static"),
    )


@pytest.mark.slow  # torch.compile: inductor's C++ builds take 10-25 s on 2 cores
def test_fp8_head_traces_with_fullgraph_compile() -> None:
    x, w, grad = fp8_inputs(2)

    def head_loss(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        logits = tg.fp8_mm(x, w, 2.0, 32.0, 2.0**29)[0]
        return (30 * torch.sigmoid(logits.float() / 7.5) * grad.float()).sum()

    compiled = torch.compile(head_loss, fullgraph=True, dynamic=False)
    results = []
    for fn in (head_loss, compiled):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        loss = fn(xi, wi)
        loss.backward()
        results.append((loss.detach(), xi.grad, wi.grad))
    (loss_e, gx_e, gw_e), (loss_c, gx_c, gw_c) = results
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-5, atol=0)
    # inductor fuses the gradient's scale-and-cast (rounding once, not via bf16), so a few e5m2 values differ by a step
    assert rel_err(gx_c, gx_e) < 0.05 and rel_err(gw_c, gw_e) < 0.05


@pytest.mark.slow  # torch.compile: inductor's C++ builds take 10-25 s on 2 cores
def test_compiled_newton_schulz_and_fp8_casts_agree_with_eager() -> None:
    """compile=True runs Newton-Schulz and the FP8 op's scale-and-cast through torch.compile (as the record does);
    compile=False keeps both eager. Compiled on CPU here, small: inductor's C++ build takes seconds."""

    def exact(G: torch.Tensor) -> torch.Tensor:  # the same iteration in float64, as the reference for both
        X = G.double().mT if G.size(-2) > G.size(-1) else G.double()
        X = X / X.norm(dim=(-2, -1), keepdim=True)
        for _ in range(5):
            A = X @ X.mT
            X = 3.4445 * X + (-4.7750 * A + 2.0315 * A @ A) @ X
        return X.mT if G.size(-2) > G.size(-1) else X

    compiled = tg.compiled_once(tg.zeropower_via_newtonschulz5)
    for shape in [(3, 48, 32), (64, 96)]:  # a stacked qkv-like batch, then a second shape (a dynamic-shape graph)
        G = torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)))
        eager, fused = tg.zeropower_via_newtonschulz5(G, 5), compiled(G, 5)
        assert fused.dtype == torch.bfloat16 and fused.shape == G.shape
        # bf16 rounding, fused or not, moves the result a few percent; both are as close to the exact iteration
        assert rel_err(fused, eager) < 0.06 and rel_err(fused, exact(G)) < 0.05 and rel_err(eager, exact(G)) < 0.05
    d = tg.Dist(0, 1, 0, torch.device("cpu"))
    for flag in (False, True):
        args = tiny_args(compile=flag)
        muon = tg.build_optimizers(tg.GPT(args), args, d, tg.Muon, tg.GradBuckets)[1]
        assert muon.orthogonalise is (compiled if flag else tg.zeropower_via_newtonschulz5)
    x, w, _ = fp8_inputs(3)
    eager, fused = tg.fp8_mm(x, w, 2.0, 32.0, 2.0**29), tg.fp8_mm(x, w, 2.0, 32.0, 2.0**29, True)
    for a, b in zip(eager, fused, strict=True):  # power-of-two scales: the fused cast rounds exactly as eager
        assert a.dtype == b.dtype and torch.equal(a.float(), b.float())


# ----------------------------------------------------------------------------------------------- model


def tiny_args(**changes) -> tg.Hyperparameters:
    base = dataclasses.replace(
        tg.PRESETS["smoke"], vocab_size=300, train_seq_len=256, val_seq_len=256, model_dim=32, num_heads=2, head_dim=16
    )
    return dataclasses.replace(base, **changes)


def test_loss_at_initialisation_is_ln_vocab() -> None:
    args = tiny_args()
    d = tg.Dist(0, 1, 0, torch.device("cpu"))
    model = tg.build_model(args, seed=0, d=d)
    assert model.lm_head.weight.shape[0] == 384  # padded to a multiple of 128
    tokens = torch.randint(0, args.vocab_size, (257,))
    window = torch.tensor(2, dtype=torch.int32)
    loss = model(tokens[:-1].int(), tokens[1:], window)
    # the zero-initialised head gives every padded-vocabulary logit the same value
    assert loss.item() == pytest.approx(math.log(384), abs=1e-4)
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.02)
    assert model(tokens[:-1].int(), tokens[1:], window).item() == pytest.approx(math.log(384), abs=0.05)


def test_fp8_head_trains_on_cpu() -> None:
    """The record's training path (FP8 head) runs end to end and moves the head."""
    # logit gradients scale as 1 / tokens per window: 2^29 suits 64 Ki tokens, 2^21 these 256 (e5m2 tops at 57344)
    args = tiny_args(fp8_head=True, fp8_grad_scale=2.0**21)
    d = tg.Dist(0, 1, 0, torch.device("cpu"))
    model = tg.build_model(args, seed=0, d=d)
    opts = tg.build_optimizers(model, args, d, tg.Muon, tg.GradBuckets)
    tokens = torch.randint(0, args.vocab_size, (257,))
    dummy = (tokens[:-1].int(), tokens[1:])
    losses = [tg.train_step(s, model, opts, None, args, d, dummy=dummy).item() for s in range(3)]
    assert model.lm_head.weight.abs().sum() > 0 and losses[-1] < losses[0]


@pytest.mark.slow
def test_compiled_training_step_matches_eager() -> None:
    """The whole training step with compile=True (the model in one fullgraph graph, the FP8 op's casts and
    Newton-Schulz compiled inside it and the optimizer) computes what eager mode computes. (On CPU attention
    takes the SDPA path; FlexAttention is traced above.)"""
    # four layers hold every kind of block (long, short, none; a U-net skip; value embeddings): inductor's CPU
    # compile time grows with the layers, and this is the suite's longest compile
    eager = tiny_args(num_layers=4, num_value_embeds=2, attention_pattern="LS-S", fp8_head=True, fp8_grad_scale=2.0**21)
    d = tg.Dist(0, 1, 0, torch.device("cpu"))
    tokens = torch.randint(0, eager.vocab_size - 1, (257,), generator=torch.Generator().manual_seed(0))
    tokens[[0, 50, 180]] = eager.vocab_size - 1
    dummy = (tokens[:-1].int(), tokens[1:])
    losses = {}
    for args in (eager, dataclasses.replace(eager, compile=True)):
        raw = tg.build_model(args, seed=0, d=d)
        model = torch.compile(raw, dynamic=False, fullgraph=True) if args.compile else raw  # as run() does
        opts = tg.build_optimizers(raw, args, d, tg.Muon, tg.GradBuckets)
        losses[args.compile] = [tg.train_step(s, model, opts, None, args, d, dummy=dummy).item() for s in range(3)]
    # bf16 Newton-Schulz rounds differently compiled (a few percent of an update): the losses move far less
    assert losses[True] == pytest.approx(losses[False], rel=1e-3), losses


def test_param_groups_cover_the_model_once() -> None:
    model = tg.GPT(tiny_args())
    groups = model.param_groups()
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert all(p.ndim >= 2 for p in groups["hidden"]) and all(p.ndim < 2 for p in groups["scalar"])
    assert model.blocks[7].attn is None and all(model.blocks[i].attn is not None for i in range(12) if i != 7)


# ----------------------------------------------------------------------------------------------- schedules and presets


def test_short_preset_is_the_reference_recipe() -> None:
    a = tg.PRESETS["short"]
    assert (a.vocab_size, a.num_layers, a.model_dim, a.num_heads, a.head_dim, a.mlp_ratio) == (
        50257,
        12,
        768,
        6,
        128,
        4,
    )
    assert a.attention_pattern == "LSSSLSS-SSSL" and a.num_value_embeds == 3 and a.attn_scale == 0.12
    assert (a.train_seq_len, a.windows_per_step, a.val_tokens, a.num_iterations, a.val_loss_every) == (
        65536,
        8,
        10485760,
        1393,
        125,
    )
    assert (a.adam_lr_head, a.adam_lr_embed, a.adam_lr_scalar, a.adam_beta1, a.adam_beta2, a.adam_eps) == (
        0.008,
        0.6,
        0.04,
        0.8,
        0.95,
        1e-10,
    )
    assert (a.muon_lr, a.muon_momentum, a.muon_momentum_start, a.muon_momentum_warmup_steps, a.ns_steps) == (
        0.05,
        0.95,
        0.85,
        300,
        5,
    )
    assert (a.fp8_head, a.fp8_x_scale, a.fp8_w_scale, a.fp8_grad_scale) == (True, 2.0, 32.0, 2.0**29)
    assert (a.logit_cap, a.logit_temperature, a.cooldown_frac, a.lr_final_frac, a.block_size) == (
        30.0,
        7.5,
        0.4,
        0.1,
        128,
    )
    assert a.window_final_tokens == 1792
    assert a.compile and tg.TRACKS["short"] == ("track_1_short", 3.28)
    tg.validate(a, 8)
    tg.validate(tg.PRESETS["smoke"], 2)


def test_learning_rate_schedule_is_the_records() -> None:
    """The 2025-01-16 record's multiplier: constant, then linear decay to 0.1 over the last 40% of 1,393 steps,
    w + 0.1 (1 - w) with w = min((1 - step / 1393) / 0.4, 1). Not to 0 (our spec said so until 2026-12)."""
    a = tg.PRESETS["short"]
    assert (a.num_iterations, a.cooldown_frac, a.lr_final_frac) == (1393, 0.4, 0.1)
    got = [tg.lr_factor(s, a) for s in (0, 835, 836, 1000, 1392)]
    assert got[:2] == [1.0, 1.0]  # constant through step 835: the cool-down starts at step 836
    assert got[2:] == pytest.approx([0.999677, 0.734781, 0.101615], abs=5e-7)
    factors = [tg.lr_factor(s, a) for s in range(1393)]
    assert factors == sorted(factors, reverse=True) and min(factors) > 0.1
    assert sum(factors) / 1393 == pytest.approx(0.8203, abs=5e-5)  # the run's mean multiplier (0.8004 decaying to 0)


def test_window_schedule() -> None:
    a = tg.PRESETS["short"]
    windows = [tg.window_blocks(s, a) for s in range(1394)]
    assert windows[0] == 1 and windows[-1] == 14 and windows == sorted(windows)
    assert set(windows) == set(range(1, 15))  # every size from 128 to 1792 tokens is used


def test_overrides_are_checked() -> None:
    preset, args, overrides = tg.resolve_config(
        {"SPEEDRUN_PRESET": "smoke", "SPEEDRUN_OVERRIDES": '{"num_iterations": 7, "muon_lr": 1}'}, tg.PRESETS
    )
    assert (
        preset == "smoke"
        and args.num_iterations == 7
        and args.muon_lr == 1.0
        and overrides == {"num_iterations": 7, "muon_lr": 1.0}
    )
    for env, needle in [
        ({"SPEEDRUN_PRESET": "huge"}, "choose one of short, medium, smoke."),
        ({"SPEEDRUN_PRESET": "1.5b"}, "choose one of short, medium, smoke."),  # train_scale.py's ladder
        ({"SPEEDRUN_OVERRIDES": "{num_iterations: 3}"}, "not valid JSON"),
        ({"SPEEDRUN_OVERRIDES": "[1]"}, "JSON object"),
        ({"SPEEDRUN_OVERRIDES": '{"num_iteration": 3}'}, "not a Hyperparameters field"),
        ({"SPEEDRUN_OVERRIDES": '{"num_iterations": "3"}'}, "must be a int"),
        ({"SPEEDRUN_OVERRIDES": '{"compile": 1}'}, "must be a bool"),
    ]:
        with pytest.raises(tg.SpeedrunError, match=needle):
            tg.resolve_config(env, tg.PRESETS)
    with pytest.raises(tg.SpeedrunError, match="divides 8"):
        tg.validate(tg.PRESETS["short"], 3)
    with pytest.raises(tg.SpeedrunError, match="multiple of block_size"):
        tg.validate(dataclasses.replace(tg.PRESETS["short"], train_seq_len=1000), 1)


# ----------------------------------------------------------------------------------------------- data


def write_shard(path, tokens, magic=20240520, version=1, count=None) -> None:
    header = np.zeros(256, dtype="<i4")
    header[:3] = magic, version, len(tokens) if count is None else count
    path.write_bytes(header.tobytes() + np.asarray(tokens, dtype="<u2").tobytes())


def test_shard_headers_and_their_errors(tmp_path) -> None:
    """The run checks every shard's header against its size when it plans what to read: one message each."""
    good = tmp_path / "x_val_000000.bin"
    write_shard(good, [5, 6, 7])
    args = tg.PRESETS["smoke"]
    assert tg.plan_shards(args, str(tmp_path), "val", 3) == [tg.Shard(good, "val", 3)]
    cases = {"magic": dict(magic=1234), "version": dict(version=2), "truncated": dict(count=4)}
    for name, kwargs in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        bad = folder / f"{name}_val_000000.bin"
        write_shard(bad, [1, 2, 3], **kwargs)
        with pytest.raises(tg.ShardError, match=name if name != "truncated" else "cut short") as e:
            tg.plan_shards(args, str(folder), "val", 3)
        assert str(bad) in str(e.value) and "python data/" in str(e.value)
    with pytest.raises(tg.ShardError, match="cannot read shard"):
        tg.read_shard_header(tmp_path / "missing.bin", "fix it")


def test_data_plan_and_hash_errors(tmp_path) -> None:
    args = tg.PRESETS["smoke"]
    with pytest.raises(tg.SpeedrunError, match="does not exist.*python data/synthetic.py"):
        tg.plan_shards(args, str(tmp_path / "none"), "val", 10)
    (tmp_path / "d").mkdir()
    with pytest.raises(tg.SpeedrunError, match="holds no val shards"):
        tg.plan_shards(args, str(tmp_path / "d"), "val", 10)
    write_shard(tmp_path / "d" / "s_val_000000.bin", [1, 2, 3, 600])
    with pytest.raises(tg.SpeedrunError, match=r"\(1, 4 tokens\) hold 4 tokens but this run needs 10"):
        tg.plan_shards(args, str(tmp_path / "d"), "val", 10)
    shards = tg.plan_shards(args, str(tmp_path / "d"), "val", 4)
    with pytest.raises(tg.ShardError, match="holds token 600.*512 tokens"):
        tg.describe_data(shards, args, str(tmp_path / "d"))
    with pytest.raises(tg.SpeedrunError, match="cached_fineweb10B.py 9"):
        tg.plan_shards(tg.PRESETS["short"], str(tmp_path / "none"), "train")


def test_windows_read_across_shards(tmp_path) -> None:
    stream = np.arange(1000) % 500
    for i, (lo, hi) in enumerate([(0, 300), (300, 310), (310, 1000)]):
        write_shard(tmp_path / f"s_val_{i:06d}.bin", stream[lo:hi])
    shards = tg.plan_shards(tg.PRESETS["smoke"], str(tmp_path), "val", 1000)
    info = tg.describe_data(shards, tg.PRESETS["smoke"], str(tmp_path))
    assert [s["tokens"] for s in info["shards"]] == [300, 10, 690] and all(
        len(s["sha256"]) == 64 for s in info["shards"]
    )
    windows = tg.TokenWindows(shards, seq_len=128, tokens=7 * 128 + 1, device=torch.device("cpu"))
    for j in range(7):
        inputs, targets = windows[j]
        assert inputs.dtype == torch.int32 and targets.dtype == torch.int64
        assert inputs.tolist() == stream[j * 128 : (j + 1) * 128].tolist()
        assert targets.tolist() == stream[j * 128 + 1 : (j + 1) * 128 + 1].tolist()
    assert len(windows.tokens) == 7 * 128 + 1  # only what validation reads is read


def test_preflight_reports_setup_mistakes_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    """run.sh runs this before torchrun so that users read the trainer's message, not a launcher traceback."""
    write_shard(tmp_path / "s_val_000000.bin", np.arange(9000) % 512)
    write_shard(tmp_path / "s_train_000001.bin", np.arange(500_000) % 512)
    monkeypatch.setenv("SPEEDRUN_PRESET", "smoke")
    monkeypatch.setenv("DATA_PATH", str(tmp_path))
    monkeypatch.delenv("SPEEDRUN_OVERRIDES", raising=False)
    monkeypatch.delenv("SEED", raising=False)
    assert tg.preflight(2) == 0
    assert tg.preflight(3) == 1 and "divides 8" in capsys.readouterr().err
    for seed in ("abc", "--5", "\u00b2"):  # "²" passes str.isdigit, not int()
        monkeypatch.setenv("SEED", seed)
        assert tg.preflight(1) == 1 and f"SEED={seed!r} is not a whole number" in capsys.readouterr().err
    monkeypatch.setenv("SEED", "-3")
    assert tg.preflight(1) == 0
    monkeypatch.setenv("SPEEDRUN_EXPORT", str(tmp_path / "s_val_000000.bin"))
    assert tg.preflight(1) == 1 and "is a file; give a folder for the final weights" in capsys.readouterr().err
    monkeypatch.delenv("SPEEDRUN_EXPORT")
    # sizes of the right type but impossible values: one message, never a ZeroDivisionError or IndexError
    for overrides, message in [
        ({"block_size": 0}, "block_size=0 must be positive"),
        ({"windows_per_step": -8}, "windows_per_step=-8 must be positive"),
        ({"num_heads": 0, "model_dim": 0}, "model_dim=0 must be positive; num_heads=0 must be positive"),
        ({"val_tokens": 0, "mlp_ratio": 0}, "val_tokens=0 must be positive; mlp_ratio=0 must be positive"),
    ]:
        monkeypatch.setenv("SPEEDRUN_OVERRIDES", json.dumps(overrides))
        assert tg.preflight(1) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: invalid configuration: ") and message in err, err
    monkeypatch.delenv("SPEEDRUN_OVERRIDES")
    assert tg.preflight(0) == 1 and "world_size=0: a run needs at least one process" in capsys.readouterr().err


def test_overrides_hold_only_real_changes_to_the_recipe(monkeypatch) -> None:
    """An override disqualifies a record run: one that changes nothing is not recorded, and run settings have
    variables of their own."""
    env = {"SPEEDRUN_PRESET": "short", "SPEEDRUN_OVERRIDES": json.dumps({"num_iterations": 1393, "seed_": 1})}
    with pytest.raises(tg.SpeedrunError, match="'seed_' is not a Hyperparameters field"):
        tg.resolve_config(env, tg.PRESETS)
    same = tg.PRESETS["short"].num_iterations
    env["SPEEDRUN_OVERRIDES"] = json.dumps({"num_iterations": same, "muon_lr": 0.05, "ns_steps": 4})
    assert tg.resolve_config(env, tg.PRESETS)[2] == {"ns_steps": 4}
    for key in ("seed", "data_path", "log_dir"):
        env["SPEEDRUN_OVERRIDES"] = json.dumps({key: "/data"})
        with pytest.raises(tg.SpeedrunError, match=f"'{key}' is not a Hyperparameters field .run settings"):
            tg.resolve_config(env, tg.PRESETS)


def test_run_settings_are_apart_from_the_recipe() -> None:
    """The recipe is exactly Hyperparameters (what a record diff shows); the seed and the folders are RunSettings,
    from their own variables, with the data folder a preset's vocabulary calls for."""
    recipe = {f.name for f in dataclasses.fields(tg.Hyperparameters)}
    settings = {f.name for f in dataclasses.fields(tg.RunSettings)}
    assert settings == {"seed", "data_path", "log_dir", "export_dir"} and not recipe & settings
    assert tg.run_settings({}, tg.PRESETS["short"]) == tg.RunSettings(None, "data/fineweb10B", "logs", None)
    assert tg.run_settings({}, tg.PRESETS["smoke"]).data_path == "data/synthetic"
    env = {"SEED": "7", "DATA_PATH": "/d", "LOG_DIR": "/l", "SPEEDRUN_EXPORT": "/e"}
    assert tg.run_settings(env, tg.PRESETS["smoke"]) == tg.RunSettings(7, "/d", "/l", "/e")


def test_the_log_shows_the_gpus_the_run_uses() -> None:
    """nvidia-smi lists every GPU of the node whatever CUDA_VISIBLE_DEVICES says; the run asks for its own."""
    assert tg.gpus_in_use({"LOCAL_WORLD_SIZE": "8"}, 8) is None
    assert tg.gpus_in_use({}, 1) is None
    assert tg.gpus_in_use({"LOCAL_WORLD_SIZE": "2"}, 8) == ["0", "1"]
    assert tg.gpus_in_use({"LOCAL_WORLD_SIZE": "2", "CUDA_VISIBLE_DEVICES": "4,5,6"}, 3) == ["4", "5"]
    assert tg.gpus_in_use({"LOCAL_WORLD_SIZE": "1", "CUDA_VISIBLE_DEVICES": "GPU-1a2b, GPU-3c4d"}, 2) == ["GPU-1a2b"]


class Lines(list):
    """A stand-in for RunLog: keeps the lines."""

    path = None

    def __call__(self, line: str, console: bool = True) -> None:
        self.append(line)


def fake_nvidia_smi(monkeypatch, calls: list, refused=("MIG-odd",)) -> None:
    listing = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa-0)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb-1)\n"

    def fake_run(cmd, **kw):
        calls.append(cmd)
        if cmd == ["nvidia-smi", "-L"]:
            return subprocess.CompletedProcess(cmd, 0, stdout=listing, stderr="")
        ok = not any(r in " ".join(cmd) for r in refused)
        return subprocess.CompletedProcess(cmd, 0 if ok else 6, stdout=f"table for {cmd}\n" if ok else "", stderr="")

    monkeypatch.setattr(tg.subprocess, "run", fake_run)


def test_nvidia_smi_asks_for_the_gpus_used_then_for_all(monkeypatch) -> None:
    calls: list = []
    fake_nvidia_smi(monkeypatch, calls)
    assert tg.nvidia_smi("-i", "0,1") == "table for ['nvidia-smi', '-i', '0,1']"
    assert tg.nvidia_smi("-i", "MIG-odd") is None and tg.nvidia_smi() == "table for ['nvidia-smi']"
    assert tg.gpu_uuids(None) == ["GPU-aaaa-0", "GPU-bbbb-1"]
    assert tg.gpu_uuids(["1"]) == ["GPU-bbbb-1"] and tg.gpu_uuids(["GPU-bbbb", "0"]) == ["GPU-bbbb-1", "GPU-aaaa-0"]
    assert tg.gpu_uuids(["MIG-odd"]) == []


def test_the_host_line_names_the_machine_by_a_salted_hash(monkeypatch) -> None:
    """host_id is stable for a machine and gives its id away to nobody; CPU runs list no GPUs."""
    calls: list = []
    fake_nvidia_smi(monkeypatch, calls)
    cpu = tg.Dist(0, 1, 0, torch.device("cpu"))
    line = tg.host_line(cpu)
    host = json.loads(line.removeprefix("host: "))
    machine = tg.Path("/etc/machine-id").read_text().strip() if os.path.isfile("/etc/machine-id") else None
    if machine:  # the hash of the salted id, which never appears itself
        assert host["host_id"] == hashlib.sha256(f"speedrun-host-v1:{machine}".encode()).hexdigest()[:16]
        assert machine not in line
    assert re.fullmatch(r"[0-9a-f]{16}", host["host_id"]) and host["gpu_uuids"] == [] and calls == []
    log = Lines()
    plan = tg.RunPlan("smoke", ("smoke", None), tg.PRESETS["smoke"], {}, tg.RunSettings(1, "d", "l", None), [], [])
    run = tg.Run(cpu, {})
    run.plan, run.seed, run.run_id, run.log = plan, 1, "rid", log
    run.header("print(1)\n", {})
    assert log[0] == "print(1)" and log[1] == log[-1] == tg.SEPARATOR and line in log
    assert log.index(line) == 5 and log[4] == "table for ['nvidia-smi']"  # after the nvidia-smi table


def test_one_process_adds_the_windows_as_two_processes_do(monkeypatch) -> None:
    """8 windows on 1 process and 4 + 4 on 2 processes add the same numbers in the same order (GradBuckets)."""
    p = torch.nn.Parameter(torch.zeros(4096))
    gen = torch.Generator().manual_seed(0)
    # magnitudes over many decades, so that the float sum depends on the order of additions
    ws = [torch.randn(4096, generator=gen) * 10.0 ** torch.randint(-6, 7, (4096,), generator=gen) for _ in range(8)]

    def accumulate(windows: range, world_size: int) -> torch.Tensor:
        grads = tg.GradBuckets({"all": [p]})

        def backward(j: int) -> torch.Tensor:
            p.grad.add_(ws[j])  # what backward does: accumulate into .grad in place
            return torch.zeros(())

        grads.accumulate(backward, windows, tg.Dist(0, world_size, 0, torch.device("cpu")))
        return p.grad.clone()

    def in_order(xs: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros(4096)
        for x in xs:
            total += x
        return total

    one = accumulate(range(8), 1)
    halves = in_order(ws[:4]) + in_order(ws[4:])  # what 2 processes' all-reduce adds: rank 0's sum and rank 1's
    assert torch.equal(one, halves) and torch.equal(one, in_order(ws[4:]) + in_order(ws[:4]))
    monkeypatch.setattr(tg.dist, "all_reduce", lambda buf, async_op: None)  # rank 0 of 2, before its all-reduce
    assert torch.equal(accumulate(range(4), 2), in_order(ws[:4]))
    assert not torch.equal(one, in_order(ws))  # the order does matter for these numbers


def test_parameter_counts_match_the_built_model() -> None:
    args = tiny_args(num_layers=4, attention_pattern="LS-L")
    model = tg.GPT(args)
    counts = tg.parameter_counts(args)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["hidden"] == sum(p.numel() for p in model.param_groups()["hidden"])


# ----------------------------------------------------------------------------------------------- the file itself


def test_train_gpt_stays_within_1200_lines() -> None:
    """Every reviewer reads the record file whole and every log embeds it, so train_gpt.py keeps to 1,200 lines."""
    lines = (REPO_ROOT / "train_gpt.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 1200, f"train_gpt.py has {len(lines)} lines: trim it to at most 1,200"


# ----------------------------------------------------------------------------------------------- docs/recipe.md


def test_docs_recipe_cites_the_lines_of_train_gpt() -> None:
    """docs/recipe.md maps train_gpt.py part by part: the parts it cites run from one banner to the line before the
    next and cover the file in order, and each definition it cites (`Name` or `Class.method`) starts on its line."""
    doc = (REPO_ROOT / "docs" / "recipe.md").read_text(encoding="utf-8")
    lines = (REPO_ROOT / "train_gpt.py").read_text(encoding="utf-8").splitlines()
    banners = [i + 1 for i, line in enumerate(lines) if re.fullmatch(r"# (-|=){50,}", line)]
    parts = re.findall(r"\| \[([^]`]+)\]\(\.\./train_gpt\.py#L(\d+)-L(\d+)\) \| (\d+)–(\d+) \|", doc)
    assert [int(first) for _, first, *_ in parts] == [1, *banners], "the parts must start at line 1 and each banner"
    assert lines[banners[-1] - 1].startswith("# ====") and all(lines[b - 1].startswith("# ---") for b in banners[:-1])
    ends = [b - 1 for b in banners] + [len(lines)]
    for (title, first, last, shown_first, shown_last), end in zip(parts, ends, strict=True):
        assert (int(last), shown_first, shown_last) == (end, first, last), f"{title}: lines {first}-{end}"
        assert int(first) == 1 or lines[int(first)].startswith(f"# {title}:"), f"{title} is not the banner's title"
    cited = re.findall(r"\[`([\w.]+)`\]\(\.\./train_gpt\.py#L(\d+)\)", doc)
    assert len(cited) >= 15
    for name, line in cited:
        *owner, leaf = name.split(".")
        at = lines[int(line) - 1]
        if owner:  # a method: indented, and the nearest class above it is its class
            above = next(ln for ln in reversed(lines[: int(line) - 1]) if ln.startswith("class "))
            assert re.match(rf"    def {leaf}\(", at) and above.startswith(f"class {owner[0]}"), (name, line, at)
        else:
            assert re.match(rf"(def|class) {leaf}\b|{leaf}\b[^=(]*=", at), (name, line, at)
