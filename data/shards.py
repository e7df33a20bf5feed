"""The token-shard file format, read, written and validated in one place for everything under data/.

A shard is a 256 x int32 little-endian header followed by uint16 tokens:

    header[0] = 20240520   magic
    header[1] = 1          version
    header[2] = N          number of tokens that follow
    header[3:] = 0
    then N little-endian uint16 tokens

The format is llm.c's and the public speedrun's; train_gpt.py keeps its own loaders
(TrainWindows, TokenWindows) so that it stays one self-contained file, and
tests/test_data_trainer_reader.py checks that they read what every writer here wrote.

Vocabulary convention (project-wide): a shard set's vocabulary size V is unpadded
(50257 for GPT-2), every token is below V, and the document separator is the last
token, V - 1 (GPT-2's <|endoftext|> = 50256), written before every document. A
`meta.json` beside the shards may give V as "vocab_size"; without one it is GPT-2's.

Every writer here (data/fineweb.py, data/synthetic.py) and the download
(data/cached_fineweb10B.py) run the same checks as data/check.py, so a shard that
one of them accepts the others accept too. Folders may also hold `sha256sums.txt`
(the format of coreutils' `sha256sum`, so `sha256sum -c` reads it): the digests that
were verified or written for each shard, which check.py compares against.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_BYTES = 2  # uint16
MAX_VOCAB_SIZE = 2**16  # tokens are uint16

# The GPT-2 vocabulary; its last token, 50256, is <|endoftext|>, written before every document.
GPT2_VOCAB_SIZE = 50257
# FineWeb shards hold 100M tokens (llm.c's dev/data/fineweb.py); the last one of a split may hold fewer.
SHARD_TOKENS = 10**8

META_FILE = "meta.json"
SUMS_FILE = "sha256sums.txt"
# In a folder of shards that a writer has not finished (data/fineweb.py's staging folder): check.py rejects it.
INCOMPLETE_FILE = "INCOMPLETE"
VAL_GLOB = "*_val_*.bin"
TRAIN_GLOB = "*_train_*.bin"

_DATA_DIR = Path(__file__).resolve().parent  # data/: the download's default folders are under it

# Tokens scanned per step when validating: bounds the temporary memory of a check to ~50 MB.
_SCAN_CHUNK = 1 << 24


class ShardError(ValueError):
    """A shard file (or folder) that is not valid; the message names the file and the fix."""


@dataclass(frozen=True)
class ShardInfo:
    """What validating one shard found."""

    path: Path
    split: str | None  # "val" or "train" from the name (`*_val_*.bin`, `*_train_*.bin`), else None
    tokens: int
    documents: int  # separator tokens (V - 1) in the shard: documents that start in it
    max_token: int


def split_of(path: str | os.PathLike[str]) -> str | None:
    name = Path(path).name
    if not name.endswith(".bin"):
        return None
    if "_val_" in name:
        return "val"
    if "_train_" in name:
        return "train"
    return None


def fix_hint(path: str | os.PathLike[str]) -> str:
    """How to get a good copy of this shard back: a command to run, built from its name and its folder."""
    path = Path(path)
    name = path.name
    if name.startswith("synthetic_"):
        return f"make the synthetic shards again with `{_synthetic_command(path.parent)}"
    for prefix in ("finewebedu", "fineweb"):
        if name.startswith(f"{prefix}_"):
            command, note = _download_command(path.parent, prefix)
            return (
                f"run `{command}` again{note}: it checks the shards already there against their published sha256, "
                f"replaces broken ones and fetches missing ones"
            )
    return "make it again with `python data/fineweb.py` from its source text (see data/README.md)"


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _download_command(folder: Path, prefix: str) -> tuple[str, str]:
    """(data/cached_fineweb10B.py with the N, --variant and --out that fetch this folder's shard set again, a note)."""
    if prefix == "finewebedu":
        variant, default = "edu10B", "finewebedu10B"
    elif folder.name == "fineweb100B":
        variant, default = "100B", "fineweb100B"
    else:
        variant, default = "10B", "fineweb10B"
    indices = []
    for shard in folder.glob(f"{prefix}_train_*.bin"):
        stem = shard.name[len(f"{prefix}_train_") : -len(".bin")]
        if stem.isdigit():
            indices.append(int(stem))
    command = "python data/cached_fineweb10B.py" + (f" {max(indices)}" if indices else "")
    command += f" --variant {variant}" if variant != "10B" else ""
    if _same_folder(folder, _DATA_DIR / default):
        return command, ""
    command += f" --out {shlex.quote(str(folder))}"
    # Outside data/fineweb10B and data/fineweb100B, a fineweb_*.bin name does not tell the two sets apart.
    return command, " (add `--variant 100B` if they are FineWeb-100B shards)" if variant == "10B" else ""


def _synthetic_command(folder: Path) -> str:
    """data/synthetic.py with the settings in the folder's meta.json (the output is a pure function of them)."""
    command = f"python data/synthetic.py --out {shlex.quote(str(folder))}"
    flags = {"seed": "--seed", "vocab_size": "--vocab-size", "train_shards": "--train-shards"}
    flags.update(shard_tokens="--shard-tokens", val_tokens="--val-tokens")
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        settings = [f"{flag} {int(meta[key])}" for key, flag in flags.items()]
    except (OSError, ValueError, TypeError, KeyError):  # no usable meta.json: only the user knows the settings
        return f"{command} --force` with the settings it was made with (see --help)"
    return f"{command} {' '.join(settings)} --force`"


def _not_a_shard_reason(raw: bytes) -> str:
    """Name the usual impostors of a shard, from its first bytes."""
    if raw.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer file, not the data (the repository was cloned without git-lfs)"
    if raw.lstrip()[:1] == b"<":
        return "it is an HTML/XML page (a proxy or login page saved instead of the file?)"
    if raw.startswith(b"PAR1"):
        return "it is a Parquet file: raw text, not tokens (make shards from it with data/fineweb.py --input)"
    return "this is not a FineWeb/llm.c token shard (.bin)"


def read_header(path: str | os.PathLike[str]) -> int:
    """Validate a shard's header against its file size and return its token count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as e:
        raise ShardError(f"cannot read shard {path}: {e.strerror or e}. Check the path, or {fix_hint(path)}.") from e
    if len(raw) < HEADER_BYTES:
        what = _not_a_shard_reason(raw) if raw else "the file is empty"
        raise ShardError(
            f"{path} is {size} bytes, shorter than the {HEADER_BYTES}-byte shard header ({what}); {fix_hint(path)}."
        )
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != MAGIC:
        raise ShardError(
            f"{path}: magic number {int(header[0])} is not {MAGIC}: {_not_a_shard_reason(raw)}; {fix_hint(path)}."
        )
    if header[1] != VERSION:
        raise ShardError(
            f"{path}: shard version {int(header[1])} is not supported (expected {VERSION}: uint16 tokens); "
            f"{fix_hint(path)}."
        )
    ntok = int(header[2])
    expected = HEADER_BYTES + TOKEN_BYTES * ntok
    if ntok <= 0:
        raise ShardError(f"{path}: the header says {ntok} tokens: an empty or damaged shard; {fix_hint(path)}.")
    if size != expected:
        kind = "truncated (an interrupted download or copy?)" if size < expected else "trailing bytes after the tokens"
        raise ShardError(
            f"{path}: header says {ntok:,} tokens ({expected:,} bytes) but the file has {size:,} bytes: {kind}; "
            f"{fix_hint(path)}."
        )
    return ntok


def read_tokens(path: str | os.PathLike[str], mmap: bool = True) -> np.ndarray:
    """All tokens of a shard whose header is valid, as a uint16 array (memory-mapped, read-only, by default)."""
    ntok = read_header(path)
    if mmap:
        return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(ntok,))
    with open(path, "rb") as f:
        f.seek(HEADER_BYTES)
        tokens = np.fromfile(f, dtype="<u2", count=ntok)
    if tokens.size != ntok:  # the file shrank between the header check and the read
        raise ShardError(f"{path}: file changed while reading it; read it again.")
    return tokens


def check_vocab_size(vocab_size: int, where: str) -> None:
    if not 2 <= vocab_size <= MAX_VOCAB_SIZE:
        raise ShardError(
            f"{where}: vocabulary size {vocab_size} is outside 2..{MAX_VOCAB_SIZE} (tokens are uint16 and the last "
            f"one separates documents)."
        )


def scan_tokens(tokens: np.ndarray, vocab_size: int, where: str) -> tuple[int, int]:
    """(documents, max_token) of a token array; ShardError if a token is >= vocab_size or no separator appears.

    `where` names the file in the message. The separator is vocab_size - 1 (the convention above).
    """
    check_vocab_size(vocab_size, where)
    if tokens.size == 0:
        raise ShardError(f"{where}: no tokens; a shard holds at least one document.")
    sep = vocab_size - 1
    documents = 0
    max_token = 0
    for start in range(0, tokens.size, _SCAN_CHUNK):
        chunk = np.asarray(tokens[start : start + _SCAN_CHUNK])
        chunk_max = int(chunk.max())
        if chunk_max >= vocab_size:
            at = start + int(np.argmax(chunk >= vocab_size))
            raise ShardError(
                f"{where}: token {int(tokens[at])} at position {at:,} is not below the vocabulary size {vocab_size}: "
                f"the shard was made with another tokenizer, or the vocabulary size is wrong (a meta.json beside the "
                f"shards gives it, GPT-2's {GPT2_VOCAB_SIZE} otherwise; check.py --vocab-size overrides)."
            )
        max_token = max(max_token, chunk_max)
        documents += int(np.count_nonzero(chunk == sep))
    if documents == 0:
        raise ShardError(
            f"{where}: no document separator (token {sep}, the last of a {vocab_size}-token vocabulary) in "
            f"{tokens.size:,} tokens: shards carry a separator before every document, so the vocabulary size is "
            f"wrong or the shard is not tokenized text."
        )
    return documents, max_token


def validate_shard(path: str | os.PathLike[str], vocab_size: int = GPT2_VOCAB_SIZE) -> ShardInfo:
    """Check a shard completely: header, size, tokens < vocab_size, separators present. Raises ShardError."""
    path = Path(path)
    tokens = read_tokens(path)
    try:
        documents, max_token = scan_tokens(tokens, vocab_size, str(path))
    except ShardError as e:
        raise ShardError(f"{e} To get a good copy: {fix_hint(path)}.") from None
    return ShardInfo(path, split_of(path), int(tokens.size), documents, max_token)


def make_header(ntok: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = MAGIC, VERSION, ntok
    return header.tobytes()


def write_shard(path: str | os.PathLike[str], tokens: np.ndarray, *, vocab_size: int | None = None) -> Path:
    """Write tokens as a shard, atomically: a reader never sees a half-written file under the final name.

    With vocab_size, the tokens must pass the same checks as check.py (tokens < vocab_size, separators present).
    """
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens for {path} must be one-dimensional, got shape {tokens.shape}")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= 2**16):
        raise ValueError(f"tokens for {path} must fit in uint16 (0..65535), got {tokens.min()}..{tokens.max()}")
    if vocab_size is not None:
        scan_tokens(tokens, vocab_size, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("wb") as f:
            f.write(make_header(int(tokens.size)))
            f.write(tokens.astype("<u2", copy=False).tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    read_header(path)  # what landed on disk is what the header promises
    return path


def shard_name(prefix: str, index: int, n_val: int = 1) -> str:
    """FineWeb's naming: the first n_val shards (index 0..) are val, the rest train, numbered on from there."""
    return f"{prefix}_{'val' if index < n_val else 'train'}_{index:06d}.bin"


class ShardWriter:
    """Packs a stream of token arrays into shards, val first: `<prefix>_val_000000.bin`, `<prefix>_train_000001.bin` ...

    The first `val_tokens` tokens make the val shard, then every `shard_tokens` tokens a train shard; the last
    train shard may be shorter (see close()). A document may straddle two shards (as in llm.c's FineWeb shards). Each shard
    passes scan_tokens before it is written, and its sha256 goes to `sha256sums.txt` as soon as it lands.
    """

    def __init__(
        self,
        out: str | os.PathLike[str],
        prefix: str,
        vocab_size: int,
        shard_tokens: int = SHARD_TOKENS,
        val_tokens: int | None = None,
    ) -> None:
        check_vocab_size(vocab_size, f"shards for {out}")
        if shard_tokens <= 0 or (val_tokens is not None and val_tokens <= 0):
            raise ValueError("shard_tokens and val_tokens must be positive")
        self.out = Path(out)
        self.prefix = prefix
        self.vocab_size = vocab_size
        self.shard_tokens = shard_tokens
        self.val_tokens = shard_tokens if val_tokens is None else val_tokens
        self.written: list[Path] = []
        self.total_tokens = 0
        self._buf = np.empty(self.val_tokens, dtype=np.uint16)  # the shard being filled
        self._fill = 0

    def add(self, tokens: np.ndarray) -> None:
        """Append tokens (any integer dtype, values < vocab_size); full shards are written as they fill up."""
        tokens = np.asarray(tokens)
        if tokens.size and (int(tokens.max()) >= self.vocab_size or int(tokens.min()) < 0):
            raise ShardError(
                f"tokens for {self.out} must lie in 0..{self.vocab_size - 1}, got {tokens.min()}..{tokens.max()}"
            )
        self.total_tokens += int(tokens.size)
        while tokens.size:
            take = min(tokens.size, self._buf.size - self._fill)
            self._buf[self._fill : self._fill + take] = tokens[:take]
            self._fill += take
            tokens = tokens[take:]
            if self._fill == self._buf.size:
                self._flush()

    def close(self) -> list[Path]:
        """Write the last, partial shard (if any tokens are left) and return every shard written.

        When the stream ends inside a document that began in the previous shard, that tail has no separator of
        its own: it is appended to the previous shard (slightly longer than the others) rather than left alone.
        """
        if self._fill and self.written and not np.any(self._buf[: self._fill] == self.vocab_size - 1):
            last = self.written.pop()
            tail = self._buf[: self._fill].copy()
            self._buf = np.concatenate([read_tokens(last, mmap=False), tail])
            self._fill = self._buf.size
        if self._fill:
            self._flush()
        return self.written

    def _flush(self) -> None:
        path = self.out / shard_name(self.prefix, len(self.written))
        tokens = self._buf[: self._fill]
        if not np.any(tokens == self.vocab_size - 1):
            raise ShardError(
                f"{path} would hold {tokens.size:,} tokens without a document separator: they all lie inside one "
                f"document longer than a shard. Use a larger --shard-tokens / --val-tokens (each shard must contain "
                f"a separator: it is how data/check.py tells that the vocabulary is right)."
            )
        write_shard(path, tokens, vocab_size=self.vocab_size)
        update_sums(self.out, {path.name: sha256_file(path)})
        self.written.append(path)
        if self._buf.size != self.shard_tokens:
            self._buf = np.empty(self.shard_tokens, dtype=np.uint16)
        self._fill = 0


def list_shards(folder: str | os.PathLike[str]) -> list[Path]:
    """The shards a trainer reads from a folder: `*_val_*.bin` sorted by name, then `*_train_*.bin` sorted by name
    (for the writers' output, the order of the token stream)."""
    folder = Path(folder)
    return sorted(folder.glob(VAL_GLOB), key=lambda p: p.name) + sorted(folder.glob(TRAIN_GLOB), key=lambda p: p.name)


def folder_vocab_size(folder: str | os.PathLike[str]) -> tuple[int, str]:
    """(vocabulary size, where it came from): meta.json's "vocab_size" when the folder has one, else GPT-2's."""
    meta_path = Path(folder) / META_FILE
    if not meta_path.is_file():
        return GPT2_VOCAB_SIZE, "GPT-2 (no meta.json)"
    try:
        meta = json.loads(meta_path.read_text())
        vocab_size = meta["vocab_size"]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise ShardError(
            f'{meta_path} has no readable integer "vocab_size" ({type(e).__name__}: {e}); fix or delete it '
            f"(without it shards are checked against GPT-2's {GPT2_VOCAB_SIZE} tokens), or pass --vocab-size."
        ) from None
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise ShardError(f'{meta_path}: "vocab_size" must be an integer, got {vocab_size!r}; fix or delete it.')
    check_vocab_size(vocab_size, str(meta_path))
    return vocab_size, str(meta_path)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def read_sums(folder: str | os.PathLike[str]) -> dict[str, str]:
    """{file name: sha256} from a folder's sha256sums.txt ({} when there is none)."""
    sums_path = Path(folder) / SUMS_FILE
    if not sums_path.is_file():
        return {}
    try:
        text = sums_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ShardError(
            f"{sums_path} is not a text file of digests ({e.reason} at byte {e.start}: damaged, or not written by "
            f"sha256sum); delete it (the next download or write makes a new one) or restore a good copy."
        ) from None
    except OSError as e:
        raise ShardError(f"cannot read {sums_path}: {e.strerror or e}; fix its permissions or delete it.") from None
    sums: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition(" ")
        name = name.lstrip(" *")  # `sha256sum` writes "<hex>  <name>" (text) or "<hex> *<name>" (binary)
        if len(digest) != 64 or not name or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise ShardError(
                f"{sums_path}, line {n}: expected '<64 hex digits>  <file name>', got {line!r}; fix or delete the file."
            )
        sums[name] = digest.lower()
    return sums


def update_sums(folder: str | os.PathLike[str], entries: dict[str, str], remove: Iterable[str] = ()) -> None:
    """Merge entries into a folder's sha256sums.txt (atomically), dropping the names in `remove`."""
    folder = Path(folder)
    sums = read_sums(folder)
    sums.update(entries)
    for name in remove:
        sums.pop(name, None)
    sums_path = folder / SUMS_FILE
    if not sums:
        sums_path.unlink(missing_ok=True)
        return
    tmp = sums_path.with_name(SUMS_FILE + ".tmp")
    tmp.write_text("".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items())))
    os.replace(tmp, sums_path)
