"""The token-shard file format, read and written in one place for everything under data/.

A shard is a 256 x int32 little-endian header followed by uint16 tokens:

    header[0] = 20240520   magic
    header[1] = 1          version
    header[2] = N          number of tokens that follow
    header[3:] = 0
    then N little-endian uint16 tokens

The format is llm.c's and the public speedrun's; train_gpt.py keeps its own reader
so that it stays one self-contained file, and a test checks that both agree.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_BYTES = 2  # uint16

# The GPT-2 vocabulary; its last token, 50256, is <|endoftext|>, written before every document.
GPT2_VOCAB_SIZE = 50257

DOWNLOAD_HINT = "run `python data/cached_fineweb10B.py 9` to download FineWeb shards again"


class ShardError(ValueError):
    """A shard file that is not a valid token shard; the message names the file and the fix."""


def read_header(path: str | os.PathLike[str]) -> int:
    """Validate a shard's header against its file size and return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise ShardError(f"cannot read shard {path}: {e.strerror or e}. Check the path, or {DOWNLOAD_HINT}.") from e
    if len(raw) < HEADER_BYTES:
        raise ShardError(
            f"{path} is {size} bytes, shorter than the {HEADER_BYTES}-byte shard header: the file is truncated "
            f"or not a token shard; delete it and {DOWNLOAD_HINT}."
        )
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise ShardError(
            f"{path}: magic number {int(header[0])} is not {MAGIC}: this is not a FineWeb/llm.c token shard "
            f"(.bin); {DOWNLOAD_HINT}, or make shards with data/fineweb.py or data/synthetic.py."
        )
    if header[1] != VERSION:
        raise ShardError(
            f"{path}: shard version {int(header[1])} is not supported (expected {VERSION}); {DOWNLOAD_HINT}."
        )
    ntok = int(header[2])
    expected = HEADER_BYTES + TOKEN_BYTES * ntok
    if ntok < 0 or size != expected:
        raise ShardError(
            f"{path}: header says {ntok} tokens ({expected} bytes) but the file has {size} bytes: "
            f"{'truncated (an interrupted download?)' if size < expected else 'trailing bytes'}; "
            f"delete it and {DOWNLOAD_HINT}."
        )
    return ntok


def read_tokens(path: str | os.PathLike[str], mmap: bool = True) -> np.ndarray:
    """All tokens of a validated shard as a uint16 array (memory-mapped, read-only, by default)."""
    ntok = read_header(path)
    if mmap:
        return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(ntok,))
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        tokens = np.fromfile(f, dtype="<u2", count=ntok)
    if tokens.size != ntok:  # the file shrank between the header check and the read
        raise ShardError(f"{path}: file changed while reading it; read it again.")
    return tokens


def make_header(ntok: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, ntok
    return header.tobytes()


def write_shard(path: str | os.PathLike[str], tokens: np.ndarray) -> Path:
    """Write tokens as a shard, atomically: a reader never sees a half-written file under the final name."""
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens for {path} must be one-dimensional, got shape {tokens.shape}")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= 2**16):
        raise ValueError(f"tokens for {path} must fit in uint16 (0..65535), got {tokens.min()}..{tokens.max()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(make_header(int(tokens.size)))
        f.write(tokens.astype("<u2", copy=False).tobytes())
    os.replace(tmp, path)
    return path
