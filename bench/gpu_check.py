"""The record recipe on one GPU, one command, under 8 minutes on an H100 or H200 (or a reduced mode on CPU).

    bench/gpu_check.sh                         # one H100/H200; FineWeb shards in DATA_PATH (default data/fineweb10B)
    python bench/gpu_check.py --cpu-smoke      # the reduced mode: tiny model, synthetic shards, no compile (the tests)

It imports train_gpt.py and runs its own functions (build_model, build_optimizers, warm_up, train_step,
evaluate, TrainWindows; the model compiled as Run.prepare compiles it) in one process, on the `short` preset's full global batch: 8 windows of
65,536 tokens per step as 8 accumulation steps, then the optimizer step of a one-process run. It prints:

1. versions: Python, PyTorch, CUDA, Triton, and the GPU;
2. the GPU's dense bf16 matmul rate, measured: 8192 x 8192 x 8192 products timed between device synchronisations;
3. the FP8 head op against an fp32 matmul (its fake against the real op) and the block masks against the dense
   rule (on CUDA also compiled FlexAttention forward and backward against fp32 attention); each part prints when
   it ends and rewrites the JSON (--json, $OUT/gpu_check.json), and a failing part is printed and the next runs;
4. with the FP8 head on (the record), then off: the warm-up (compilation and 2 dummy steps) and the compilation alone (the
   warm-up less 2 timed steps), the mean step time over 6 steps at the window of mid-run (step 696 of 1393),
   tokens/s, MFU against the measured rate and against the nominal 989 TFLOP/s of an H100 SXM (dense bf16), and
   peak memory (the CUDA allocator's);
5. an eval-mode pass and compiled vs eager at 8,192-token windows (CUDA); with FineWeb shards: the val loss at step 0 and at the record's validation steps (125, 250, ...)
   after training from step 0 on the real schedule (FP8 head on), as many steps as the time budget leaves room
   for, next to the 2025-01-16 record's curve. Without FineWeb shards it says so and stops before this part:
   other tokens give other losses, so the comparison would mean nothing. (Step times then run on random tokens.)

FLOPs per trained token, counted from the model (forward and backward, what MFU counts):

    6 * N_mm  +  sum over attention layers of  12 * H * Dh * K(w)

N_mm: the parameters of every matmul, the hidden matrices (Muon's) and the lm_head (padded vocabulary x width);
the embedding and value-embedding tables are lookups, not matmuls. 6 = 2 (the forward's multiply-adds) + 4 (the
backward's input and weight gradients). Attention, per layer with attention and per token: q.k and p.v over K keys,
2 * Dh * K FLOPs each per head forward, twice that backward: 12 * H * Dh * K. K(w) is the mean number of keys a
query of a 65,536-token window sees under the causal sliding window of w blocks of 128 tokens (long layers:
w = train_gpt.window_blocks(step); short ones: max(w // 2, 1)), counted without documents: the document mask lets
real text attend to fewer keys, so this is the most attention work a step can do. The FP8 head's matmul counts as
bf16 FLOPs: MFU is against the bf16 rate either way. Step times are taken at mid-run's window (7 blocks), whose
attention cost is near the mean over a run.

Exit status 0 when every part ran; 1 on any error, printed whole (a GPU-only failure is a failure, never a skip);
2 when it cannot start (no CUDA device without --cpu-smoke).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import train_gpt as tg  # noqa: E402

NOMINAL_H100_BF16 = 989e12  # H100 SXM, dense bf16 (the datasheet's 1,979 TFLOP/s is with 2:4 sparsity)
# The 2025-01-16 record's val curve (179.5 s on 8x H100, 1,393 steps): the community log
# records/track_1_short/2025-01-16_Sub3Min/1d3bd93b-a69e-4118-aeb8-8184239d7566.txt of modded-nanogpt.
RECORD_CURVE = {
    0: 10.8258,
    125: 4.4043,
    250: 3.9863,
    375: 3.7856,
    500: 3.6643,
    625: 3.5831,
    750: 3.5286,
    875: 3.4772,
    1000: 3.4151,
    1125: 3.3637,
    1250: 3.3164,
    1375: 3.2820,
    1393: 3.2785,
}


@dataclass(frozen=True)
class Mode:
    """What a check runs: the real one on a GPU, or the reduced one on CPU."""

    name: str
    args: tg.Hyperparameters
    data_path: str
    device: torch.device
    matmul_n: int  # side of the square bf16 matmul that measures the device's rate
    matmul_reps: int
    warmup_steps: int
    timed_steps: int
    timing_step: int  # the step whose schedule (attention window) the timed steps run
    record: dict[int, float] | None  # the curve the val losses stand next to; None: no record to compare with


def gpu_mode(data_path: str) -> Mode:
    args = tg.PRESETS["short"]
    return Mode(
        "gpu", args, data_path, torch.device("cuda", 0), 8192, 100, 2, 6, args.num_iterations // 2, RECORD_CURVE
    )


def cpu_mode(data_path: str) -> Mode:
    """The smoke preset (compile off) cut to 6 blocks and one validation window per process slot: every code path of
    the GPU check in seconds. FP8 with 256-token windows needs a gradient scale of its own (the logits' gradients
    grow as 1 / tokens per window): 2^29 x 256 / 65,536 = 2^21."""
    smoke = tg.PRESETS["smoke"]
    args = dataclasses.replace(
        smoke,
        num_layers=6,
        attention_pattern="LS-SSL",
        val_tokens=smoke.windows_per_step * smoke.val_seq_len,
        fp8_grad_scale=2.0**21,
    )
    return Mode("cpu-smoke", args, data_path, torch.device("cpu"), 256, 3, 1, 1, args.num_iterations // 2, None)


def say(line: str = "") -> None:
    print(line, flush=True)


# ----------------------------------------------------------------------------------------------- measurements


def synchronize(device: torch.device) -> None:
    tg.synchronize(device)


def versions(mode: Mode) -> dict:
    info = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda)
    if mode.device.type == "cuda":
        import triton  # on a GPU machine its absence is an error like any other: torch.compile needs it

        props = torch.cuda.get_device_properties(mode.device)
        info.update(
            triton=triton.__version__,
            gpu=props.name,
            capability=f"sm_{props.major}{props.minor}",
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
        )
    else:
        try:
            import triton

            info["triton"] = triton.__version__
        except ImportError:
            info["triton"] = None
        info["gpu"] = None
    return info


def matmul_rate(mode: Mode) -> float:
    """FLOP/s of a dense bf16 n x n x n matmul on the device, measured (the best of three timings)."""
    n, device = mode.matmul_n, mode.device
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=gen)
    out = torch.empty(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(3):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(mode.matmul_reps):
            torch.mm(a, b, out=out)
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 * mode.matmul_reps / best


def mean_keys(window_blocks: int, seq_len: int, block_size: int) -> float:
    """Mean keys per query under the causal sliding window of window_blocks blocks (no documents)."""
    q = np.arange(seq_len)
    return float(np.mean(q % block_size + 1 + block_size * np.minimum(window_blocks - 1, q // block_size)))


def flops_per_token(args: tg.Hyperparameters, step: int) -> dict:
    """The formula of the module docstring, at the attention windows of `step`."""
    counts = tg.parameter_counts(args)
    matmul_params = counts["hidden"] + counts["head"]
    long = tg.window_blocks(step, args)
    windows = {"L": long, "S": max(long // 2, 1)}
    attention = sum(
        12 * args.num_heads * args.head_dim * mean_keys(windows[c], args.train_seq_len, args.block_size)
        for c in args.attention_pattern
        if c != "-"
    )
    return dict(matmul_params=matmul_params, matmul=6 * matmul_params, attention=attention, window_blocks=long)


def peak_memory_mib(device: torch.device) -> tuple[int, int]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) // 2**20, torch.cuda.max_memory_reserved(device) // 2**20
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # the process's peak: no allocator on CPU
    return rss, rss


# ----------------------------------------------------------------------------------------------- data


class DataOfEarlierSteps:
    """The windows train_step asks for at step s, read from step s - shift: the timed steps run mid-run's schedule
    on the data of the run's first steps, which lie in the first train shard."""

    def __init__(self, windows: tg.TrainWindows, shift: int):
        self.windows, self.shift = windows, shift

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        step, j = key
        return self.windows[step - self.shift, j]


@dataclass
class Data:
    fineweb: bool  # real FineWeb shards: the val losses mean something
    note: str
    train: tg.TrainWindows | None = None
    val: tg.TokenWindows | None = None
    steps: int = 0  # how many steps of the schedule the train shards feed


def find_data(mode: Mode) -> Data:
    """The shards at the mode's data_path. On GPU only FineWeb counts (fineweb_val_*/fineweb_train_* in GPT-2's
    vocabulary); the CPU mode reads its synthetic shards the same way, with no record to compare with."""
    args, folder = mode.args, Path(mode.data_path)
    names = [p.name for p in folder.glob("*.bin")] if folder.is_dir() else []
    fineweb = any(n.startswith("fineweb_val_") for n in names) and any(n.startswith("fineweb_train_") for n in names)
    if mode.record is not None and not fineweb:
        return Data(
            False,
            f"no FineWeb shards at {folder} (DATA_PATH): step times run on random tokens, and the val-loss "
            "comparison with the record is left out, since other tokens give other losses. For it: "
            "`python data/cached_fineweb10B.py 9`, or DATA_PATH=<a folder of the FineWeb shards>",
        )
    val_shards = tg.plan_shards(args, mode.data_path, "val", args.val_tokens + 1)
    fix = tg.data_fix(args, mode.data_path)
    batch = args.windows_per_step * args.train_seq_len
    fed = sum(tg.steps_in_shard(tg.read_shard_header(p, fix), batch) for p in sorted(folder.glob("*_train_*.bin")))
    steps = min(fed, args.num_iterations)
    if steps < 1:
        raise tg.SpeedrunError(f"the train shards in {folder} feed no step of {batch + 1:,} tokens; {fix}.")
    train_shards = tg.plan_shards(dataclasses.replace(args, num_iterations=steps), mode.data_path, "train")
    val_hash = tg.describe_data(val_shards[:1], args, mode.data_path)["shards"][0]["sha256"]
    kind = "FineWeb" if fineweb else "synthetic (no record to compare with)"
    return Data(
        fineweb,
        f"{kind} shards at {folder}: {len(train_shards)} train shard(s) feeding {steps} steps; "
        f"{val_shards[0].path.name} sha256 {val_hash[:16]}...",
        tg.TrainWindows(train_shards, args.train_seq_len, args.windows_per_step, mode.device),
        tg.TokenWindows(val_shards, args.val_seq_len, args.val_tokens + 1, mode.device),
        steps,
    )


# ----------------------------------------------------------------------------------------------- the checks


def timed_steps(model, opts, mode: Mode, args: tg.Hyperparameters, d: tg.Dist, data: Data) -> float:
    """Seconds per optimizer step, the mean over mode.timed_steps steps at mode.timing_step's schedule."""
    first, n = mode.timing_step, mode.timed_steps
    windows, dummy = None, None
    if data.train is not None and data.steps >= n:
        windows = DataOfEarlierSteps(data.train, first)
    else:
        gen = torch.Generator().manual_seed(1)
        dummy = tg.inputs_and_targets(
            torch.randint(0, args.vocab_size, (args.train_seq_len + 1,), generator=gen), d.device
        )
    synchronize(d.device)
    started = time.perf_counter()
    for step in range(first, first + n):
        loss = tg.train_step(step, model, opts, windows, args, d, dummy=dummy)
    synchronize(d.device)
    seconds = (time.perf_counter() - started) / n
    if not math.isfinite(loss.item()):
        raise RuntimeError(f"the training loss is {loss.item()} after the timed steps")
    return seconds


def check_config(mode: Mode, fp8: bool, rate: float, data: Data, d: tg.Dist, keep: bool) -> tuple[dict, tuple]:
    """Build, compile and warm up the recipe with the FP8 head on or off, then time its steps. keep: return the
    model (in its initial state again) for the val-loss run; else free it."""
    args = dataclasses.replace(mode.args, fp8_head=fp8, warmup_steps=mode.warmup_steps)
    if d.cuda:
        torch.cuda.reset_peak_memory_stats(d.device)
    raw = tg.build_model(args, 0, d)
    model = torch.compile(raw, dynamic=False, fullgraph=True) if args.compile else raw  # as Run.prepare compiles
    opts = tg.build_optimizers(raw, args, d, tg.Muon, tg.GradBuckets)
    started = time.perf_counter()
    tg.warm_up(model, list(raw.state_dict().values()), opts, args, 0, d, log=lambda line: None)
    synchronize(d.device)
    warmup_s = time.perf_counter() - started
    saved = None
    if keep:  # the initial state, to go back to after the timed steps for the val-loss run (as warm_up does)
        weights = [t.to("cpu", copy=True) for t in raw.state_dict().values()]
        saved = weights, copy.deepcopy([opts[0].state_dict(), opts[1].state_dict()])
    step_s = timed_steps(model, opts, mode, args, d, data)
    tokens = args.windows_per_step * args.train_seq_len
    flops = flops_per_token(args, mode.timing_step)
    step_flops = tokens * (flops["matmul"] + flops["attention"])
    allocated, reserved = peak_memory_mib(d.device)
    result = dict(
        fp8_head=fp8,
        warmup_s=round(warmup_s, 2),
        compile_s=round(max(warmup_s - mode.warmup_steps * step_s, 0.0), 2),
        step_ms=round(1000 * step_s, 2),
        tokens_per_s=round(tokens / step_s),
        tflops=round(step_flops / step_s / 1e12, 2),
        mfu_measured=round(step_flops / step_s / rate, 4),
        mfu_nominal_h100=round(step_flops / step_s / NOMINAL_H100_BF16, 4),
        peak_allocated_mib=allocated,
        peak_reserved_mib=reserved,
    )
    say(
        f"FP8 head {'on ' if fp8 else 'off'}: warm-up {warmup_s:.1f} s "
        + (
            f"(compilation ~{result['compile_s']:.1f} s + {mode.warmup_steps} steps)"
            if args.compile
            else "(no compile)"
        )
        + f"; step {result['step_ms']:.1f} ms, {result['tokens_per_s']:,} tokens/s, "
        f"{result['tflops']:.1f} TFLOP/s = MFU {100 * result['mfu_measured']:.1f}% of measured, "
        f"{100 * result['mfu_nominal_h100']:.1f}% of H100 nominal; peak memory {allocated:,} MiB allocated, "
        f"{reserved:,} MiB reserved"
    )
    if not keep:
        del model, raw, opts
        if d.cuda:
            torch.cuda.empty_cache()
        return result, ()
    with torch.no_grad():
        for t, w in zip(raw.state_dict().values(), saved[0], strict=True):
            t.copy_(w)
    opts[0].load_state_dict(saved[1][0])
    opts[1].load_state_dict(saved[1][1])
    opts[2].zero()
    return result, (model, raw, opts, args)


def val_run(mode: Mode, kept: tuple, data: Data, d: tg.Dist, step_s: float, deadline: float) -> list[dict]:
    """Train from step 0 on the real schedule; validate at step 0 and at the record's validation steps while the
    next one fits before the deadline (estimated from the measured step time)."""
    model, _, opts, args = kept
    # the CPU mode: a few points of its own schedule (CPU float8 matmuls are slow: ~5 s a step here)
    points = [s for s in (mode.record or [0, 1, 2]) if s <= data.steps]
    tokens = args.windows_per_step * args.train_seq_len
    say(f"val loss: training from step 0 on the real schedule ({args.num_iterations} steps), FP8 head on")
    say(f"  {'step':>5}  {'ours':>8}  {'record':>8}  {'ours - record':>13}  {'time':>7}")
    # a validation is a forward pass over val_tokens, about a third of a training step's work per token; the
    # first one also compiles the eval graph: allow a minute for that
    val_s = args.val_tokens / tokens * step_s / 3
    rows, step = [], 0
    started = time.perf_counter()
    for i, point in enumerate(points):
        need = (point - step) * step_s + 1.5 * val_s + (60.0 if i == 0 else 0.0)
        if time.perf_counter() + need > deadline:
            say(f"  stopped before step {point}: its validation would end past the time budget (--budget-s)")
            break
        while step < point:
            tg.train_step(step, model, opts, data.train, args, d)
            step += 1
        t = time.perf_counter()
        loss = tg.evaluate(model, data.val, args, d, point)
        if i > 0:  # measured, compiling nothing
            val_s = time.perf_counter() - t
        if not math.isfinite(loss):
            raise RuntimeError(f"the val loss is {loss} at step {point}")
        record = mode.record.get(point) if mode.record else None
        rows.append(dict(step=point, val_loss=round(loss, 4), record=record))
        diff = f"{loss - record:+13.4f}" if record is not None else f"{'-':>13}"
        say(
            f"  {point:>5}  {loss:8.4f}  {record if record is not None else '-':>8}  {diff}  "
            f"{time.perf_counter() - started:6.0f}s"
        )
    say(f"  ({tokens:,} tokens per step; the record's curve: 8x H100, its own seed: expect a few 0.01 of scatter)")
    return rows


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def fp8_check(mode: Mode) -> dict:
    """The FP8 head op alone at the record's head shape (T x 768 @ 50304 x 768), eager and with its compiled casts,
    against an fp32 matmul; its fake (what torch.compile traces) against the real op's dtypes, shapes and strides."""
    cuda = mode.device.type == "cuda"
    T, K, N = (8192, 768, 50304) if cuda else (64, 128, 256)
    g = torch.Generator(device=mode.device).manual_seed(0)
    x = torch.nn.functional.rms_norm(torch.randn(T, K, device=mode.device, generator=g), (K,)).bfloat16()
    w = torch.randn(N, K, device=mode.device, generator=g) * 0.05
    grad = (torch.randn(T, N, device=mode.device, generator=g) * 2**-17).bfloat16()
    scales = (2.0, 32.0, 2.0**29)
    torch.library.opcheck(tg.fp8_mm, (x, w, *scales), test_utils=("test_faketensor", "test_autograd_registration"))
    result = {}
    for compiled in (False, True) if cuda else (False,):
        xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
        out = tg.fp8_mm(xi, wi, *scales, compiled)[0]
        out.backward(grad)
        x32, w32 = x.float().requires_grad_(), w.clone().requires_grad_()
        ref = x32 @ w32.T
        ref.backward(grad.float())
        errs = dict(out=rel_err(out, ref), grad_x=rel_err(xi.grad, x32.grad), grad_w=rel_err(wi.grad, w32.grad))
        layout = (out.dtype, out.is_contiguous(), xi.grad.dtype, wi.grad.dtype)
        if layout != (torch.bfloat16, True, torch.bfloat16, torch.float32):
            raise RuntimeError(f"fp8_mm ({'compiled' if compiled else 'eager'} casts): dtypes/layout {layout}")
        if errs["out"] > 0.08 or errs["grad_x"] > 0.12 or errs["grad_w"] > 0.12:
            raise RuntimeError(f"fp8_mm ({'compiled' if compiled else 'eager'} casts) is off the fp32 matmul: {errs}")
        result["compiled" if compiled else "eager"] = {k: round(v, 4) for k, v in errs.items()}
    say(f"FP8 op: {T} x {K} @ {N} x {K}.T, relative error vs fp32 (fwd, grad x, grad w): {result}; fake matches real")
    return result


def flex_check(mode: Mode) -> dict:
    """The block mask on the device against the dense rule, block by block; on CUDA, compiled FlexAttention forward
    and backward (bf16, as the model runs it) against fp32 attention with the dense mask."""
    bs, T, H, D = 128, 1024, 6, 128
    device = mode.device
    tokens = torch.randint(0, 9, (T,), generator=torch.Generator().manual_seed(0)).to(device)
    tokens[torch.tensor([0, 100, 130, 131, 300, 383, 384, 700], device=device)] = 9
    docs, n, pos = (tokens == 9).cumsum(0), T // bs, torch.arange(T, device=device)
    worst = {}
    for w in (1, 2, 3, 8):
        window = torch.tensor(w, dtype=torch.int32, device=device)
        bm = tg.document_window_block_mask(docs, window, bs)
        dense = tg.document_causal_window(docs, window, bs)(0, 0, pos[:, None], pos[None, :])
        tiles = dense.view(n, bs, n, bs).permute(0, 2, 1, 3).flatten(2)
        want_full, want_any = tiles.all(-1), tiles.any(-1)
        got = torch.zeros(2, n, n, dtype=torch.bool, device=device)
        for kind, (num, idx) in enumerate(
            [(bm.kv_num_blocks, bm.kv_indices), (bm.full_kv_num_blocks, bm.full_kv_indices)]
        ):
            for q in range(n):
                got[kind, q, idx[0, 0, q, : num[0, 0, q]].long()] = True
        if not (torch.equal(got[1], want_full) and torch.equal(got[0] | got[1], want_any)):
            raise RuntimeError(f"the block mask of window {w} blocks disagrees with the dense rule on {device}")
        if device.type != "cuda":
            continue
        attend = tg.compiled_once(tg.flex_attention)
        q, k, v = (torch.randn(1, H, T, D, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        out = attend(q, k, v, block_mask=bm, scale=0.12)
        q32, k32, v32 = (t.detach().float().requires_grad_() for t in (q, k, v))
        ref = torch.softmax((q32 @ k32.mT * 0.12).masked_fill(~dense, float("-inf")), dim=-1) @ v32
        g = torch.randn_like(ref)
        grads, refs = torch.autograd.grad(out, (q, k, v), g.bfloat16()), torch.autograd.grad(ref, (q32, k32, v32), g)
        errs = [rel_err(out, ref)] + [rel_err(a, b) for a, b in zip(grads, refs, strict=True)]
        worst[w] = round(max(errs), 4)
        if max(errs) > 0.03:
            raise RuntimeError(f"compiled FlexAttention, window {w}: relative errors (out, dq, dk, dv) {errs}")
    say(
        "FlexAttention: block masks match the dense rule"
        + (f"; compiled fwd+bwd vs fp32, worst relative error by window: {worst}" if worst else " (kernel: CUDA only)")
    )
    return dict(block_mask="ok", kernel_worst_rel_err=worst)


def compile_check(mode: Mode, d: tg.Dist) -> dict:
    """The short model at 8,192-token windows, FP8 head on, compiled (as Run.prepare compiles it) against eager:
    one forward and backward from weights made non-zero (at init the zero head hides every other gradient)."""
    args = dataclasses.replace(mode.args, train_seq_len=8192, val_seq_len=8192, fp8_grad_scale=2.0**26, compile=True)
    raw = tg.build_model(args, 0, d)
    with torch.no_grad():
        for p in raw.parameters():
            if p.ndim >= 2 and not p.any():
                p.normal_(std=0.02)
    model = torch.compile(raw, dynamic=False, fullgraph=True)
    gen = torch.Generator().manual_seed(2)
    inputs, targets = tg.inputs_and_targets(torch.randint(0, args.vocab_size, (8193,), generator=gen), d.device)
    window = torch.tensor(7, dtype=torch.int32, device=d.device)
    runs = []
    for fn in (raw, model):
        raw.zero_grad(set_to_none=True)
        started = time.perf_counter()
        loss = fn(inputs, targets, window)
        loss.backward()
        synchronize(d.device)
        runs.append(
            (
                loss.item(),
                torch.cat(
                    [
                        (p.grad if p.grad is not None else torch.zeros_like(p)).float().flatten()
                        for p in raw.parameters()
                    ]
                ),
                time.perf_counter() - started,
            )
        )
    (eager, g_eager, _), (compiled, g_compiled, seconds) = runs
    err = rel_err(g_compiled, g_eager)
    say(
        f"compiled model (8,192 tokens, FP8 head): loss {compiled:.4f} vs eager {eager:.4f}; gradients' relative "
        f"difference {err:.4f}; first compiled forward+backward {seconds:.1f} s"
    )
    if not (math.isfinite(compiled) and abs(compiled - eager) < 0.01 * abs(eager) and err < 0.1):
        raise RuntimeError(f"the compiled model disagrees with eager: loss {compiled} vs {eager}, gradients {err}")
    return dict(loss_compiled=compiled, loss_eager=eager, grad_rel_diff=round(err, 4), first_step_s=round(seconds, 1))


def eval_check(kept: tuple, d: tg.Dist) -> dict:
    """One validation window through the compiled model in eval mode (the bf16 head: its own graph)."""
    model, _, _, args = kept
    gen = torch.Generator().manual_seed(3)
    inputs, targets = tg.inputs_and_targets(
        torch.randint(0, args.vocab_size, (args.val_seq_len + 1,), generator=gen), d.device
    )
    window = tg.window_tensor(args.num_iterations, args, d)
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(2):
            started = time.perf_counter()
            loss = model(inputs, targets, window).item()
            times.append(time.perf_counter() - started)
    model.train()
    vocab = -(-args.vocab_size // 128) * 128  # the padded vocabulary of the head
    if not abs(loss - math.log(vocab)) < 1e-3:  # the model is back at its init: a zero head gives ln(vocab) exactly
        raise RuntimeError(f"the eval-mode loss is {loss}, not ln({vocab}) = {math.log(vocab):.4f} of a zero head")
    say(
        f"eval mode (bf16 head): loss {loss:.4f} on random tokens; first call {times[0]:.1f} s, then {1000 * times[1]:.0f} ms"
    )
    return dict(loss=round(loss, 4), first_s=round(times[0], 2), window_ms=round(1000 * times[1], 1))


class Results:
    """Every part's outcome as it ends: printed, and the JSON so far rewritten to each path (a timeout keeps them)."""

    def __init__(self, paths: list[Path], deadline: float):
        self.data: dict = dict(parts={}, failed=[])
        self.paths, self.deadline = paths, deadline

    def write(self) -> None:
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.data, indent=1, default=str) + "\n", encoding="utf-8")

    def part(self, name: str, need_s: float, fn):
        """Run fn() unless fewer than need_s seconds are left; a failure is printed whole and the next part runs."""
        left = self.deadline - time.perf_counter()
        if left < need_s:
            say(f"[{name}] skipped: {left:.0f} s left of the budget, it needs ~{need_s:.0f} s")
            self.data["parts"][name] = dict(status="skipped", seconds_left=round(left))
            self.write()
            return None
        say(f"[{name}] ...")
        started = time.perf_counter()
        try:
            value = fn()
        except Exception as e:  # a GPU-only failure is a failure: shown whole, counted in the exit status
            traceback.print_exc()
            sys.stderr.flush()
            say(f"[{name}] FAILED after {time.perf_counter() - started:.1f} s: {type(e).__name__}: {str(e)[:500]}")
            self.data["parts"][name] = dict(status="failed", error=f"{type(e).__name__}: {e}"[:2000])
            self.data["failed"].append(name)
            self.write()
            return None
        say(f"[{name}] ok in {time.perf_counter() - started:.1f} s")
        self.data["parts"][name] = dict(status="ok", seconds=round(time.perf_counter() - started, 1))
        self.write()
        return value


def environment() -> dict:
    """What the machine offers beside the versions: the driver's view, NCCL and cuDNN, allocator and compile settings."""
    info = dict(nccl=None, cudnn=torch.backends.cudnn.version(), gpus=torch.cuda.device_count())
    if torch.cuda.is_available():
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
        info["arch_list"] = torch.cuda.get_arch_list()
    keys = ("CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "TORCHINDUCTOR_CACHE_DIR", "OMP_NUM_THREADS")
    info["env"] = {k: os.environ.get(k) for k in keys}
    info["nvidia_smi"] = tg.nvidia_smi() or "nvidia-smi: not available"
    say(info["nvidia_smi"])
    say(f"NCCL {info['nccl']}, cuDNN {info['cudnn']}, {info['gpus']} GPU(s); environment {info['env']}")
    return info


def run_check(mode: Mode, budget_s: float, paths: list[Path] | None = None) -> dict:
    started = time.perf_counter()
    deadline = started + budget_s
    res = Results(paths or [], deadline)
    d = tg.Dist(0, 1, 0, mode.device)
    if d.cuda:
        torch.cuda.set_device(mode.device)
    args = mode.args
    say(
        f"gpu_check ({mode.name}): the {'short' if mode.record else 'smoke'} preset on one process, full global batch: "
        f"{args.windows_per_step} windows x {args.train_seq_len:,} tokens = "
        f"{args.windows_per_step * args.train_seq_len:,} tokens per step in {args.windows_per_step} accumulation steps"
    )
    info = versions(mode)
    res.data.update(mode=mode.name, versions=info)
    res.data["environment"] = res.part("environment", 0, environment)
    say(
        f"versions: Python {info['python']}, PyTorch {info['torch']}, CUDA {info['cuda']}, Triton {info['triton']}"
        + (f"; GPU {info['gpu']} ({info['capability']}, {info['gpu_memory_gib']} GiB)" if info["gpu"] else "; CPU")
    )
    if d.cuda and not any(name in info["gpu"] for name in ("H100", "H200")):
        say(f"warning: this check is sized for an H100 or H200, not a {info['gpu']}: the budget may not hold")
    rate = res.part("matmul", 0, lambda: matmul_rate(mode)) or math.nan
    res.data["matmul_tflops"] = round(rate / 1e12, 2)
    say(
        f"bf16 matmul: {rate / 1e12:.1f} TFLOP/s measured ({mode.matmul_n}^3); nominal H100 SXM dense bf16: "
        f"{NOMINAL_H100_BF16 / 1e12:.0f} TFLOP/s"
    )
    res.data["fp8_op"] = res.part("fp8_op", 30, lambda: fp8_check(mode))
    res.data["flex_attention"] = res.part("flex_attention", 60, lambda: flex_check(mode))
    data = find_data(mode)  # a setup mistake (SpeedrunError): stops the check with its message
    res.data["data"] = dict(fineweb=data.fineweb, note=data.note)
    say(f"data: {data.note}")
    flops = flops_per_token(args, mode.timing_step)
    say(
        f"FLOPs per token: 6 x {flops['matmul_params']:,} matmul parameters = {flops['matmul'] / 1e9:.3f} GFLOP, "
        f"+ attention {flops['attention'] / 1e9:.3f} GFLOP at step {mode.timing_step}'s window "
        f"({flops['window_blocks']} blocks of {args.block_size})"
    )
    res.data.update(flops_per_token=flops, configs=[], val=[])
    cuda = d.cuda
    # the record's configuration first (FP8 head on): compilation, step time and peak memory
    on = res.part("fp8_head_on", 150 if cuda else 0, lambda: check_config(mode, True, rate, data, d, keep=True))
    if on is not None:
        res.data["configs"].append(on[0])
        res.data["eval"] = res.part("eval", 60 if cuda else 0, lambda: eval_check(on[1], d))
        if data.train is not None:
            step_s = on[0]["step_ms"] / 1000
            res.data["val"] = res.part("val_loss", 0, lambda: val_run(mode, on[1], data, d, step_s, deadline)) or []
        else:
            say("val loss: left out, no FineWeb shards (see the data line above)")
        del on
    if cuda:  # whatever the part left, failed or not, before the next model is built
        torch.cuda.empty_cache()
    off = res.part("fp8_head_off", 120 if cuda else 0, lambda: check_config(mode, False, rate, data, d, keep=False))
    if off is not None:
        res.data["configs"].append(off[0])
    if cuda:  # compile off in the CPU mode: nothing to compare there
        res.data["compile_vs_eager"] = res.part("compile_vs_eager", 120, lambda: compile_check(mode, d))
    wall = time.perf_counter() - started
    res.data["wall_s"] = round(wall, 1)
    res.write()
    failed = res.data["failed"]
    say(
        f"total wall time: {wall:.0f} s (budget {budget_s:.0f} s); "
        + (f"FAILED: {', '.join(failed)}" if failed else "every part that ran passed")
    )
    return res.data


def synthetic_data(folder: Path, args: tg.Hyperparameters) -> None:
    """Shards for the CPU mode: one train shard feeding the 8 steps it reads, and the val tokens."""
    batch = args.windows_per_step * args.train_seq_len
    cmd = [sys.executable, str(REPO_ROOT / "data" / "synthetic.py"), "--out", str(folder)]
    cmd += ["--vocab-size", str(args.vocab_size), "--train-shards", "1"]
    cmd += ["--shard-tokens", str(8 * batch + 2), "--val-tokens", str(args.val_tokens + 1)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"data/synthetic.py failed (exit status {done.returncode}): {done.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="the reduced mode: tiny model on CPU, no compile")
    parser.add_argument("--data", help="shard folder (default: DATA_PATH, else data/fineweb10B; CPU: synthetic)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="stop validating past this (default 450 s)")
    parser.add_argument(
        "--json", type=Path, help="also write the results as JSON to this file (and $OUT/gpu_check.json)"
    )
    opts = parser.parse_args(argv)
    paths = [opts.json] if opts.json else []
    if os.environ.get("OUT"):  # the device machine's result folder: rewritten after every part
        paths.append(Path(os.environ["OUT"]) / "gpu_check.json")
    if not opts.cpu_smoke and not torch.cuda.is_available():
        print(
            "error: no CUDA device: this check runs on one H100 or H200 (or pass --cpu-smoke for the reduced CPU mode)",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        try:
            if opts.cpu_smoke:
                mode = cpu_mode(opts.data or str(Path(tmp) / "synthetic"))
                if opts.data is None:
                    synthetic_data(Path(mode.data_path), mode.args)
            else:
                mode = gpu_mode(opts.data or os.environ.get("DATA_PATH") or "data/fineweb10B")
            result = run_check(mode, opts.budget_s, paths)
        except tg.SpeedrunError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except Exception:  # a failure anywhere (compilation, FP8 kernels, out of memory) fails the check, loudly
            traceback.print_exc()
            print("error: the GPU check failed; the exception is above", file=sys.stderr)
            return 1
    say(json.dumps(result, default=str))
    if result["failed"]:
        print(
            f"error: the GPU check failed in {', '.join(result['failed'])}; the exceptions are above", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
