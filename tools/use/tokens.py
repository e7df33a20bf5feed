"""Text <-> tokens for trained models: GPT-2's BPE (tiktoken) for a model with GPT-2's vocabulary, else none.

tiktoken downloads GPT-2's BPE files once (from openaipublic.blob.core.windows.net) into its cache folder
(TIKTOKEN_CACHE_DIR, default a data-gym-cache folder in the temp directory); offline without them the
tokenizer cannot be built, which `load_tokenizer` says in one paragraph. Models of other vocabularies (the
smoke preset's 512 synthetic tokens) have no text form: the tools take and print token ids for them.
"""

from __future__ import annotations

from typing import Protocol

GPT2_VOCAB_SIZE = 50257  # GPT-2's BPE: 50256 merges and bytes, then <|endoftext|> (the document separator)


class Tokenizer(Protocol):
    """What the tools need from a tokenizer (a tiktoken.Encoding has it)."""

    def encode_ordinary(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


class TokenizerUnavailable(Exception):
    """The tokenizer's files could not be loaded (offline, no cache); the message says how to get them."""


def load_tokenizer(vocab_size: int) -> Tokenizer | None:
    """GPT-2's tokenizer when vocab_size is GPT-2's, None for any other vocabulary."""
    if vocab_size != GPT2_VOCAB_SIZE:
        return None
    import tiktoken

    try:
        encoding = tiktoken.get_encoding("gpt2")
    except (OSError, ValueError) as e:  # OSError: the BPE files could not be downloaded (requests' errors are OSErrors)
        detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise TokenizerUnavailable(
            f"could not load GPT-2's tokenizer (tiktoken encoding 'gpt2': {type(e).__name__}: {detail}). tiktoken "
            f"downloads GPT-2's BPE files (vocab.bpe, encoder.json) once from openaipublic.blob.core.windows.net "
            f"into TIKTOKEN_CACHE_DIR (default: a data-gym-cache folder in the temp directory). Run this once on a "
            f"machine with internet access, or copy that cache folder from a machine that has it and set "
            f"TIKTOKEN_CACHE_DIR to it. Without the tokenizer, pass token ids with --prompt-tokens."
        ) from None
    if encoding.n_vocab != GPT2_VOCAB_SIZE:
        raise TokenizerUnavailable(f"tiktoken's 'gpt2' encoding has {encoding.n_vocab} tokens, not {GPT2_VOCAB_SIZE}")
    return encoding


def parse_token_ids(text: str, vocab_size: int) -> list[int]:
    """'1,2,3' (commas and/or spaces) -> [1, 2, 3], each checked against the vocabulary."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not all(p.isdigit() for p in parts):
        raise ValueError(f"--prompt-tokens {text!r}: give token ids as integers separated by commas, e.g. 1,2,3")
    ids = [int(p) for p in parts]
    bad = [t for t in ids if t >= vocab_size]
    if bad:
        raise ValueError(
            f"--prompt-tokens: {', '.join(map(str, bad[:5]))} not below this model's vocabulary size {vocab_size}"
        )
    return ids
