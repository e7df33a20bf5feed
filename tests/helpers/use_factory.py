"""Test helpers for the model tools (sample, evaluate, export): small models and the folders they are read from.

`write_checkpoint` makes checkpoints in train_scale.py's layout without a training run (fast, and any model
size or dtype; tests/test_scale_runs.py reads the trainer's own sharded checkpoints with the tools too): a
torch.distributed.checkpoint (DCP) save of {"model", "optim", "train"} into <run>/step_NNNNNN/, then
config.json written last ("format": "speedrun-checkpoint-v1", the run's Hyperparameters as a dict, step,
run_id, world_size, parallelism, train_time_ms, data_path).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
import train_gpt as tg  # noqa: E402
from data.shards import make_header  # noqa: E402

SMOKE = tg.PRESETS["smoke"]
# A model the window rule bites on: 16-token blocks, a final long window of 3 blocks (short: 1), 128-token windows.
SMALL = dataclasses.replace(
    SMOKE, block_size=16, window_final_tokens=48, train_seq_len=128, val_seq_len=128, val_tokens=8 * 128
)


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread: with two, OpenMP's hand-offs cost more than the ops (and stall
    badly when another process holds a core)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere, so that every part of the network shapes the logits (the real init zeroes the
    output projections and the head, which would make every logit 15)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                std = 1.0 if "embed" in name or "lm_head" in name else 0.5 * p.size(-1) ** -0.5
                p.copy_(torch.randn(p.shape, generator=g) * std)
            else:
                p.copy_(torch.rand(p.shape, generator=g) * 0.8 + 0.2)
    return model


def random_gpt(args: Any = SMALL, seed: int = 0, bf16_embeddings: bool = False) -> Any:
    torch.manual_seed(seed)
    model = randomize(tg.GPT(args), seed).eval()
    if bf16_embeddings:  # as train_gpt.build_model does on CUDA
        for m in model.modules():
            if isinstance(m, torch.nn.Embedding):
                m.bfloat16()
    return model


def config_for(args: Any, **extra: Any) -> dict[str, Any]:
    return {
        "format": "speedrun-checkpoint-v1",
        "preset": "smoke",
        "hyperparameters": dataclasses.asdict(args),
        "step": args.num_iterations,
        "run_id": "00000000-0000-4000-8000-000000000000",
        "world_size": 1,
        "parallelism": "ddp",
        "train_time_ms": 1234.0,
        "data_path": "data/synthetic",
        **extra,
    }


def write_checkpoint(
    run_dir: Path, model: torch.nn.Module, args: Any, step: int | None = None, optimizer: bool = True, **config: Any
) -> Path:
    """run_dir/step_NNNNNN/ as train_scale.py writes it; under torchrun call it on every rank (rank 0 writes config).
    optimizer=False saves a small stand-in "optim" entry (Adam's state of a GPT-2-vocabulary model is 200 MB)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    step = args.num_iterations if step is None else step
    folder = run_dir / f"step_{step:06d}"
    optim_state: dict[str, Any] = {"lr": torch.tensor(1e-3)}
    if optimizer:
        params = [p for p in model.parameters()]
        optim = torch.optim.Adam(params, lr=1e-3)
        for p in params:
            p.grad = torch.zeros_like(p)
        optim.step()  # real optimizer state (exp_avg, exp_avg_sq) in the save, as the trainer's
        for p in params:
            p.grad = None
        optim_state = optim.state_dict()
    state = {
        "model": model.state_dict(),
        "optim": optim_state,
        "train": {"step": step, "rng": torch.get_rng_state()},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # DCP's single-process notice
        dcp.save(state, checkpoint_id=str(folder))
    if not dist.is_initialized() or dist.get_rank() == 0:
        text = json.dumps(config_for(args, step=step, **config))
        (folder / "config.json").write_text(text)  # last: marks the checkpoint complete
    return folder


def write_shard(path: Path, tokens: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(make_header(len(tokens)) + tokens.astype("<u2").tobytes())
    return path


def random_tokens(n: int, vocab_size: int, seed: int = 0, separator_every: int = 50) -> np.ndarray:
    """Random tokens below vocab_size - 1 with a separator (vocab_size - 1) first and then about every N tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab_size - 1, n)
    tokens[rng.random(n) < 1 / separator_every] = vocab_size - 1
    tokens[0] = vocab_size - 1
    return tokens


class WordTokenizer:
    """A stand-in for GPT-2's BPE: one token per space-led word of a fixed list (ids = positions in the list)."""

    def __init__(self, words: list[str]) -> None:
        self.ids = {w: i for i, w in enumerate(words)}
        self.words = words

    def encode_ordinary(self, text: str) -> list[int]:
        return [self.ids[w] for w in text.replace(" ", "\0 ").split("\0") if w]

    def decode(self, tokens: list[int]) -> str:
        return "".join(self.words[t] for t in tokens)
