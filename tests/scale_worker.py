"""What tests/test_scale_components.py runs in fresh processes, once on 1 process (`python`) and once on 2
(`torchrun --nproc_per_node=2`), to measure train_scale.py where only a fresh process can: memory.

    python tests/scale_worker.py OUT [CASE]     (or under torchrun)

Each process writes OUT/<case>_rank<R>_of<W>.json, and rank 0 OUT/init_of<W>.pt:
- init: the tiny preset built on the meta device and initialised slice by slice, gathered whole (the test compares
  1 and 2 processes, and the statistics with train_gpt.GPT's own init);
- build_mib: the peak resident memory of build_model for MEMORY_MODEL, over what the process held before;
- terms: bench/scale_memory.py's measurement, term by term, of CASE (default 30m/1: MEMORY_MODEL, about 30M
  parameters, one window per micro-step; tiny/1, tiny/4: the tiny preset), first thing in the fresh process: what
  train_scale.plan_memory estimates for "cpu". Given a CASE the worker measures only that.
- shapes: {weight: [local shape, the shape train_scale.shard_rows says]} for MEMORY_MODEL as FSDP2 cut it;
- muon_equal (2 processes only): ShardedMuon on FSDP2-style slices (uneven, empty, the q/k/v cut on dim 1, a round
  without a matrix for rank 1) computes bitwise the weights and momentum of train_gpt.Muon on whole matrices.

Peak memory: /proc/self/clear_refs resets the peak (VmHWM) to the current resident size, and glibc is told
(bench/scale_memory.Meter) to map every block of 16 KiB or more apart, so that what is freed goes back to the
system and the peak of a phase is that phase's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import train_gpt as tg  # noqa: E402
import train_scale as ts  # noqa: E402
from bench.scale_memory import Meter, measure  # noqa: E402

# Hidden matrices dominate (24 blocks of 12 x 320^2), activations are small next to them (256-token windows):
# about 30M parameters, 120 MB in fp32, so that a few MB of noise is far below the 10% the plan is held to.
MEMORY_MODEL = dataclasses.replace(
    tg.PRESETS["smoke"],
    num_layers=24,
    model_dim=320,
    num_heads=4,
    head_dim=80,
    attention_pattern="LS-S" * 6,
    windows_per_step=4,
    val_tokens=4 * 256,
    ns_steps=1,  # the memory of Newton-Schulz is that of one iteration; five would only take longer on CPU
    warmup_steps=1,
)


# The measured models: "<model>/<windows per micro-step>", each in a fresh process
CASES = {"30m/1": MEMORY_MODEL, "tiny/1": ts.PRESETS["tiny"], "tiny/4": ts.PRESETS["tiny"]}


def muon_equal(d: tg.Dist) -> bool:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    mesh = init_device_mesh("cpu", (2,))
    gen = torch.Generator().manual_seed(0)
    layout = [(5, 8), (1, 6), (3, 6, 4), (8, 8), (8, 8), (8, 8), (4, 12)]
    weights = [torch.randn(shape, generator=gen) for shape in layout]
    grads = [[torch.randn(shape, generator=gen) for shape in layout] for _ in range(3)]
    kw = dict(lr=0.05, momentum=0.9, ns_steps=5, weight_decay=0.1)
    whole = [torch.nn.Parameter(w.clone()) for w in weights]
    reference = tg.Muon(whole, rank=0, world_size=1, **kw)

    def cut(t: torch.Tensor) -> torch.Tensor:
        return distribute_tensor(t.clone(), mesh, [Shard(ts.shard_dim(t.shape))])

    sliced = [torch.nn.Parameter(cut(w)) for w in weights]
    sharded = ts.ShardedMuon(sliced, rank=d.rank, world_size=2, **kw)
    for step_grads in grads:
        for p, q, g in zip(whole, sliced, step_grads, strict=True):
            p.grad, q.grad = g.clone(), cut(g)
        reference.step()
        sharded.step()
    same = all(torch.equal(p.detach(), q.detach().full_tensor()) for p, q in zip(whole, sliced, strict=True))
    momenta = zip(whole, sliced, strict=True)
    same &= all(
        torch.equal(reference.state[p]["momentum_buffer"], sharded.state[q]["momentum_buffer"].full_tensor())
        for p, q in momenta
    )
    return same and len(sharded.state) == len(sliced)  # every rank keeps the momentum of its slices of all


def main() -> None:
    out, case = Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "30m/1"
    torch.set_num_threads(1)
    d = tg.setup_distributed()
    # first, in the fresh process: the plan's CPU fixed term is the code torch maps on first use
    # two steps, not the benchmark's three: the second and the third read alike (within 0.1 % on each term)
    result: dict = {"terms": measure(CASES[case], d, int(case.split("/")[1]), steps=2)}
    if len(sys.argv) == 2:
        checks(result, out, d)
    name = case.replace("/", "_")
    (out / f"{name}_rank{d.rank}_of{d.world_size}.json").write_text(json.dumps(result))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    os._exit(0)  # as train_gpt.py: gloo sometimes aborts in C++ teardown after a finished run


def checks(result: dict, out: Path, d: tg.Dist) -> None:
    """The init, the sharding rule, the build's memory and sharded Muon (see the docstring)."""
    if d.world_size == 2:
        result["muon_equal"] = muon_equal(d)
    tiny = ts.build_model(ts.PRESETS["tiny"], seed=5, d=d)
    whole = {name: t.full_tensor() for name, t in tiny.state_dict().items()}
    if d.rank == 0:
        torch.save(whole, out / f"init_of{d.world_size}.pt")
    del tiny, whole
    if d.world_size > 1:
        dist.barrier()
    meter = Meter(d)
    meter.reset()
    before = meter.now()
    model = ts.build_model(MEMORY_MODEL, seed=0, d=d)
    result["build_mib"] = (meter.peak() - before) / 2**20
    for name, p in model.named_parameters():
        dim = ts.shard_dim(p.shape)
        rule = list(p.shape)
        rule[dim] = len(ts.shard_rows(p.shape[dim], d.world_size, d.rank))
        result.setdefault("shapes", {})[name] = [list(ts.local(p).shape), rule]


if __name__ == "__main__":
    main()
