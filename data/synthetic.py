"""Write synthetic token shards for smoke runs and tests: same format as FineWeb, learnable structure.

    python data/synthetic.py                      # data/synthetic/: 1 val + 4 train shards, vocab 512
    python data/synthetic.py --out DIR --seed 3 --vocab-size 50257 --train-shards 2

The "language" is a sparse first-order Markov chain (each token has a few likely successors), and
half of the documents end by repeating a span of themselves, so both a bigram model and attention
(an induction head, within one document) can lower the loss far below ln(vocab). The last token
of the vocabulary is the document separator, written before every document as GPT-2's
<|endoftext|> (50256) is in FineWeb. The output is a pure function of the arguments. Beside the
shards: meta.json (the arguments, with "vocab_size") and sha256sums.txt (for data/check.py). Every
shard passes data/check.py's checks before it is written. Shards are generated and written one at a
time, with a progress bar, so memory is about one shard's tokens (2 bytes each) plus ~50 MB.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.shards import (  # noqa: E402
    META_FILE,
    ShardError,
    ShardWriter,
    read_header,
    read_sums,
    sha256_file,
    update_sums,
)

GENERATOR = "markov-copy-v1"
# Probabilities of a token's successors, most likely first: entropy ~1.1 nats per token.
SUCCESSOR_PROBS = np.array([0.55, 0.25, 0.13, 0.07])
MAX_DOC_LEN = 1024
DOCS_PER_BATCH = 4096  # documents drawn at a time (part of the stream's definition: it fixes the order of draws)
COPY_FRACTION = 0.5  # share of documents that end by repeating a span of themselves
# The longest document: the separator, MAX_DOC_LEN tokens, then a copy of at most half of them. Any window of the
# stream this long holds a separator, so a shard of at least this size passes data/check.py whatever the seed.
MIN_SHARD_TOKENS = 1 + MAX_DOC_LEN + MAX_DOC_LEN // 2


def meta_for(args: argparse.Namespace) -> dict[str, object]:
    return {
        "generator": GENERATOR,
        "seed": args.seed,
        "vocab_size": args.vocab_size,
        "eot_token": args.vocab_size - 1,
        "val_tokens": args.val_tokens,
        "train_shards": args.train_shards,
        "shard_tokens": args.shard_tokens,
    }


def iter_documents(rng: np.random.Generator, vocab_size: int) -> Iterator[np.ndarray]:
    """An endless token stream, one uint16 array per batch of documents, each preceded by the separator vocab_size - 1.

    The draws from `rng` and their order define the output bytes (tests and the trainer's pinned losses depend on
    them): any change here changes every synthetic set. Memory is one batch (~4096 documents), whatever is asked for.
    """
    n_content = vocab_size - 1
    # The language: successors of each token, and a Zipf-like distribution of first tokens.
    successors = rng.integers(0, n_content, size=(n_content, SUCCESSOR_PROBS.size))
    first_weights = 1.0 / np.arange(1, n_content + 1)
    first_cum = np.cumsum(first_weights / first_weights.sum())
    while True:
        yield _batch(rng, successors, first_cum, eot=vocab_size - 1)


def _batch(rng: np.random.Generator, successors: np.ndarray, first_cum: np.ndarray, eot: int) -> np.ndarray:
    """DOCS_PER_BATCH documents as uint16 tokens (a function, so that its int64 temporaries are freed on return)."""
    n_docs = DOCS_PER_BATCH
    cum_succ = np.cumsum(SUCCESSOR_PROBS)
    lengths = np.clip(rng.lognormal(np.log(200), 0.8, n_docs).astype(np.int64), 8, MAX_DOC_LEN)
    chains = np.empty((n_docs, MAX_DOC_LEN), dtype=np.int64)  # (documents, positions)
    chains[:, 0] = np.searchsorted(first_cum, rng.random(n_docs))
    for t in range(1, MAX_DOC_LEN):  # vectorised over documents: one column at a time
        choice = np.searchsorted(cum_succ, rng.random(n_docs) * cum_succ[-1])
        chains[:, t] = successors[chains[:, t - 1], choice]
    copies = rng.random(n_docs) < COPY_FRACTION
    separator = np.array([eot], dtype=np.int64)
    pieces: list[np.ndarray] = []
    for i in range(n_docs):
        body = chains[i, : lengths[i]]
        pieces += [separator, body]
        if copies[i]:
            start = rng.integers(0, lengths[i] // 2)
            pieces.append(body[start : start + lengths[i] // 2])
    return np.concatenate(pieces).astype(np.uint16)


def shard_plan(out: Path, args: argparse.Namespace) -> list[tuple[Path, int]]:
    """(path, tokens) of every shard, val first, in the FineWeb naming scheme."""
    plan = [(out / "synthetic_val_000000.bin", args.val_tokens)]
    plan += [(out / f"synthetic_train_{i:06d}.bin", args.shard_tokens) for i in range(1, args.train_shards + 1)]
    return plan


def _intact(path: Path, ntok: int, digest: str | None) -> bool:
    """The shard is there with the planned size and the sha256 recorded when it was written (as data/check.py checks):
    a shard damaged in place keeps its size, so the header alone would call it intact."""
    try:
        return read_header(path) == ntok and (digest is None or sha256_file(path) == digest)
    except ShardError:
        return False


def remove_stale_shards(out: Path, plan: list[tuple[Path, int]]) -> None:
    """Delete synthetic shards (and their sums entries) that the plan does not write: left by settings with more
    train shards. The trainer reads every shard of the folder, so a leftover would silently join the new set."""
    planned = {path.name for path, _ in plan}
    stale = [p for p in sorted(out.glob("synthetic_*.bin")) if p.name not in planned] if out.is_dir() else []
    for path in stale:
        path.unlink()
        print(f"removed {path} (not part of these settings)")
    listed = [name for name in read_sums(out) if name.startswith("synthetic_") and name not in planned]
    if listed:
        update_sums(out, {}, remove=listed)


def write_synthetic(args: argparse.Namespace) -> int:
    out = Path(args.out)
    meta = meta_for(args)
    meta_path = out / META_FILE
    plan = shard_plan(out, args)
    sums = read_sums(out)  # a damaged sha256sums.txt stops us here, before any shard is touched (ShardError)
    if meta_path.is_file() and not args.force:
        try:
            existing = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # unreadable, not UTF-8 or not JSON: an unfinished folder, written again
            existing = None
        if existing == meta and all(_intact(p, n, sums.get(p.name)) for p, n in plan):
            print(f"synthetic shards already in {out} (seed {args.seed}, vocab {args.vocab_size}); nothing to do")
            return 0
        # Same settings but a missing or broken shard: writing them again is safe, the output is deterministic.
        if existing is not None and existing != meta:
            print(
                f"error: {out} already holds synthetic shards made with other settings ({meta_path}: {existing}). "
                f"Pass --force to replace them, or choose another --out folder.",
                file=sys.stderr,
            )
            return 2
    meta_path.unlink(missing_ok=True)  # the folder is incomplete until meta.json is written again
    remove_stale_shards(out, plan)
    total = sum(n for _, n in plan)
    # One shard in memory at a time; ShardWriter names them as the plan does, runs check.py's checks on each and
    # records its sha256 as soon as it lands.
    writer = ShardWriter(out, "synthetic", args.vocab_size, shard_tokens=args.shard_tokens, val_tokens=args.val_tokens)
    with tqdm(total=total, unit="tok", unit_scale=True, mininterval=1.0, desc="synthetic tokens") as bar:
        for tokens in iter_documents(np.random.default_rng(args.seed), args.vocab_size):
            tokens = tokens[: total - writer.total_tokens]
            done = len(writer.written)
            writer.add(tokens)
            bar.update(tokens.size)
            for path in writer.written[done:]:
                tqdm.write(f"wrote {path} ({read_header(path):,} tokens)")
            if writer.total_tokens == total:
                break
    written = writer.close()
    assert [p for p, _ in plan] == written, (plan, written)  # the stream filled every planned shard exactly
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    print(f"synthetic data ready in {out}: vocab {args.vocab_size}, separator token {args.vocab_size - 1}")
    return 0


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/synthetic", help="output folder (default: data/synthetic)")
    parser.add_argument("--seed", type=int, default=0, help="the output is a pure function of the seed (default 0)")
    parser.add_argument(
        "--vocab-size", type=int, default=512, help="tokens are < this; the last one separates documents"
    )
    parser.add_argument("--train-shards", type=positive, default=4, help="number of train shards (default 4)")
    parser.add_argument("--shard-tokens", type=positive, default=2**21, help="tokens per train shard (default 2097152)")
    parser.add_argument("--val-tokens", type=positive, default=2**20, help="tokens in the val shard (default 1048576)")
    parser.add_argument("--force", action="store_true", help="overwrite shards made with other settings")
    args = parser.parse_args(argv)
    if not 3 <= args.vocab_size <= 2**16:
        parser.error(f"--vocab-size must be between 3 and 65536 (tokens are uint16), got {args.vocab_size}")
    for flag, value in (("--shard-tokens", args.shard_tokens), ("--val-tokens", args.val_tokens)):
        if value < MIN_SHARD_TOKENS:
            parser.error(
                f"{flag} {value} is too small: the minimum is {MIN_SHARD_TOKENS}. A synthetic document can be "
                f"{MIN_SHARD_TOKENS - 1} tokens long after its separator, and every shard must hold a separator "
                f"(data/check.py and the trainer require one), so pass {flag} {MIN_SHARD_TOKENS} or more."
            )
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(
            f"--out {args.out} is a file, not a folder: pass a folder for the shards (it is created if needed)"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return write_synthetic(args)
    except ShardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(
            f"error: {e.strerror or e} ({e.filename or args.out}): check that {args.out} is a folder you can write to "
            f"and that its disk has room, then run the same command again.",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: {args.out} is incomplete (no meta.json yet); run the same command again to finish it.",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
