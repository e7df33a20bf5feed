"""``python -m tools evaluate``: validation loss of a checkpoint on any shard folder, and HellaSwag accuracy.

    python -m tools evaluate --checkpoint CKPT                         # val loss on the run's own val shards
    python -m tools evaluate --checkpoint CKPT --data data/finewebedu10B --tokens 1048576
    python -m tools evaluate --checkpoint CKPT --hellaswag [--limit 1000]
    python -m tools evaluate --checkpoint CKPT --hellaswag-file hellaswag_val.jsonl

The validation loss is train_gpt.py's own `evaluate` on the first --tokens tokens (default: the run's
val_tokens) of the folder's ``*_val_*.bin`` shards (``--split train`` for the train shards), in windows of the
run's val_seq_len, with the attention window of the end of training: for the final checkpoint of a run on the
same data it is the run's final val_loss. Under torchrun the windows are shared between the processes.
HellaSwag accuracy is described in tools/use/hellaswag.py (acc: sum of the ending's log-probabilities; acc_norm:
mean per-token loss). CKPT is a checkpoint folder or an export (docs/sampling-and-evaluation.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any


class _CountedWindows:
    """train_gpt.TokenWindows that advance a progress bar as train_gpt.evaluate reads them."""

    def __init__(self, windows: Any, bar: Any) -> None:
        self.windows, self.bar = windows, bar

    def __getitem__(self, j: int) -> Any:
        self.bar.update(1)
        return self.windows[j]


def validation_loss(
    model: Any, args: Any, data: Path, split: str, tokens: int | None, seq_len: int | None, d: Any, progress: bool
) -> dict[str, Any]:
    """train_gpt.evaluate on the first `tokens` tokens of a shard folder's split; the facts of the measurement."""
    from tqdm import tqdm

    from tools.use.checkpoints import trainer
    from tools.use.generate import final_window_blocks

    tg = trainer()
    seq_len = seq_len or args.val_seq_len
    context = max(args.train_seq_len, args.val_seq_len)  # the model's rotary tables end there
    if seq_len % args.block_size or not 0 < seq_len <= context:
        raise ValueError(
            f"--seq-len {seq_len} must be a positive multiple of the block size {args.block_size} and at most the "
            f"model's sequence length {context}"
        )
    want = args.val_tokens if tokens is None else tokens
    windows = want // seq_len // d.world_size * d.world_size  # train_gpt.evaluate gives every process an equal share
    if windows < 1:
        raise ValueError(f"--tokens {want} is less than {d.world_size} window(s) of {seq_len} tokens (one per process)")
    if not data.is_dir():
        raise ValueError(f"--data {data}: no such folder; give a folder of token shards (*_{split}_*.bin)")
    paths = sorted(data.glob(f"*_{split}_*.bin"))
    if not paths:
        raise ValueError(f"{data} holds no {split} shards (*_{split}_*.bin)")
    have = sum(tg.read_shard_header(p, "check the shard with `python data/check.py`") for p in paths)
    if have < windows * seq_len + 1:
        raise ValueError(
            f"the {split} shards in {data} hold {have:,} tokens, fewer than the {windows * seq_len + 1:,} that "
            f"{windows} windows of {seq_len} need (one extra for the last target); pass --tokens {have - 1} or less"
        )
    eval_args = dataclasses.replace(args, val_seq_len=seq_len, val_tokens=windows * seq_len)
    shards = tg.plan_shards(eval_args, str(data), split, windows * seq_len + 1)
    token_windows = tg.TokenWindows(shards, seq_len, windows * seq_len + 1, d.device)
    top = int(token_windows.tokens.max())
    if top >= args.vocab_size:
        names = ", ".join(str(s.path) for s in shards)
        raise ValueError(
            f"the shards ({names}) hold token {top}, but this model's vocabulary has {args.vocab_size} tokens: "
            f"the data was made for another tokenizer. Evaluate on shards of this model's vocabulary."
        )
    with tqdm(
        total=-(-windows // d.world_size), desc="val loss", unit="window", disable=not progress, mininterval=1.0
    ) as bar:
        loss = tg.evaluate(model, _CountedWindows(token_windows, bar), eval_args, d, args.num_iterations)
    return {
        "val_loss": loss,
        "tokens": windows * seq_len,
        "windows": windows,
        "seq_len": seq_len,
        "data": str(data),
        "split": split,
        "shards": [s.path.name for s in shards],
        "window_blocks": final_window_blocks(args),
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder (step_NNNNNN/) or an export")
    p.add_argument("--data", type=Path, default=None, help="shard folder for the loss (default: the run's data_path)")
    p.add_argument("--tokens", type=int, default=None, help="tokens to evaluate (default: the run's val_tokens)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per window (default: the run's val_seq_len)")
    p.add_argument("--split", choices=["val", "train"], default="val", help="which shards / HellaSwag split (val)")
    p.add_argument("--hellaswag", action="store_true", help="HellaSwag accuracy (downloads the data once)")
    p.add_argument("--hellaswag-file", type=Path, default=None, help="a local HellaSwag .jsonl or .parquet file")
    p.add_argument("--hellaswag-dir", type=Path, default=None, help="where HellaSwag is kept (default data/hellaswag)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N HellaSwag items")
    p.add_argument("--pack-tokens", type=int, default=None, help="HellaSwag tokens per model call")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available; torchrun: its GPU)")
    p.add_argument("--no-compile", action="store_true", help="do not torch.compile the model on CUDA")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")


def run(args: argparse.Namespace) -> int:
    from tools.use.checkpoints import resolve_device, trainer

    want_hellaswag = args.hellaswag or args.hellaswag_file is not None
    want_loss = args.data is not None or not want_hellaswag
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1 (got {args.limit})")
    tg = trainer()
    launched = "RANK" in os.environ  # torchrun: one process per GPU (or CPU process, gloo)
    d = tg.setup_distributed() if launched else tg.Dist(0, 1, 0, resolve_device(args.device))
    try:
        return evaluate_checkpoint(args, d, want_loss, want_hellaswag)
    finally:
        if launched:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def evaluate_checkpoint(args: argparse.Namespace, d: Any, want_loss: bool, want_hellaswag: bool) -> int:
    """What `run` does, in the process layout `d` (train_gpt.Dist); prints on rank 0 only."""
    import torch

    from tools.use import hellaswag as hs
    from tools.use import tokens as tok
    from tools.use.checkpoints import load_model
    from tools.use.generate import final_window_blocks

    say = d.rank == 0
    # HellaSwag's data and tokenizer first: a missing download should not wait for a model load.
    items: list[Any] = []
    tokenizer = None
    source = ""
    if want_hellaswag:
        # rank 0 fetches (one download into one file), the others learn the outcome from it
        fetched: list[Any] = [None]
        if say:
            try:
                fetched = [args.hellaswag_file or hs.fetch(args.split, args.hellaswag_dir or hs.DEFAULT_DIR)]
            except hs.HellaSwagUnavailable as e:
                fetched = [hs.HellaSwagUnavailable(str(e))]
        if d.world_size > 1:
            import torch.distributed as dist

            dist.broadcast_object_list(fetched, src=0)
        if isinstance(fetched[0], hs.HellaSwagUnavailable):
            if say:
                print(f"error: {fetched[0]}", file=sys.stderr)
            return 1
        path = Path(fetched[0])
        items = hs.read_items(path)[: args.limit]
        source = str(path)
    loaded = load_model(args.checkpoint, d.device)
    model, margs = loaded.model, loaded.args
    if want_hellaswag:
        try:
            tokenizer = tok.load_tokenizer(margs.vocab_size)
        except tok.TokenizerUnavailable as e:
            if say:
                print(f"error: {e}", file=sys.stderr)
            return 1
        if tokenizer is None:
            raise ValueError(
                f"HellaSwag is text, and this model's vocabulary ({margs.vocab_size} tokens) is not GPT-2's "
                f"({tok.GPT2_VOCAB_SIZE}): there is no tokenizer to score it with. Evaluate its loss with --data instead."
            )
    if say:
        print(f"evaluating {loaded.describe()} on {d.device}", file=sys.stderr)
    compiled = d.device.type == "cuda" and not args.no_compile
    results: dict[str, Any] = {"checkpoint": str(args.checkpoint), "step": loaded.config.get("step")}
    if want_loss:
        # the run's data folder: config.json's data_path (older folders: a hyperparameter of that name)
        default = loaded.config.get("data_path") or loaded.config["hyperparameters"].get("data_path")
        if args.data is None and not isinstance(default, str):
            raise ValueError(f"{args.checkpoint} does not say where its run's data was; give --data FOLDER")
        data = args.data if args.data is not None else Path(default)
        net = torch.compile(model, dynamic=False, fullgraph=True) if compiled else model
        results["val_loss"] = validation_loss(net, margs, data, args.split, args.tokens, args.seq_len, d, say)
    if want_hellaswag:
        context = max(margs.train_seq_len, margs.val_seq_len)
        default_pack = 8192 if d.device.type == "cuda" else 2048  # CPU: dense (T, T) masks
        pack_tokens = args.pack_tokens or min(default_pack, context)
        pack_tokens -= pack_tokens % margs.block_size
        if not 0 < pack_tokens <= context:
            raise ValueError(
                f"--pack-tokens must be between {margs.block_size} and the model's sequence length {context}"
            )
        logits_fn = torch.compile(model.logits, dynamic=False, fullgraph=True) if compiled else model.logits
        mine = items[d.rank :: d.world_size]
        assert tokenizer is not None
        r = hs.score(logits_fn, margs, tokenizer, mine, pack_tokens, d.device, final_window_blocks(margs), say)
        counts = torch.tensor([r.items, r.correct, r.correct_norm], dtype=torch.float64, device=d.device)
        if d.world_size > 1:
            torch.distributed.all_reduce(counts)
        n, correct, correct_norm = (int(x) for x in counts.tolist())
        results["hellaswag"] = {
            "split": args.split,
            "source": source,
            "items": n,
            "acc": correct / n,
            "acc_norm": correct_norm / n,
        }
    if say:
        print(json.dumps(results) if args.json else format_text(results))
    return 0


def format_text(results: dict[str, Any]) -> str:
    lines = []
    if "val_loss" in results:
        v = results["val_loss"]
        lines.append(
            f"val_loss {v['val_loss']:.4f}  on {v['tokens']:,} tokens ({v['windows']} windows of {v['seq_len']:,}) of "
            f"the {v['split']} shards in {v['data']}; attention window {v['window_blocks']} blocks"
        )
    if "hellaswag" in results:
        h = results["hellaswag"]
        lines.append(
            f"hellaswag acc {h['acc']:.4f} (sum of the ending's log-probs)  acc_norm {h['acc_norm']:.4f} (mean "
            f"per-token loss)  on {h['items']:,} {h['split']} items from {h['source']}"
        )
    return "\n".join(lines)
