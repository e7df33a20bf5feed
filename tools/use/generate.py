"""Autoregressive generation from a train_gpt.GPT with a KV cache: the model's own weights, one token at a time.

`GPT.logits` reads a whole window at once (T a multiple of block_size, FlexAttention block masks). Generating
with it would redo the whole prefix for every new token, so this module runs the same network incrementally:
`CachedDecoder.extend` takes the next tokens of each sequence, attends to the keys and values of everything
before them (kept per layer in the cache), and returns their logits. It calls the GPT's own submodules and
weights (embeddings, value embeddings, q/k/v and output projections, MLPs, block and skip weights, the head),
and repeats only the wiring of `GPT.logits`, `Block.forward` and `CausalSelfAttention.forward` around them:
the document-causal sliding-window rule of `document_window_block_mask` (token q sees token k iff k <= q, same
document, and q // block_size - k // block_size < window blocks), value embeddings on the first and last
layers, U-net skips, x0 mixing, QK-norm, half-truncated rotary at absolute positions, the soft-capped head.
tests/test_use_generate.py checks the logits against `GPT.logits` on the same sequences, so a change to the
model that is not mirrored here fails there.

A sequence starts at position 0 with the document separator (vocab_size - 1), as every training document does;
positions are absolute, so the block grid of the window is the one the model was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tools.use.checkpoints import trainer


def final_window_blocks(args: Any) -> int:
    """The long attention window (in blocks) at the end of training: what the final model was validated with."""
    return int(trainer().window_blocks(args.num_iterations, args))


def _rotate(x_BTHD: Tensor, cos_TF: Tensor, sin_TF: Tensor) -> Tensor:
    """train_gpt.Rotary.forward at given positions (cos/sin rows of those positions), instead of 0..T-1."""
    cos, sin = cos_TF[None, :, None, :], sin_TF[None, :, None, :]
    x1, x2 = x_BTHD.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1).type_as(x_BTHD)


@dataclass
class _LayerCache:
    k_BTHD: Tensor
    v_BTHD: Tensor


class CachedDecoder:
    """Runs `model` incrementally over `batch` sequences of up to `max_len` tokens each."""

    def __init__(self, model: Any, batch: int, max_len: int, window_blocks: int | None = None) -> None:
        tg = trainer()
        self.model, self.args = model, model.args
        self.norm = tg.norm  # RMSNorm without weight, as everywhere in the model
        args = self.args
        self.block_size: int = args.block_size
        self.separator = args.vocab_size - 1
        long_window = final_window_blocks(args) if window_blocks is None else window_blocks
        self.windows = {"L": long_window, "S": max(long_window // 2, 1)}  # as GPT.logits: short = long // 2
        self.batch, self.max_len = batch, max_len
        self.length = 0
        device = model.embed.weight.device
        self.device = device
        attns = [b.attn for b in model.blocks if b.attn is not None]
        rotary = attns[0].rotary if attns else None
        if rotary is not None and rotary.cos.size(0) < max_len:
            # RoPE is relative and attention is windowed, so positions past the trained length are fine; the
            # model's own tables stop at max(train_seq_len, val_seq_len), so make longer ones the same way.
            rotary = tg.Rotary(args.head_dim, max_len, args.rope_min_freq).to(device)
        self.cos_TF = rotary.cos if rotary is not None else None
        self.sin_TF = rotary.sin if rotary is not None else None
        dtype = model.embed.weight.dtype
        self.layers: list[_LayerCache | None] = []
        for block in model.blocks:
            if block.attn is None:
                self.layers.append(None)
                continue
            shape = (batch, max_len, block.attn.num_heads, block.attn.head_dim)
            self.layers.append(
                _LayerCache(
                    torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device)
                )
            )
        self.docs_BT = torch.zeros(batch, max_len, dtype=torch.long, device=device)

    def _mask(self, window: int, start: int, end: int, pos_T: Tensor, docs_BT: Tensor) -> Tensor:
        """(B, 1, T_new, end - start) bool: which cached keys [start, end) each new token attends to."""
        k_pos = torch.arange(start, end, device=self.device)
        q, k = pos_T[:, None], k_pos[None, :]
        visible = (k <= q) & (q // self.block_size - k // self.block_size < window)  # (T_new, K)
        same_doc = docs_BT[:, :, None] == self.docs_BT[:, None, start:end]  # (B, T_new, K)
        return (visible[None] & same_doc)[:, None]

    @torch.no_grad()
    def extend(self, tokens_BT: Tensor) -> Tensor:
        """Append tokens_BT (B, T_new) to every sequence; their soft-capped fp32 logits (B, T_new, padded vocab)."""
        model, args, norm = self.model, self.args, self.norm
        B, T = tokens_BT.shape
        if B != self.batch:
            raise ValueError(f"expected {self.batch} sequences, got {B}")
        start, end = self.length, self.length + T
        if end > self.max_len:
            raise ValueError(f"the cache holds {self.max_len} tokens per sequence; {end} requested")
        tokens_BT = tokens_BT.to(self.device)
        pos_T = torch.arange(start, end, device=self.device)
        # document ids continue from the cache: every separator opens a new document (docs = cumsum(is_sep))
        previous = (
            self.docs_BT[:, start - 1 : start] if start > 0 else torch.zeros(B, 1, dtype=torch.long, device=self.device)
        )
        docs_BT = previous + (tokens_BT == self.separator).long().cumsum(1)
        self.docs_BT[:, start:end] = docs_BT
        # keys older than the longest window can never be seen again by these (or later) tokens
        first_key = max(0, (start // self.block_size - self.windows["L"] + 1) * self.block_size)
        masks = {
            c: self._mask(w, first_key, end, pos_T, docs_BT) for c, w in self.windows.items()
        }  # per pattern letter, shared by all layers of that kind

        layers, n_ve, n_skip = len(model.blocks), len(model.value_embeds), len(model.skip_weights)
        ve = [table(tokens_BT) for table in model.value_embeds]
        x = x0 = norm(model.embed(tokens_BT))  # (B, T, D)
        skips: list[Tensor] = []
        for i, block in enumerate(model.blocks):
            if i >= layers - n_skip:
                x = x + model.skip_weights[i - (layers - n_skip)] * skips.pop()
            x = block.lambdas[0] * x + block.lambdas[1] * x0
            if block.attn is not None:
                ve_i = ve[i] if i < n_ve else ve[i - layers + n_ve] if i >= layers - n_ve else None
                x = x + self._attend(i, block.attn, norm(x), ve_i, masks[args.attention_pattern[i]], first_key)
            x = x + block.mlp(norm(x))
            if i < n_skip:
                skips.append(x)
        self.length = end
        logits = model.lm_head(norm(x))
        return float(args.logit_cap) * torch.sigmoid(logits.float() / float(args.logit_temperature))

    def _attend(self, i: int, attn: Any, x_BTD: Tensor, ve_BTD: Tensor | None, mask: Tensor, first_key: int) -> Tensor:
        assert self.cos_TF is not None and self.sin_TF is not None
        cache = self.layers[i]
        assert cache is not None
        B, T, _ = x_BTD.shape
        start, end = self.length, self.length + T
        qkv = F.linear(x_BTD, attn.qkv_w.flatten(end_dim=1).type_as(x_BTD))
        q, k, v = qkv.view(B, T, 3 * attn.num_heads, attn.head_dim).chunk(3, dim=-2)  # each (B, T, H, Dh)
        q, k = self.norm(q), self.norm(k)  # QK-norm
        cos, sin = self.cos_TF[start:end], self.sin_TF[start:end]
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        v = attn.lambdas[0] * v + attn.lambdas[1] * ve_BTD.view_as(v) if ve_BTD is not None else attn.lambdas[0] * v
        cache.k_BTHD[:, start:end] = k
        cache.v_BTHD[:, start:end] = v
        keys, values = cache.k_BTHD[:, first_key:end], cache.v_BTHD[:, first_key:end]
        y_BHTD = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=mask, scale=attn.attn_scale
        )
        return attn.c_proj(y_BHTD.transpose(1, 2).reshape(B, T, -1))  # type: ignore[no-any-return]


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
