"""Autoregressive generation from a train_gpt.GPT with a KV cache: the model's own forward, one token at a time.

`GPT.logits(tokens, window, cache)` with a `train_gpt.KVCache` runs the network on the new tokens only, attending to
the keys and values it kept of the tokens before them: the same forward as training and validation (document-causal
sliding windows, value embeddings, U-net skips, the soft-capped head), so a change to the model is a change here
too. `CachedDecoder` holds the cache and the attention window; tests/test_use_generate.py checks its logits against
`GPT.logits` on the whole sequence.

A sequence starts at position 0 with the document separator (vocab_size - 1), as every training document does;
positions are absolute, so the block grid of the window is the one the model was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tools.use.checkpoints import trainer


def final_window_blocks(args: Any) -> int:
    """The long attention window (in blocks) at the end of training: what the final model was validated with."""
    return int(trainer().window_blocks(args.num_iterations, args))


class CachedDecoder:
    """Runs `model` incrementally over `batch` sequences of up to `max_len` tokens each."""

    def __init__(self, model: Any, batch: int, max_len: int, window_blocks: int | None = None) -> None:
        self.model, self.batch, self.max_len = model, batch, max_len
        self.device = model.lm_head.weight.device
        self.cache = trainer().KVCache(model, batch, max_len)
        blocks = final_window_blocks(model.args) if window_blocks is None else window_blocks
        self.window = torch.tensor(blocks, dtype=torch.int32, device=self.device)

    @torch.no_grad()
    def extend(self, tokens_BT: Tensor) -> Tensor:
        """Append tokens_BT (B, T_new) to every sequence; their soft-capped fp32 logits (B, T_new, padded vocab)."""
        B, T = tokens_BT.shape
        if B != self.batch:
            raise ValueError(f"expected {self.batch} sequences, got {B}")
        if self.cache.length + T > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} tokens per sequence; {self.cache.length + T} requested")
        logits = self.model.logits(tokens_BT.to(self.device), self.window, self.cache)
        return logits.view(B, T, -1)  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0: greedy (argmax)
    top_k: int | None = None  # sample among the k most likely tokens only
    seed: int = 0
    num_samples: int = 1
    stop_at_separator: bool = True  # a generated separator ends the document, and the sample


def check_settings(s: SamplingSettings) -> None:
    problems = []
    if s.max_new_tokens < 1:
        problems.append(f"--max-new-tokens must be at least 1 (got {s.max_new_tokens})")
    if not s.temperature >= 0:
        problems.append(f"--temperature must be >= 0 (got {s.temperature}); 0 means greedy")
    if s.top_k is not None and s.top_k < 1:
        problems.append(f"--top-k must be at least 1 (got {s.top_k})")
    if s.num_samples < 1:
        problems.append(f"--num-samples must be at least 1 (got {s.num_samples})")
    if problems:
        raise ValueError("; ".join(problems))


def pick_next(logits_BV: Tensor, s: SamplingSettings, generator: torch.Generator) -> Tensor:
    """(B,) next tokens from (B, vocab) logits: argmax at temperature 0, else softmax(logits / T) within the top k."""
    if s.temperature == 0:
        return logits_BV.argmax(dim=-1)
    scaled = logits_BV.float() / s.temperature
    if s.top_k is not None and s.top_k < scaled.size(-1):
        kth = torch.topk(scaled, s.top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def sample(model: Any, prompt: list[int], s: SamplingSettings, window_blocks: int | None = None) -> list[list[int]]:
    """num_samples continuations (token ids, without the prompt and without a final separator) of the prompt.

    The sequence fed to the model is [separator] + prompt. Deterministic for a seed on one device: one generator,
    seeded with s.seed, draws every token of every sample.
    """
    check_settings(s)
    args = model.args
    vocab = args.vocab_size
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"prompt token(s) {bad[:5]} are outside this model's vocabulary (0..{vocab - 1})")
    device = model.embed.weight.device
    sequence = [args.vocab_size - 1, *prompt]
    decoder = CachedDecoder(model, s.num_samples, len(sequence) + s.max_new_tokens, window_blocks)
    generator = torch.Generator(device=device).manual_seed(s.seed)
    logits = decoder.extend(torch.tensor(sequence, device=device).repeat(s.num_samples, 1))[:, -1, :vocab]
    out = torch.empty(s.num_samples, 0, dtype=torch.long, device=device)
    done = torch.zeros(s.num_samples, dtype=torch.bool, device=device)
    for step in range(s.max_new_tokens):
        # logits beyond vocab_size are the head's padding rows: never tokens, never sampled
        nxt = pick_next(logits, s, generator)
        if s.stop_at_separator:
            nxt = torch.where(done, torch.full_like(nxt, vocab - 1), nxt)
            done |= nxt == vocab - 1
        out = torch.cat([out, nxt[:, None]], dim=1)
        if step + 1 == s.max_new_tokens or (s.stop_at_separator and bool(done.all())):
            break
        logits = decoder.extend(nxt[:, None])[:, -1, :vocab]
    samples = []
    for row in out.tolist():
        if s.stop_at_separator and vocab - 1 in row:
            row = row[: row.index(vocab - 1)]
        samples.append(row)
    return samples
