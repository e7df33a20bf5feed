"""Tokenize text into token shards with the GPT-2 tokenizer: raw FineWeb from the Hub, or your own files.

    python data/fineweb.py                              # FineWeb sample-10BT -> data/fineweb10B/ (~10B tokens)
    python data/fineweb.py --max-tokens 1000000000      # stop after 1B tokens: the val shard + 9 train shards
    python data/fineweb.py --variant edu10B             # FineWeb-Edu sample-10BT -> data/finewebedu10B/
    python data/fineweb.py --input my_texts/ more.jsonl --out data/mycorpus --val-tokens 1000000

Every document becomes <|endoftext|> followed by its tokens (tiktoken `encode_ordinary`: text that
spells "<|endoftext|>" stays plain text), and the stream is cut into shards of --shard-tokens tokens
(100M), the first --val-tokens tokens (default: one shard) being the val shard. This is what llm.c's
dev/data/fineweb.py does, and what the published kjj0/fineweb10B-gpt2 shards hold; ours come out in
the same document order (the Hub's parquet files sorted by name, rows in order). Tokenization runs in
--workers processes (default: every CPU core) and keeps document order, so the output does not depend
on the number of workers.

From the Hub, the parquet files of the sample are downloaded one at a time, as tokenization needs
them, into data/raw/<repository>/ (resumable and checked against the sha256 the Hub publishes; they
are kept, so a second run needs no network). Local inputs, files or folders (searched recursively):
  .parquet           a `text` column (--text-field to use another)
  .jsonl[.gz]        one JSON object per line with a `text` field
  .txt[.gz], .md     one document per file; --txt-docs line: one per non-empty line;
                     --txt-docs blank: documents separated by blank lines
A meta.json beside the shards records the tokenizer and vocabulary size for data/check.py and the trainer.

Shards are written into <out>/.incoming/ (marked unfinished, so data/check.py rejects it) and moved
into --out only once the whole set is written, train shards first and the val shard last: an
interrupted or failed run leaves --out as it was (with --force, the old shards stay until the new
set replaces them), and never a partial set that passes for a complete one.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path
from typing import IO

import numpy as np
import pyarrow.parquet as pq
import tiktoken
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import hub  # noqa: E402
from data.shards import (  # noqa: E402
    INCOMPLETE_FILE,
    MAX_VOCAB_SIZE,
    META_FILE,
    SHARD_TOKENS,
    ShardError,
    ShardWriter,
    list_shards,
    read_sums,
    sha256_file,
    update_sums,
)

DATA_DIR = Path(__file__).resolve().parent
TEXT_SUFFIXES = (".txt", ".md", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
BATCH_CHARS = 1 << 21  # text per task sent to a worker: large enough to amortize the inter-process copy
BATCH_DOCS = 2048


class InputError(Exception):
    """Bad user input (a file, a flag, a tokenizer); the message names it and says what to do."""


@dataclass(frozen=True)
class Source:
    repo_id: str
    folder: str  # folder of parquet files in the repository
    out: str  # default output folder, under data/
    prefix: str  # shard names: <prefix>_val_000000.bin, <prefix>_train_000001.bin, ...


# The same variant names as data/cached_fineweb10B.py, whose shards were made from these samples.
SOURCES = {
    "10B": Source("HuggingFaceFW/fineweb", "sample/10BT", "fineweb10B", "fineweb"),
    "100B": Source("HuggingFaceFW/fineweb", "sample/100BT", "fineweb100B", "fineweb"),
    "edu10B": Source("HuggingFaceFW/fineweb-edu", "sample/10BT", "finewebedu10B", "finewebedu"),
}


# ----------------------------------------------------------------------------- documents


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _decode_error(path: Path, e: UnicodeDecodeError) -> InputError:
    return InputError(
        f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); convert it, e.g. `iconv -f latin1 -t utf-8`."
    )


def iter_txt(path: Path, mode: str) -> Iterator[str]:
    try:
        with _open_text(path) as f:
            if mode == "line":
                for line in f:
                    if line.strip():
                        yield line.rstrip("\n")
                return
            text = f.read()
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None
    if mode == "file":
        yield text
    else:  # "blank": documents separated by one or more blank lines
        for doc in re.split(r"\n(?:[ \t\r\f\v]*\n)+", text):
            if doc.strip():
                yield doc.strip("\n")


def iter_jsonl(path: Path, field: str) -> Iterator[str]:
    lineno = 0
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(
                        f"{path}, line {lineno}: not valid JSON ({e.msg}); each line must be an object"
                    ) from None
                text = record.get(field) if isinstance(record, dict) else None
                if not isinstance(text, str):
                    keys = sorted(record) if isinstance(record, dict) else type(record).__name__
                    raise InputError(
                        f"{path}, line {lineno}: no string field {field!r} (found {keys}); pass --text-field NAME"
                    )
                yield text
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None


def iter_parquet(path: Path, field: str) -> Iterator[str]:
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError subclasses for a file it cannot read
        raise InputError(f"{path} is not a readable Parquet file ({e}); download or export it again.") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise InputError(f"{path} has no column {field!r} (columns: {', '.join(names)}); pass --text-field NAME")
    for batch in pf.iter_batches(columns=[field], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield text


def expand_inputs(paths: list[Path]) -> list[Path]:
    """Files to read, in order: each file as given, each folder's supported files sorted by path."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(SUPPORTED))
            if not found:
                raise InputError(f"{path} holds no {', '.join(SUPPORTED)} files")
            files += found
        elif path.is_file():
            if not path.name.endswith(SUPPORTED):
                raise InputError(f"{path}: unsupported file type; inputs are {', '.join(SUPPORTED)} files or folders")
            files.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return files


def iter_file(path: Path, field: str, txt_mode: str) -> Iterator[str]:
    if path.name.endswith(PARQUET_SUFFIXES):
        return iter_parquet(path, field)
    if path.name.endswith(JSONL_SUFFIXES):
        return iter_jsonl(path, field)
    return iter_txt(path, txt_mode)


def local_documents(files: list[Path], field: str, txt_mode: str) -> Iterator[str]:
    for path in files:
        yield from iter_file(path, field, txt_mode)


def list_raw(source: Source, raw_dir: Path) -> tuple[str, list[hub.RemoteFile]]:
    """(commit, the sample's parquet files in order) from the Hub; InputError when it cannot be listed."""
    try:
        commit, files = hub.list_remote(source.repo_id, source.folder, ".parquet")
    except hub.HubUnreachable as e:
        have = sorted(raw_dir.glob("**/*.parquet"))
        also = (
            f" The {len(have)} parquet file(s) already in {raw_dir} can be tokenized as they are with "
            f"`python data/fineweb.py --input {raw_dir} --prefix {source.prefix} --out ...`."
            if have
            else ""
        )
        raise InputError(
            f"could not reach the Hugging Face Hub at {hub.endpoint()} ({e}) to list {source.repo_id}/{source.folder}. "
            f"Run this on a machine that can reach it (unset HF_HUB_OFFLINE if it is set; behind a proxy set "
            f"HTTPS_PROXY), or download ready-made shards with `python data/cached_fineweb10B.py`.{also}"
        ) from None
    except hub.HubError as e:
        raise InputError(str(e)) from None
    if not files:
        raise InputError(f"{source.repo_id} has no parquet files under {source.folder} (commit {commit[:12]})")
    return commit, files


def fetch_raw(
    source: Source, raw_dir: Path, commit: str, files: list[hub.RemoteFile], stop: threading.Event | None = None
) -> Iterator[Path]:
    """The listed parquet files, in order, each downloaded (or taken from the HF cache) and verified when needed.

    With a tokenizer pool this runs in the pool's task thread (imap reads its input there), which Ctrl-C does not
    reach: `stop` ends a download there at its next chunk, so that the pool can shut down at once.
    """
    for i, remote in enumerate(files, 1):
        dest = raw_dir / remote.name
        tag = f"[{i}/{len(files)}] {remote.name}"
        if not _raw_ok(dest, remote):
            cached = hub.cached_file(source.repo_id, remote.name, revision=commit)
            if cached is not None and cached.stat().st_size == remote.size and _digest_ok(cached, remote):
                hub.install(cached, dest)
            else:
                try:
                    hub.download(source.repo_id, remote, dest, commit, tag, stop)
                except (hub.DownloadError, hub.HubError) as e:
                    raise InputError(f"{e}. Run the same command again to retry.") from None
            if remote.sha256 is not None:
                update_sums(dest.parent, {dest.name: remote.sha256})
        yield dest


def _digest_ok(path: Path, remote: hub.RemoteFile) -> bool:
    return remote.sha256 is None or sha256_file(path) == remote.sha256


def _raw_ok(dest: Path, remote: hub.RemoteFile) -> bool:
    """A raw file already here counts when its size matches and its digest was verified (or verifies now)."""
    if not dest.is_file() or dest.stat().st_size != remote.size:
        return False
    if remote.sha256 is not None and read_sums(dest.parent).get(dest.name) == remote.sha256:
        return True
    return _digest_ok(dest, remote)


def hub_documents(
    source: Source,
    raw_dir: Path,
    field: str,
    commit: str,
    files: list[hub.RemoteFile],
    stop: threading.Event | None = None,
) -> Iterator[str]:
    for path in fetch_raw(source, raw_dir, commit, files, stop):
        yield from iter_parquet(path, field)


# ----------------------------------------------------------------------------- tokenization

_ENCODING: tiktoken.Encoding | None = None
SIGNAL_POLL_S = 0.25  # longest wait on the pool between two looks for a pending Ctrl-C


def _init_worker(encoding: tiktoken.Encoding) -> None:
    global _ENCODING
    _ENCODING = encoding
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool


def tokenize_batch(texts: list[str], encoding: tiktoken.Encoding | None = None) -> np.ndarray:
    """Documents -> one uint16 array: for each, the separator (<|endoftext|>) then its tokens."""
    enc = encoding or _ENCODING
    assert enc is not None, "tokenize_batch runs in a worker set up by _init_worker, or with an encoding"
    pieces = [enc.encode_ordinary(text) for text in texts]
    out = np.empty(sum(len(p) for p in pieces) + len(pieces), dtype=np.uint16)
    pos = 0
    for p in pieces:
        out[pos] = enc.eot_token
        out[pos + 1 : pos + 1 + len(p)] = p
        pos += 1 + len(p)
    return out


def batches(documents: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    chars = 0
    for doc in documents:
        batch.append(doc)
        chars += len(doc)
        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


@contextmanager
def tokenizer_pool(encoding: tiktoken.Encoding, workers: int) -> Iterator[Pool | None]:
    """Worker processes holding the encoding (None for one worker: tokenize in this process).

    Forked (where the OS can) before this process starts any thread (tqdm's monitor, pyarrow's readers), as
    llm.c's fineweb.py does; spawn would re-import the main module in every worker, which a script read from
    stdin does not have.
    """
    if workers <= 1:
        yield None
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with multiprocessing.get_context(method).Pool(workers, initializer=_init_worker, initargs=(encoding,)) as pool:
        yield pool


def tokenize_stream(documents: Iterable[str], encoding: tiktoken.Encoding, pool: Pool | None) -> Iterator[np.ndarray]:
    """Token arrays, one per batch of documents, in document order, tokenized by the pool's workers (or here)."""
    if pool is None:
        for batch in batches(documents):
            yield tokenize_batch(batch, encoding)
        return
    # imap keeps order; the task pipe gives back-pressure, so text is read only a little ahead of the workers.
    results = pool.imap(tokenize_batch, batches(documents))
    while True:
        # Wait in short slices: Ctrl-C may be delivered to another thread of this process (the download or tqdm's
        # monitor), and then an untimed wait here never wakes to raise KeyboardInterrupt (seen under load).
        try:
            yield results.next(timeout=SIGNAL_POLL_S)
        except multiprocessing.TimeoutError:
            continue
        except StopIteration:
            return


def load_encoding(name: str) -> tiktoken.Encoding:
    try:
        return tiktoken.get_encoding(name)
    except (OSError, ValueError) as e:  # OSError: the BPE files could not be downloaded; ValueError: unknown name
        raise InputError(
            f"could not load the tiktoken encoding {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:120]}). "
            f"tiktoken downloads "
            f"the GPT-2 BPE files once (from openaipublic.blob.core.windows.net) into TIKTOKEN_CACHE_DIR (default: "
            f"a data-gym-cache folder in the temp directory): run this once on a machine with internet access, or "
            f"copy that cache folder here and set TIKTOKEN_CACHE_DIR to it."
        ) from None


def check_encoding(encoding: tiktoken.Encoding) -> int:
    """The vocabulary size; the encoding must fit uint16 and have <|endoftext|> as its last token."""
    vocab_size = encoding.n_vocab
    try:
        eot = encoding.eot_token
    except (KeyError, AttributeError):
        raise InputError(f"the encoding {encoding.name!r} has no <|endoftext|> token to separate documents") from None
    if vocab_size > MAX_VOCAB_SIZE or eot != vocab_size - 1:
        raise InputError(
            f"the encoding {encoding.name!r} has {vocab_size} tokens and <|endoftext|> = {eot}: shards need at most "
            f"{MAX_VOCAB_SIZE} tokens (uint16) and the separator as the last token (as GPT-2's 50256 of 50257)."
        )
    return vocab_size


# ----------------------------------------------------------------------------- main


STAGING = ".incoming"  # inside --out: shards are written here and moved in only once the whole set is done


def check_out(out: Path, prefix: str, force: bool) -> list[Path]:
    """The shards of `prefix` already in `out`, which the new set will replace (only with --force), for
    install_set to remove once the new set is complete. InputError when the folder cannot take the new set."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder: pass a folder for the shards (it is created if needed)")
    shards = list_shards(out) if out.is_dir() else []
    others = [p.name for p in shards if not p.name.startswith(f"{prefix}_")]
    if others:
        raise InputError(
            f"{out} holds other shards ({', '.join(others[:3])}{' ...' if len(others) > 3 else ''}): the trainer reads "
            f"every *_val_*/*_train_*.bin of its folder, so one folder holds one shard set; choose another --out."
        )
    existing = [p for p in shards if p.name.startswith(f"{prefix}_")]
    read_sums(out)  # a damaged sha256sums.txt there stops us now, not after hours of tokenizing (ShardError)
    if existing and not force:
        raise InputError(
            f"{out} already holds {len(existing)} {prefix}_*.bin shard(s); pass --force to replace them, or choose "
            f"another --out folder (or --prefix)."
        )
    return existing


def start_staging(out: Path) -> Path:
    """An empty staging folder inside out, marked unfinished so that data/check.py never takes it for a shard set."""
    staging = out / STAGING
    if staging.exists():  # left by a run that was killed: its partial work cannot be resumed
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / INCOMPLETE_FILE).write_text(
        f"Shards of an unfinished data/fineweb.py run into {out}, moved there once the set is complete. Not a shard "
        f"set: the next run into {out} deletes this folder.\n"
    )
    return staging


def install_set(staging: Path, out: Path, new: list[Path], old: list[Path], meta: dict[str, object]) -> list[Path]:
    """Replace the old shards in out by the complete new set from staging. Returns the new shards' paths in out.

    Train shards move in first and the val shard last, so that an interruption in between leaves a folder that
    data/check.py and the trainer reject (no val shard), never a partial set that passes for a complete one.
    """
    digests = read_sums(staging)
    (out / META_FILE).unlink(missing_ok=True)
    for path in old:
        path.unlink(missing_ok=True)
    update_sums(out, {}, remove=[p.name for p in old])
    val, train = new[0], new[1:]
    for path in train:
        os.replace(path, out / path.name)
    update_sums(out, {p.name: digests[p.name] for p in new})
    os.replace(val, out / val.name)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(staging)
    return [out / p.name for p in new]


def build(args: argparse.Namespace, encoding: tiktoken.Encoding) -> int:
    vocab_size = check_encoding(encoding)
    out, prefix = args.out, args.prefix
    stop = threading.Event()  # set on any exit from tokenizing: a download in the pool's task thread then stops
    # Everything that can fail before tokenizing does, before anything in --out is touched.
    old = check_out(out, prefix, args.force)
    if args.input:
        files = expand_inputs(args.input)
        documents: Iterable[str] = local_documents(files, args.text_field, args.txt_docs)
        what = f"{len(files)} local file(s)"
    else:
        source = SOURCES[args.variant]
        raw_dir = args.raw_dir or DATA_DIR / "raw" / source.repo_id
        commit, remote = list_raw(source, raw_dir)
        # Files keep their repository paths under raw_dir.
        documents = hub_documents(source, raw_dir, args.text_field, commit, remote, stop)
        what = f"{source.repo_id} {source.folder}"
    created = not out.exists()
    staging = start_staging(out)
    try:
        return _tokenize_into(args, encoding, vocab_size, documents, what, staging, old, stop)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone once installed; partial work cannot be resumed
        if created and not any(out.iterdir()):
            out.rmdir()


def _tokenize_into(
    args: argparse.Namespace,
    encoding: tiktoken.Encoding,
    vocab_size: int,
    documents: Iterable[str],
    what: str,
    staging: Path,
    old: list[Path],
    stop: threading.Event,
) -> int:
    out = args.out
    writer = ShardWriter(staging, args.prefix, vocab_size, args.shard_tokens, args.val_tokens)
    print(f"tokenizing {what} with {encoding.name} ({vocab_size} tokens) on {args.workers} worker(s) -> {out}")
    n_docs = 0
    with (
        tokenizer_pool(encoding, args.workers) as pool,
        closing(tokenize_stream(documents, encoding, pool)) as stream,
        tqdm(total=args.max_tokens, unit="tok", unit_scale=True, mininterval=1.0, desc="tokens") as bar,
    ):
        try:
            for tokens in stream:
                if args.max_tokens is not None:
                    tokens = tokens[: args.max_tokens - writer.total_tokens]
                writer.add(tokens)
                n_docs += int(np.count_nonzero(tokens == encoding.eot_token))  # exact when --max-tokens cuts a batch
                bar.update(tokens.size)
                bar.set_postfix(documents=n_docs, shards=len(writer.written), refresh=False)
                if args.max_tokens is not None and writer.total_tokens >= args.max_tokens:
                    break
        finally:
            # Before the pool shuts down (leaving the with): it waits for its task thread, which may be downloading.
            stop.set()
        written = writer.close()
    kept = f"; {out} is unchanged" + (f" (its {len(old)} shard(s) are kept)" if old else "")
    if not written:
        raise InputError(f"no documents in {what}: nothing was written{kept}")
    if len(written) == 1:
        print(
            f"error: the {writer.total_tokens:,} tokens all went to the val shard, so there is nothing to train on"
            f"{kept}: run again with a --val-tokens below that (e.g. {writer.total_tokens // 10:,}).",
            file=sys.stderr,
        )
        return 1
    meta = {
        "tokenizer": encoding.name,
        "vocab_size": vocab_size,
        "eot_token": vocab_size - 1,
        "source": what,
        "documents": n_docs,
        "tokens": writer.total_tokens,
        "shard_tokens": args.shard_tokens,
        "val_tokens": writer.val_tokens,
    }
    installed = install_set(staging, out, written, old, meta)
    for path in installed:
        print(f"wrote {path}")
    print(
        f"done: {n_docs:,} documents, {writer.total_tokens:,} tokens in {len(installed)} shard(s) in {out} "
        f"(1 val, {len(installed) - 1} train); `python data/check.py {out}` re-checks them"
    )
    return 0


def positive_int(text: str) -> int:
    try:
        value = int(float(text)) if re.fullmatch(r"[0-9.]+e[0-9]+", text.lower()) else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", type=Path, help="local files or folders instead of FineWeb from the Hub")
    parser.add_argument("--variant", choices=sorted(SOURCES), default="10B", help="which FineWeb sample (default 10B)")
    parser.add_argument("--out", type=Path, help="output folder (default: data/fineweb10B, or data/custom for --input)")
    parser.add_argument("--prefix", help="shard name prefix (default: fineweb / finewebedu, or custom for --input)")
    parser.add_argument("--shard-tokens", type=positive_int, default=SHARD_TOKENS, help="tokens per shard (1e8)")
    parser.add_argument("--val-tokens", type=positive_int, help="tokens in the val shard (default: --shard-tokens)")
    parser.add_argument("--max-tokens", type=positive_int, help="stop after this many tokens (e.g. 1e9)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, help="processes (default: all)")
    parser.add_argument("--tokenizer", default="gpt2", help="tiktoken encoding name (default gpt2)")
    parser.add_argument("--text-field", default="text", help="JSONL field / Parquet column with the text")
    parser.add_argument(
        "--txt-docs", choices=("file", "line", "blank"), default="file", help=".txt: documents per file (default)"
    )
    parser.add_argument("--raw-dir", type=Path, help="where the Hub's parquet files go (default data/raw/<repo>)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace shards of the same prefix in --out (kept until the new set is done)",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = DATA_DIR / ("custom" if args.input else SOURCES[args.variant].out)
    if args.prefix is None:
        args.prefix = "custom" if args.input else SOURCES[args.variant].prefix
    if not re.fullmatch(r"[A-Za-z0-9.-]+", args.prefix):
        parser.error(f"--prefix must be letters, digits, '.' or '-' (it starts every shard name), got {args.prefix!r}")
    return args


def main(argv: list[str] | None = None, encoding: tiktoken.Encoding | None = None) -> int:
    """The command line; tests pass `encoding` (a tiny tiktoken.Encoding) where GPT-2's cannot be loaded."""
    args = parse_args(argv)
    try:
        return build(args, encoding or load_encoding(args.tokenizer))
    except (InputError, ShardError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: {args.out} is unchanged (shards are moved in only once the whole set is written); run "
            f"the same command again to start over (downloaded parquet files are kept).",
            file=sys.stderr,
        )
        return 130
    except OSError as e:
        print(
            f"error: {e.strerror or e} ({e.filename or args.out}): check that the folders are writable and the disk "
            f"has room, then run the same command again.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
