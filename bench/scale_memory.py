"""Measure train_scale.py's memory term by term, where it runs, next to `python train_scale.py --plan`.

    python bench/scale_memory.py --preset tiny [--micro-windows K] [--json FILE]      one process (CPU or GPU)
    torchrun --nproc_per_node=N bench/scale_memory.py --preset 1.5b                   N processes of this node

Each process builds the preset as a run does (on the meta device, sharded with FSDP2, each block compiled if the
preset compiles and recomputed in backward if the preset does), then trains three steps on random tokens and reads
its memory at fixed points. bench/bench_scale.py runs it after its timed run; the tests run it on CPU
(tests/scale_worker.py) to hold the plan to the measured peak.

What memory is: on CUDA the caching allocator's bytes (memory_allocated, max_memory_allocated, memory_reserved) and,
for what lies outside it (the CUDA context, NCCL's buffers), the device's used memory (cudaMemGetInfo) less the
allocator's reserve. On CPU the process's resident set (VmRSS), its peak (VmHWM, reset through
/proc/self/clear_refs), with glibc told (mallopt) to map every block of 16 KiB or more apart, so that what is freed
goes back to the system and a phase's peak is that phase's. Counted over the process as it was before the build.

The terms, as `train_scale.plan_memory` names them:
  parameters          the bytes of the weights' local slices (FSDP2's padding included)
  optimizer           the bytes of the optimizer state: Adam's moments, Muon's momentum
  gradients           what freeing the sharded gradients after a step gives back
  fixed               what the process holds beyond these after a step: CPU, the code torch maps on first use and
                      the heap it keeps; CUDA, the allocator's other blocks and what lies outside it (context, NCCL)
  forward_backward    the peak of forward and backward over parameters + optimizer (+ gradients as they come):
                      activations + logits + gathered + unsynced in the plan
  muon                the peak of Muon's step over what the process held when it began
  peak                the peak of the whole step (CPU: resident set; CUDA: allocator peak + what lies outside it)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import train_gpt as tg  # noqa: E402
import train_scale as ts  # noqa: E402

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


class Meter:
    """Bytes in use now, the peak since the last reset, and (CUDA) what lies outside the caching allocator."""

    def __init__(self, d: tg.Dist):
        self.d = d
        if not d.cuda:  # large blocks mapped apart: freed memory leaves the resident set at once
            ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 16 * 1024)

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1024

    def now(self) -> int:
        if self.d.cuda:
            torch.cuda.synchronize(self.d.device)
            return torch.cuda.memory_allocated(self.d.device)
        return self._status("VmRSS")

    def peak(self) -> int:
        if self.d.cuda:
            torch.cuda.synchronize(self.d.device)
            return torch.cuda.max_memory_allocated(self.d.device)
        return self._status("VmHWM")

    def reset(self) -> None:
        if self.d.cuda:
            torch.cuda.synchronize(self.d.device)
            torch.cuda.reset_peak_memory_stats(self.d.device)
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    def outside(self) -> int:
        """CUDA: device memory in use that the caching allocator did not reserve (context, NCCL, ...); CPU: 0."""
        if not self.d.cuda:
            return 0
        free, total = torch.cuda.mem_get_info(self.d.device)
        return total - free - torch.cuda.memory_reserved(self.d.device)


def tensor_bytes(tensors) -> int:
    """Bytes of the storages behind these tensors (DTensors: their local slices, FSDP2's padding included)."""
    storages = {}
    for t in tensors:
        storage = ts.local(t).untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def measure(
    args: tg.Hyperparameters, d: tg.Dist, micro_windows: int = 1, recompute: bool = False, steps: int = 3
) -> dict[str, int]:
    """The terms above, in bytes, for this rank, read at the last of `steps` (>= 2) training steps; the model is
    built, trained and dropped."""
    assert steps >= 2, "the first step creates the optimizer state: the terms are read at a later one"
    meter = Meter(d)
    meter.reset()
    base = meter.now()  # CPU: the process after its imports; CUDA: the allocator's bytes (what lies outside is fixed)
    model = ts.build_model(args, seed=0, d=d)
    ts.prepare_blocks(model, args, recompute)
    opts = ts.build_optimizers(model, args, d, micro_windows)
    muon, marks = opts[1], {}
    muon_step = muon.step

    def timed_muon_step() -> None:  # forward and backward are over when Muon steps: read their peak, then Muon's
        marks["forward_backward"] = meter.peak()
        start = meter.now()
        meter.reset()
        muon_step()
        marks["muon"] = meter.peak() - start

    muon.step = timed_muon_step
    gen = torch.Generator().manual_seed(d.rank)
    tokens = torch.randint(0, args.vocab_size, (args.train_seq_len + 1,), generator=gen)
    dummy = tg.inputs_and_targets(tokens, d.device)
    result: dict[str, int] = {}
    for step in range(steps):  # the first creates the optimizer state; the later ones are measured alike
        held = meter.now()
        meter.reset()
        tg.train_step(step, model, opts, None, args, d, dummy=dummy)
        steady = meter.now()
        step_peak = max(marks["forward_backward"], meter.peak())
        opts[2].zero()
        without_grads = meter.now()
        parameters = tensor_bytes(model.parameters())
        optimizer = tensor_bytes(
            t for state in (*opts[0].state.values(), *opts[1].state.values()) for t in state.values()
        )
        result = dict(
            parameters=parameters,
            gradients=steady - without_grads,
            optimizer=optimizer,
            fixed=without_grads - base - parameters - optimizer + meter.outside(),
            forward_backward=marks["forward_backward"] - held,
            muon=marks["muon"],
            peak=step_peak - base + meter.outside(),
        )
        if d.cuda:
            result.update(reserved=torch.cuda.max_memory_reserved(d.device), outside=meter.outside())
    del model, opts
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="tiny", help="a train_scale.py preset (default tiny)")
    parser.add_argument("--overrides", default="{}", help="JSON object of Hyperparameters fields to change")
    parser.add_argument("--micro-windows", type=int, help="windows per micro-step (default: the plan's choice)")
    parser.add_argument("--json", type=Path, help="rank 0 writes {rank: terms} to this file")
    opts = parser.parse_args(argv)
    env = {"SPEEDRUN_PRESET": opts.preset, "SPEEDRUN_OVERRIDES": opts.overrides}
    try:
        _, args, _ = tg.resolve_config(env, ts.PRESETS)
    except tg.SpeedrunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as train_scale.py runs
    d = tg.setup_distributed()
    recompute = ts.PRESET_SETTINGS[opts.preset].get("activation_checkpointing", False)
    device = "cuda" if d.cuda else "cpu"
    k = opts.micro_windows or ts.choose_micro_windows(args, d.world_size, device, recompute, ts.device_memory(d))
    if problem := ts.micro_windows_problem(k, args, d.world_size):
        print(f"error: {problem}.", file=sys.stderr)
        return 2
    terms = measure(args, d, k, recompute)
    every = [terms]
    if d.world_size > 1:
        every = [None] * d.world_size
        dist.all_gather_object(every, terms)
    if d.rank == 0:
        plan = ts.plan_memory(args, d.world_size, device, recompute, k)
        print(ts.plan_vs_measured(plan, every[0], f"{opts.preset} on {d.world_size} x {device}, {k} window(s)"))
        if opts.json:
            opts.json.write_text(json.dumps(dict(micro_windows=k, ranks=every), indent=1) + "\n", encoding="utf-8")
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    os._exit(status)  # as train_gpt.py: gloo sometimes aborts in C++ teardown after a finished run
