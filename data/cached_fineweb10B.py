"""Download GPT-2-tokenized FineWeb shards from the Hugging Face Hub: the val shard and the first N train shards.

    python data/cached_fineweb10B.py          # val + 9 train shards (~1B tokens, 2 GB): enough for a record run
    python data/cached_fineweb10B.py 103      # the whole 10B-token sample
    python data/cached_fineweb10B.py 20 --variant edu10B      # FineWeb-Edu instead, into data/finewebedu10B/

Shards land in data/<variant folder>/ (data/fineweb10B/ by default), the folder the trainer reads.
Each is ~200 MB (100M uint16 tokens). Run it again at any time: shards already present are checked
(tokens, and the sha256 the Hub publishes, the Hugging Face cache names, or sha256sums.txt lists:
~0.2 s per shard from the page cache) and kept when intact, a broken one is fetched again, and an
interrupted download resumes where it stopped. Every fetched file is checked (header against file
size, tokens against GPT-2's vocabulary, and the sha256 the Hub publishes for it) before it gets its
final name, and its digest goes to sha256sums.txt so that `python data/check.py data/fineweb10B` can re-check it later.

A file already in the Hugging Face cache (HF_HUB_CACHE, e.g. from `hf download`) is taken from
there, hard-linked when possible, so it works offline (HF_HUB_OFFLINE=1) too. Shards are pre-tokenized
by the speedrun community (dataset repos kjj0/fineweb10B-gpt2 and friends); data/fineweb.py makes the
same kind of shards from raw text.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import hub  # noqa: E402
from data.shards import (  # noqa: E402
    GPT2_VOCAB_SIZE,
    SUMS_FILE,
    ShardError,
    read_sums,
    sha256_file,
    update_sums,
    validate_shard,
)

DATA_DIR = Path(__file__).resolve().parent
DEFAULT_TRAIN_SHARDS = 9


@dataclass(frozen=True)
class Variant:
    repo_id: str  # Hugging Face dataset repository
    folder: str  # where the shards land, under data/
    prefix: str  # file names: <prefix>_val_000000.bin, <prefix>_train_000001.bin, ...
    train_shards: int  # train shards the repository holds
    about: str

    def names(self, n_train: int) -> list[str]:
        return [f"{self.prefix}_val_{0:06d}.bin"] + [f"{self.prefix}_train_{i:06d}.bin" for i in range(1, n_train + 1)]


# One entry per published shard set. Train-shard counts, from the public speedrun's download scripts
# (KellerJordan/modded-nanogpt data/cached_*.py):
# - 10B: 103 (fineweb_train_000001..000103, ~98.5M tokens each);
# - 100B: 1030 (num_chunks = 1030 in cached_fineweb100B.py; no other public count found);
# - edu10B: 99. An early cached_finewebedu10B.py said 103, later corrected to 99: finewebedu_train_000099.bin is
#   the last, and holds 53,989,344 tokens (the others 100M), as public scripts that read that set also note.
VARIANTS = {
    "10B": Variant(
        "kjj0/fineweb10B-gpt2", "fineweb10B", "fineweb", 103, "FineWeb sample-10BT: the record tracks' data"
    ),
    "100B": Variant("kjj0/fineweb100B-gpt2", "fineweb100B", "fineweb", 1030, "FineWeb sample-100BT"),
    "edu10B": Variant("kjj0/finewebedu10B-gpt2", "finewebedu10B", "finewebedu", 99, "FineWeb-Edu sample-10BT"),
}


def verify(path: Path, remote: hub.RemoteFile | None, reference: str | None, source: str) -> str | None:
    """Check a shard completely; returns its sha256 when it matched `reference`. Raises ShardError.

    `source` names where the reference digest comes from, as in "the Hub publishes".
    """
    if remote is not None and path.stat().st_size != remote.size:
        raise ShardError(
            f"{path} has {path.stat().st_size:,} bytes, the Hub publishes {remote.size:,} for it: truncated or stale"
        )
    validate_shard(path, GPT2_VOCAB_SIZE)
    if reference is None:
        return None
    digest = sha256_file(path)
    if digest != reference:
        raise ShardError(
            f"{path}: sha256 {digest[:16]}... does not match the {reference[:16]}... that {source}: corrupt"
        )
    return digest


def reference_digest(
    entry: hub.RemoteFile | None, cached: Path | None, listed: str | None, out: Path
) -> tuple[str | None, str, bool]:
    """(the sha256 a shard must have, where it comes from, whether that source is published rather than local).

    The Hub's digest (online) comes first, then the name of the file's blob in the Hugging Face cache (the digest the
    Hub published when it was downloaded), then the folder's own sha256sums.txt (what was verified here before).
    """
    if entry is not None and entry.sha256 is not None:
        return entry.sha256, "the Hub publishes", True
    blob = hub.blob_sha256(cached) if cached is not None else None
    if blob is not None:
        return blob, "its Hugging Face cache entry names", True
    return listed, f"{out / SUMS_FILE} lists", False


def offline_paragraph(variant: Variant, out: Path, missing: list[str], reason: str, n_train: int, flag: str) -> str:
    listed = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    return (
        f"error: could not reach the Hugging Face Hub at {hub.endpoint()} ({reason}), and {len(missing)} of the "
        f"{n_train + 1} shard(s) are neither in {out} nor in the local Hugging Face cache ({hub.cache_dir()}): "
        f"{listed}. To get them, run `python data/cached_fineweb10B.py {n_train}{flag}` again on a machine that can "
        f"reach {hub.endpoint()} (unset HF_HUB_OFFLINE if it is set; behind a proxy set HTTPS_PROXY; for a mirror set "
        f"HF_ENDPOINT): shards already here are kept and interrupted downloads resume. Or copy the shards from a "
        f"machine that has them into {out}/ (or its Hugging Face cache into HF_HUB_CACHE) and check them with "
        f"`python data/check.py {out}`. For a run without FineWeb, `python data/synthetic.py` makes synthetic shards."
    )


def fetch(variant: Variant, n_train: int, out: Path, flag: str) -> int:
    names = variant.names(n_train)
    read_sums(out)  # a damaged sha256sums.txt stops us before any download, not after (ShardError)
    print(f"{variant.repo_id} ({variant.about}): val + {n_train} train shard(s) -> {out}")
    remote: dict[str, hub.RemoteFile] = {}
    commit: str | None = None
    unreachable: str | None = None
    try:
        commit, remote = hub.remote_files(variant.repo_id, names)
    except hub.HubUnreachable as e:
        unreachable = str(e)
        print(f"note: cannot reach the Hub ({unreachable}); using files already here and the Hugging Face cache")
    except hub.HubError as e:
        print(f"error: {e}. Check --variant, or make shards from raw text with data/fineweb.py.", file=sys.stderr)
        return 1
    if commit is not None:
        absent = [name for name in names if name not in remote]
        if absent:
            print(
                f"error: {variant.repo_id} (commit {commit[:12]}) has no {', '.join(absent[:3])}"
                f"{' ...' if len(absent) > 3 else ''}; ask for at most the train shards it holds "
                f"({variant.train_shards} when this script was written).",
                file=sys.stderr,
            )
            return 1

    listed = read_sums(out)
    missing: list[str] = []
    bad: list[str] = []

    def record(name: str, digest: str) -> None:
        """Add a verified digest to sha256sums.txt at once (atomically), so an interrupted run loses none."""
        if listed.get(name) != digest:
            update_sums(out, {name: digest})
            listed[name] = digest

    for i, name in enumerate(names, 1):
        tag = f"[{i}/{len(names)}] {name}"
        dest = out / name
        entry = remote.get(name)
        cached = hub.cached_file(variant.repo_id, name, revision=commit or "main")
        broken: ShardError | None = None
        if dest.exists():
            # Size and header are not enough: a shard damaged in place keeps both. Its sha256 is compared whenever
            # one is known, so that what check.py calls BAD, this replaces.
            reference, source, published = reference_digest(entry, cached, listed.get(name), out)
            try:
                digest = verify(dest, entry, reference, source)
            except ShardError as e:
                broken = e
                print(f"{tag}: the copy here is broken ({e}); getting it again")
            else:
                if digest is not None and published:
                    record(name, digest)
                print(f"{tag}: already present, " + ("sha256 verified" if digest else "no sha256 known to compare"))
                continue

        if cached is not None:
            reference = entry.sha256 if entry is not None else hub.blob_sha256(cached)
            source = "the Hub publishes" if entry is not None else "its Hugging Face cache entry names"
            try:
                digest = verify(cached, entry, reference, source)
            except ShardError as e:
                print(f"{tag}: the copy in the Hugging Face cache is broken: {e}")
                if entry is None:
                    bad.append(f"{name}: the cached copy {cached} is broken ({e}); delete it and download again")
                    continue
            else:
                hub.install(cached, dest)  # atomically over a broken copy, if there is one
                if digest is not None:
                    record(name, digest)
                print(f"{tag}: from the Hugging Face cache{'' if digest else ' (no published sha256 to compare)'}")
                continue

        if entry is None or commit is None:
            if broken is not None:  # kept, not deleted: nothing better can be had now
                bad.append(
                    f"{name}: the copy in {out} is broken ({broken}), the Hugging Face cache has no good copy and the "
                    f"Hub cannot be reached ({unreachable}); the file is left as it is until one can be fetched"
                )
                continue
            print(f"{tag}: not here and not in the Hugging Face cache")
            missing.append(name)
            continue
        try:
            hub.download(variant.repo_id, entry, dest, commit, tag)  # replaces a broken copy only once verified
            digest = verify(dest, entry, entry.sha256, "the Hub publishes")
        except (hub.DownloadError, hub.HubError, ShardError) as e:
            if isinstance(e, ShardError):
                dest.unlink(missing_ok=True)
            print(f"{tag}: failed: {e}")
            bad.append(f"{name}: {e}")
            continue
        if digest is not None:
            record(name, digest)
        print(f"{tag}: downloaded and verified")

    if bad:
        print(f"error: {len(bad)} shard(s) could not be fetched intact:", file=sys.stderr)
        for line in bad:
            print(f"  {line}", file=sys.stderr)
        if not missing:
            print(f"Run `python data/cached_fineweb10B.py {n_train}{flag}` again to retry them.", file=sys.stderr)
    if missing:
        print(offline_paragraph(variant, out, missing, unreachable or "unknown", n_train, flag), file=sys.stderr)
    if bad or missing:
        return 1
    print(f"ready: {len(names)} shard(s) in {out}; `python data/check.py {out}` re-checks them at any time")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "n",
        nargs="?",
        type=int,
        default=DEFAULT_TRAIN_SHARDS,
        help=f"number of train shards, after the val shard (default {DEFAULT_TRAIN_SHARDS})",
    )
    parser.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="10B",
        help="which shard set: " + "; ".join(f"{k}: {v.repo_id} -> data/{v.folder}" for k, v in VARIANTS.items()),
    )
    parser.add_argument("--out", type=Path, help="folder for the shards (default: data/<the variant's folder>)")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(
            f"--out {args.out} is a file, not a folder: pass a folder for the shards (it is created if needed)"
        )
    limit = VARIANTS[args.variant].train_shards
    if not 0 <= args.n <= limit:
        parser.error(
            f"N must be between 0 and {limit} (the {args.variant} variant has {limit} train shards), got {args.n}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    variant = VARIANTS[args.variant]
    out = args.out if args.out is not None else DATA_DIR / variant.folder
    flag = "" if args.variant == "10B" else f" --variant {args.variant}"
    flag += "" if args.out is None else f" --out {shlex.quote(str(args.out))}"  # so that a command given back works
    try:
        return fetch(variant, args.n, out, flag)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished shards are kept, and the partial one resumes when you run the same command again.",
            file=sys.stderr,
        )
        return 130
    except ShardError as e:  # a damaged sha256sums.txt in the folder
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(
            f"error: {e.strerror or e} ({e.filename or out}): check that {out} is writable and its disk has room "
            f"(~200 MB per shard), then run the same command again; finished shards are kept.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
