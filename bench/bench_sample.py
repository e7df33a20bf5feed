"""Benchmark generation: tokens/s with the KV cache (tools/use/generate.py) against recomputing the prefix.

    python bench/bench_sample.py                          # smoke and short presets on this machine's device
    python bench/bench_sample.py --presets short --device cuda --new-tokens 256

For each preset, a randomly initialised GPT (weights do not change the cost) continues a prompt greedily:
once with the cache (one decode step per token), once the naive way (GPT.logits on the whole padded sequence
for every new token). Both produce the same tokens, which the script checks. Prints tokens/s of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from tools.use.checkpoints import trainer  # noqa: E402
from tools.use.generate import SamplingSettings, final_window_blocks, sample  # noqa: E402


def naive_greedy(model: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    args = model.args
    seq = [args.vocab_size - 1, *prompt]
    window = torch.tensor(final_window_blocks(args), dtype=torch.int32, device=model.embed.weight.device)
    out = []
    for _ in range(n):
        padded = seq + [args.vocab_size - 1] * (-len(seq) % args.block_size)
        logits = model.logits(torch.tensor(padded, dtype=torch.int32, device=window.device), window)
        nxt = int(logits[len(seq) - 1, : args.vocab_size].argmax())
        out.append(nxt)
        seq.append(nxt)
    return out


def seconds(device: torch.device, t0: float | None = None) -> float:
    """A clock reading after the device's queued work (pass the start to get the elapsed time)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - (t0 or 0.0)


def bench(name: str, device: torch.device, n_prompt: int, n_new: int) -> str:
    tg = trainer()
    hp = tg.PRESETS[name]
    torch.manual_seed(0)
    with torch.device(device):
        model = tg.GPT(hp).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_()  # the real init zeroes the head: every logit equal
    prompt = torch.randint(0, hp.vocab_size - 1, (n_prompt,)).tolist()
    settings = SamplingSettings(max_new_tokens=n_new, temperature=0, stop_at_separator=False)
    sample(model, prompt, dataclasses.replace(settings, max_new_tokens=4))  # warm-up
    t0 = seconds(device)
    cached = sample(model, prompt, settings)[0]
    t_cached = seconds(device, t0)
    t0 = seconds(device)
    with torch.no_grad():
        naive = naive_greedy(model, prompt, n_new)
    t_naive = seconds(device, t0)
    diff = next((i for i, (x, y) in enumerate(zip(cached, naive, strict=True)) if x != y), None)
    same = "same tokens" if diff is None else f"DIFFERENT tokens from position {diff}"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (
        f"{name:>6}: {params:6.1f}M params, prompt {n_prompt}, {n_new} new tokens: KV cache {n_new / t_cached:8.1f} "
        f"tok/s, recompute {n_new / t_naive:8.1f} tok/s ({t_naive / t_cached:.1f}x); {same}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["smoke", "short"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads")
    for name in args.presets:
        print(bench(name, device, args.prompt_tokens, args.new_tokens), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
