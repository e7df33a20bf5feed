"""Benchmark the data path: shard reading (one core, warm page cache), synthetic shards, and tokenization (per core).

    python bench/bench_data.py                      # 100M-token shard in a temp folder, stdlib text corpus
    python bench/bench_data.py --shard data/fineweb10B/fineweb_train_000001.bin --text my.jsonl
    python bench/bench_data.py --encoding cl100k_base   # any tiktoken encoding that loads here

Targets (data/README.md): 8x H100 train on ~7M tokens/s, so reading shards must run far above that
(goal: >= 200M tokens/s on one core from the page cache), and tokenization is measured per core to
size `data/fineweb.py --workers`. Reading is timed on a file read once beforehand (warm page cache)
with the process pinned to one CPU. Tokenization uses GPT-2's BPE when tiktoken can load it; where it
cannot (no network), a small BPE is trained on the corpus here and the output says so: those numbers
are not GPT-2's. data/synthetic.py is run as a command: its speed and peak memory, which must stay bounded
by one shard, not grow with the whole set.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from data import fineweb  # noqa: E402
from data.shards import SHARD_TOKENS, read_tokens, validate_shard, write_shard  # noqa: E402
from data.tiny_bpe import train_encoding  # noqa: E402


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def report(name: str, units: int, times: list[float], unit: str = "tokens") -> None:
    best, median = min(times), statistics.median(times)
    print(f"  {name:<44} {units / best / 1e6:9.1f}M {unit}/s best  {units / median / 1e6:9.1f}M median")


def bench_reader(shard: Path | None, ntok: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if shard is None:
            shard = Path(tmp) / "bench_train_000001.bin"
            rng = np.random.default_rng(0)
            tokens = rng.integers(0, 50256, ntok, dtype=np.int64).astype(np.uint16)
            tokens[::1000] = 50256
            write_shard(shard, tokens, vocab_size=50257)
            del tokens
        n = read_tokens(shard).size
        size_mb = shard.stat().st_size / 1e6
        read_tokens(shard, mmap=False)  # warm the page cache
        print(f"reader: {shard} ({n:,} tokens, {size_mb:.0f} MB), warm page cache, one core, {repeat} runs")
        report("data.shards.read_tokens (np.fromfile)", n, timed(lambda: read_tokens(shard, mmap=False), repeat))
        report("data.shards.read_tokens mmap + copy", n, timed(lambda: np.array(read_tokens(shard)), repeat))
        if (REPO_ROOT / "train_gpt.py").is_file():
            tg = importlib.import_module("train_gpt")
            windows = tg.TrainWindows([tg.Shard(shard, "train", n)], 64 * 1024, 8, tg.torch.device("cpu"))
            steps = tg.steps_in_shard(n, 8 * 64 * 1024)

            def every_window() -> None:
                for step in range(steps):
                    for j in range(8):
                        windows[step, j]

            read = steps * 8 * 64 * 1024  # the tokens training reads from this shard (its tail is skipped)
            report("train_gpt.TrainWindows (the trainer's loader, to tensors)", read, timed(every_window, repeat))
        else:
            print("  train_gpt.TrainWindows: train_gpt.py not found, not measured")
        report("validate_shard (check.py without sums)", n, timed(lambda: validate_shard(shard), repeat))
        data = shard.read_bytes()
        report("sha256 (check.py's sums, the log's data line)", n, timed(lambda: hashlib.sha256(data).digest(), repeat))


def bench_synthetic(train_shards: int, shard_tokens: int) -> None:
    """data/synthetic.py as a user runs it: wall time and the process's peak RSS (os.wait4's rusage, this child only)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(REPO_ROOT / "data" / "synthetic.py"), "--out", tmp]
        cmd += [
            "--train-shards",
            str(train_shards),
            "--shard-tokens",
            str(shard_tokens),
            "--val-tokens",
            str(shard_tokens),
        ]
        ntok = (train_shards + 1) * shard_tokens
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        print(f"synthetic: {' '.join(cmd)} failed with exit status {proc.returncode}")
        return
    peak = usage.ru_maxrss * 1024  # kilobytes on Linux
    print(f"synthetic: data/synthetic.py, val + {train_shards} train shards of {shard_tokens:,} tokens, one core")
    print(f"  {'generate + validate + write + sha256':<44} {ntok / seconds / 1e6:9.1f}M tokens/s")
    print(f"  {'peak RSS':<44} {peak / 1e6:9.0f} MB ({peak / ntok:.1f} bytes/token of the whole set)")


def corpus(paths: list[Path], max_chars: int) -> tuple[list[str], str]:
    if paths:
        files = fineweb.expand_inputs(paths)
        docs: list[str] = []
        for doc in fineweb.local_documents(files, "text", "file"):
            docs.append(doc)
            if sum(map(len, docs)) >= max_chars:
                break
        return docs, f"{len(files)} file(s) given with --text"
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(stdlib.rglob("*.py")):
        docs.append(path.read_text(encoding="utf-8", errors="replace"))
        if sum(map(len, docs)) >= max_chars:
            break
    return docs, f"Python standard library source files under {stdlib} (code and docstrings, not web text)"


def bench_tokenizer(text_paths: list[Path], encoding_name: str, max_chars: int, repeat: int, workers: int) -> None:
    docs, what = corpus(text_paths, max_chars)
    chars = sum(map(len, docs))
    nbytes = sum(len(d.encode()) for d in docs)
    try:
        enc = fineweb.load_encoding(encoding_name)
        label = f"{enc.name} (tiktoken)"
    except fineweb.InputError:
        enc = train_encoding([d[:4000] for d in docs[:300]], n_merges=1000)
        label = (
            f"TINY BPE trained here ({enc.n_vocab} tokens): tiktoken could not load {encoding_name!r} (no network?); "
            f"these numbers are NOT {encoding_name}'s"
        )
    ntok = sum(len(enc.encode_ordinary(d)) + 1 for d in docs)
    print(f"tokenizer: {label}")
    print(f"  corpus: {len(docs)} documents, {chars:,} characters, {ntok:,} tokens: {what}")
    times = timed(lambda: [enc.encode_ordinary(d) for d in docs], repeat)
    report("one core: encode_ordinary", ntok, times)
    print(f"  {'':<44} {nbytes / min(times) / 1e6:9.1f}M bytes/s best")
    try:
        fineweb.check_encoding(enc)
    except fineweb.InputError as e:
        print(f"  (shards cannot hold this encoding, so data/fineweb.py's own path is not timed: {e})")
        return
    report(
        "one core: tokenize_batch (encode + pack uint16)",
        ntok,
        timed(lambda: fineweb.tokenize_batch(docs, enc), repeat),
    )
    if workers > 1:

        def pooled() -> None:
            with fineweb.tokenizer_pool(enc, workers) as pool:
                for _ in fineweb.tokenize_stream(docs * 4, enc, pool):
                    pass

        os.sched_setaffinity(0, range(os.cpu_count() or 1))
        report(
            f"{workers} worker processes (data/fineweb.py, incl. start)", 4 * ntok, timed(pooled, max(1, repeat // 2))
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shard", type=Path, help="an existing shard to read (default: write a temporary one)")
    parser.add_argument("--tokens", type=int, default=SHARD_TOKENS, help="tokens in the temporary shard (1e8)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--text", type=Path, nargs="*", default=[], help="text files/folders for the tokenizer")
    parser.add_argument("--encoding", default="gpt2", help="tiktoken encoding (default gpt2)")
    parser.add_argument("--chars", type=int, default=8_000_000, help="characters of text to tokenize")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes for the pooled run")
    parser.add_argument("--synthetic-shards", type=int, default=4, help="train shards for data/synthetic.py (4)")
    parser.add_argument(
        "--synthetic-shard-tokens", type=int, default=20_000_000, help="tokens per synthetic shard (2e7)"
    )
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the target says
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs visible")
    bench_reader(args.shard, args.tokens, args.repeat)
    bench_synthetic(args.synthetic_shards, args.synthetic_shard_tokens)
    bench_tokenizer(args.text, args.encoding, args.chars, args.repeat, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
