"""``python -m tools sample``: generate text (or token ids) from a checkpoint or an export, with a KV cache.

    python -m tools sample --checkpoint checkpoints/<run_id>/step_001393 --prompt "The capital of France is"
    python -m tools sample --checkpoint exports/smoke --prompt-tokens 5,17,3 --num-samples 3 --seed 1

Each sample continues [document separator] + prompt, as every training document starts, with the attention
window the model ended training with. --temperature 0 is greedy decoding; --top-k K samples among the K most
likely tokens; the same --seed on the same device gives the same samples. A sample ends when the model ends its
document (emits the separator) unless --ignore-separator is given, or after --max-new-tokens tokens.
Models with GPT-2's vocabulary read and print text (tiktoken's GPT-2 BPE); other vocabularies (the smoke
preset) take --prompt-tokens and print token ids.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder (step_NNNNNN/) or an export")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=None, help="text to continue (GPT-2-vocabulary models)")
    prompt.add_argument("--prompt-tokens", default=None, metavar="IDS", help="token ids to continue, e.g. 1,2,3")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens to generate per sample (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature; 0 = greedy (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the K most likely tokens")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--num-samples", type=int, default=1, help="independent samples, generated as one batch")
    p.add_argument("--ignore-separator", action="store_true", help="keep going after the model ends its document")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print one JSON object per sample")


def run(args: argparse.Namespace) -> int:
    from tools.use import checkpoints, generate, tokens

    device = checkpoints.resolve_device(args.device)
    settings = generate.SamplingSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        num_samples=args.num_samples,
        stop_at_separator=not args.ignore_separator,
    )
    generate.check_settings(settings)  # before the (possibly long) load
    loaded = checkpoints.load_model(args.checkpoint, device)
    vocab = loaded.args.vocab_size
    tokenizer = None
    if args.prompt_tokens is not None:
        prompt = tokens.parse_token_ids(args.prompt_tokens, vocab)
    else:
        try:
            tokenizer = tokens.load_tokenizer(vocab)
        except tokens.TokenizerUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        if tokenizer is None and args.prompt:
            raise ValueError(
                f"this model's vocabulary has {vocab} tokens, not GPT-2's {tokens.GPT2_VOCAB_SIZE}: it has no "
                f"tokenizer for text. Give the prompt as token ids with --prompt-tokens (e.g. --prompt-tokens 1,2,3)."
            )
        prompt = tokenizer.encode_ordinary(args.prompt) if tokenizer is not None and args.prompt else []
    print(f"sampling from {loaded.describe()} on {device}", file=sys.stderr)
    samples = generate.sample(loaded.model, prompt, settings)
    for i, ids in enumerate(samples):
        text = tokenizer.decode(ids) if tokenizer is not None else None
        if args.json:
            print(json.dumps({"sample": i, "seed": args.seed, "prompt_tokens": prompt, "tokens": ids, "text": text}))
        elif tokenizer is not None and text is not None:
            print(f"----- sample {i + 1}/{len(samples)} -----")
            print(tokenizer.decode(prompt) + text)
        else:
            print(f"----- sample {i + 1}/{len(samples)} ({len(ids)} tokens after {len(prompt)} prompt tokens) -----")
            print(",".join(map(str, ids)))
    return 0
