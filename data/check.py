"""Validate token shards: files or whole folders, and say what is wrong with each bad one.

    python data/check.py data/fineweb10B                 # every shard in the folder
    python data/check.py data/synthetic/synthetic_val_000000.bin
    python data/check.py --vocab-size 50257 some/dir other/file.bin

For each shard: the magic number and version, the header's token count against the file
size, every token below the vocabulary size, and at least one document separator (the
vocabulary's last token). The vocabulary comes from a meta.json beside the shards
("vocab_size"), else GPT-2's 50257; --vocab-size overrides. When the folder has a
sha256sums.txt (the download and the writers leave one), each listed shard's digest is
compared too (--no-sums skips that: it reads every byte). A folder must hold at least one
*_val_*.bin and one *_train_*.bin shard, the two the trainer reads, and no INCOMPLETE file (the mark of a
writer's unfinished output, such as data/fineweb.py's staging folder <out>/.incoming).

Exit status: 0 when everything is valid, 1 when anything is bad, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data.shards import (  # noqa: E402
    INCOMPLETE_FILE,
    ShardError,
    ShardInfo,
    fix_hint,
    folder_vocab_size,
    list_shards,
    read_sums,
    sha256_file,
    split_of,
    validate_shard,
)


@dataclass
class Report:
    """What a check found: good shards, and (path, reason) for every bad file or folder."""

    ok: list[ShardInfo] = field(default_factory=list)
    bad: list[tuple[Path, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_file(path: Path, vocab_size: int, sums: dict[str, str] | None) -> ShardInfo:
    """Validate one shard, and its digest when `sums` lists it. Raises ShardError."""
    info = validate_shard(path, vocab_size)
    if sums is not None and path.name in sums:
        digest = sha256_file(path)
        if digest != sums[path.name]:
            raise ShardError(
                f"{path}: sha256 {digest[:16]}... differs from {sums[path.name][:16]}... in "
                f"{path.parent / 'sha256sums.txt'}: the file changed after it was verified (a disk or copy error); "
                f"{fix_hint(path)}."
            )
    return info


def _vocab_for(folder: Path, override: int | None) -> tuple[int, str]:
    return (override, "--vocab-size") if override is not None else folder_vocab_size(folder)


def check_paths(
    paths: list[Path],
    vocab_size: int | None = None,
    use_sums: bool = True,
    echo: Callable[[str], None] = print,
) -> Report:
    """Check files and folders, printing one line per shard through `echo`."""
    report = Report()

    def bad(path: Path, reason: str) -> None:
        report.bad.append((path, reason))
        echo(f"BAD  {reason}" if str(path) in reason else f"BAD  {path}: {reason}")

    def one_file(path: Path, vocab: tuple[int, str], sums: dict[str, str] | None) -> None:
        try:
            info = check_file(path, vocab[0], sums)
        except ShardError as e:
            bad(path, str(e))
            return
        report.ok.append(info)
        digest = "  sha256 ok" if sums is not None and path.name in sums else ""
        echo(
            f"ok   {path}  {info.split or '-'}  {info.tokens:,} tokens  {info.documents:,} documents  "
            f"max token {info.max_token}{digest}"
        )

    def folder_context(folder: Path) -> tuple[tuple[int, str], dict[str, str] | None] | None:
        try:
            vocab = _vocab_for(folder, vocab_size)
            sums = read_sums(folder) if use_sums else None
        except ShardError as e:
            bad(folder, str(e))
            return None
        return vocab, sums

    for path in paths:
        if path.is_dir():
            context = folder_context(path)
            if context is None:
                continue
            vocab, sums = context
            if (path / INCOMPLETE_FILE).is_file():
                bad(
                    path,
                    f"{path} is the unfinished output of a writer ({path / INCOMPLETE_FILE} says which), not a "
                    f"complete shard set: run that writer again; it replaces this folder.",
                )
                continue
            shards = sorted(path.glob("*.bin"), key=lambda p: p.name)
            echo(f"{path}: {len(shards)} .bin files, vocabulary {vocab[0]} ({vocab[1]})")
            if not shards:
                bad(
                    path,
                    f"{path} holds no .bin shards: download them with `python data/cached_fineweb10B.py`, or make them "
                    f"with data/fineweb.py or data/synthetic.py (see data/README.md).",
                )
                continue
            for shard in shards:
                one_file(shard, vocab, sums)
                if split_of(shard) is None:
                    report.notes.append(f"{shard}: not named *_val_*.bin or *_train_*.bin, so the trainer ignores it")
            named = list_shards(path)
            for split in ("val", "train"):
                if not any(split_of(p) == split for p in named):
                    bad(
                        path,
                        f"{path} has no *_{split}_*.bin shard: the trainer needs val and train shards in its DATA_PATH "
                        f"folder; {fix_hint(shards[0])}.",
                    )
            leftovers = sorted(p.name for p in path.iterdir() if p.name.endswith((".part", ".tmp")))
            if leftovers:
                report.notes.append(
                    f"{path}: unfinished files {', '.join(leftovers)} (an interrupted download or write; running the "
                    f"same command again resumes or replaces them)"
                )
        elif path.is_file() and not path.name.endswith(".bin"):
            bad(path, f"{path} is not a .bin shard; check.py reads .bin shard files and folders of them")
        elif path.is_file():
            context = folder_context(path.parent)
            if context is not None:
                one_file(path, *context)
        else:
            bad(
                path,
                f"{path}: no such file or folder; download FineWeb shards with `python data/cached_fineweb10B.py` or "
                f"write synthetic ones with `python data/synthetic.py` (see data/README.md)",
            )
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="shard files (.bin) and/or folders of shards")
    parser.add_argument(
        "--vocab-size", type=int, help="vocabulary size (default: meta.json beside the shards, else 50257)"
    )
    parser.add_argument("--no-sums", action="store_true", help="skip the sha256 comparison with sha256sums.txt")
    args = parser.parse_args(argv)
    if args.vocab_size is not None and not 2 <= args.vocab_size <= 2**16:
        parser.error(f"--vocab-size must be between 2 and 65536 (tokens are uint16), got {args.vocab_size}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = check_paths(args.paths, args.vocab_size, use_sums=not args.no_sums)
    for note in report.notes:
        print(f"note: {note}")
    tokens = sum(info.tokens for info in report.ok)
    if report.bad:
        print(
            f"{len(report.bad)} problem(s), {len(report.ok)} valid shard(s) ({tokens:,} tokens). Each BAD line above "
            f"says what is wrong and how to get a good copy.",
            file=sys.stderr,
        )
        return 1
    print(f"all {len(report.ok)} shard(s) valid ({tokens:,} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
