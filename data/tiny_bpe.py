"""A tiny byte-level BPE trained in-process, for tests and benchmarks where GPT-2's BPE files cannot be fetched.

`train_encoding` returns a real `tiktoken.Encoding` built like GPT-2's: GPT-2's pre-tokenizer
pattern, the 256 byte tokens, then merges learned from the given text (most frequent adjacent pair
first, as in Sennrich et al.'s BPE and GPT-2), and <|endoftext|> as the last token. Code written for
`tiktoken.get_encoding("gpt2")` runs on it unchanged; only the vocabulary is small.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import regex  # tiktoken's own dependency; supports the \p{L} classes of GPT-2's pattern
import tiktoken

# GPT-2's pre-tokenizer (tiktoken's r50k/gpt2 pat_str): contractions, letters, digits, punctuation, spaces.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"


def train_encoding(texts: Iterable[str], n_merges: int = 256, name: str = "tiny-bpe") -> tiktoken.Encoding:
    """A byte-level BPE with 256 + (up to) n_merges tokens + <|endoftext|>; deterministic for the same texts."""
    ranks = learn_merges(texts, n_merges)
    return tiktoken.Encoding(name, pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: len(ranks)})


def learn_merges(texts: Iterable[str], n_merges: int) -> dict[bytes, int]:
    """{token bytes: rank}: the 256 bytes, then the merged pairs in the order they were learned."""
    pattern = regex.compile(GPT2_PATTERN)
    counts = Counter(piece.encode() for text in texts for piece in pattern.findall(text))
    words = [[bytes([b]) for b in word] for word in counts]  # each distinct pre-token, split into tokens
    freq = list(counts.values())
    # Pair counts and the words each pair occurs in, updated only where a merge changes something.
    pairs: Counter[tuple[bytes, bytes]] = Counter()
    where: dict[tuple[bytes, bytes], set[int]] = defaultdict(set)
    for w, parts in enumerate(words):
        for pair in zip(parts, parts[1:], strict=False):
            pairs[pair] += freq[w]
            where[pair].add(w)
    ranks = {bytes([b]): b for b in range(256)}
    for _ in range(n_merges):
        if not pairs:
            break
        # Most frequent pair; ties go to the larger pair so that the result does not depend on dict order.
        (a, b), count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if count <= 0:
            break
        ranks.setdefault(a + b, len(ranks))
        for w in where.pop((a, b)):
            parts = words[w]
            for pair in zip(parts, parts[1:], strict=False):
                pairs[pair] -= freq[w]
            merged: list[bytes] = []
            i = 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    merged.append(a + b)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            words[w] = merged
            for pair in zip(merged, merged[1:], strict=False):
                pairs[pair] += freq[w]
                where[pair].add(w)
        pairs = +pairs  # drop pairs whose count fell to zero
    return ranks
