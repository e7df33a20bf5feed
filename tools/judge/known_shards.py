"""The table of known FineWeb shard hashes that the ``data`` rule checks runs against.

``tools/judge/known_shards.json`` maps a shard file name to the sha256 of its bytes. It starts empty:
nobody here has been able to read the published shards, and a made-up hash would fail every honest
run. ``python -m tools known-shards`` fills it from the Hugging Face Hub's LFS metadata of the
dataset repository (the Hub stores each LFS file's sha256 beside it, so nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, Protocol

DEFAULT_TABLE = Path(__file__).with_name("known_shards.json")
DEFAULT_REPO = "kjj0/fineweb10B-gpt2"  # the published FineWeb shards (data/README.md)
_SHARD_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+\.bin$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def load_known_shards(path: Path = DEFAULT_TABLE) -> dict[str, str]:
    """``{shard name: sha256}``; empty when the table is absent. ``ValueError`` for a corrupt table."""
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON table of shard hashes ({e}); restore it from git") from e
    shards = doc.get("shards") if isinstance(doc, dict) else None
    if not isinstance(shards, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _SHA256_RE.match(v) for k, v in shards.items()
    ):
        raise ValueError(f'{path}: expected {{"shards": {{name: sha256 hex}}}}; restore it from git')
    return dict(shards)


class _RepoFile(Protocol):
    path: str
    lfs: Any


class _HubApi(Protocol):
    def list_repo_tree(self, repo_id: str, *, repo_type: str, recursive: bool, expand: bool) -> Any: ...


def fetch_shard_hashes(repo_id: str = DEFAULT_REPO, api: _HubApi | None = None) -> dict[str, str]:
    """``{name: sha256}`` of every ``.bin`` LFS file of the dataset repository, from the Hub's metadata."""
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    try:
        entries = list(api.list_repo_tree(repo_id, repo_type="dataset", recursive=True, expand=True))
    except Exception as e:  # network, auth or a missing repo: all end the same way for the user
        raise ValueError(
            f"cannot list {repo_id} on the Hugging Face Hub ({type(e).__name__}: {e}); check the network"
        ) from e
    out: dict[str, str] = {}
    for entry in entries:
        name = str(getattr(entry, "path", "")).rsplit("/", 1)[-1]
        lfs = getattr(entry, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        if _SHARD_NAME_RE.match(name) and isinstance(sha, str) and _SHA256_RE.match(sha):
            out[name] = sha
    if not out:
        raise ValueError(f"{repo_id} lists no .bin LFS files with a sha256: is it the shard repository?")
    return out


def write_table(hashes: dict[str, str], repo_id: str, path: Path = DEFAULT_TABLE) -> None:
    doc = {"source": f"huggingface.co/datasets/{repo_id} LFS metadata", "shards": dict(sorted(hashes.items()))}
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


# --- command line: python -m tools known-shards ---------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--repo", default=DEFAULT_REPO, help=f"Hub dataset repository of the shards (default {DEFAULT_REPO})"
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_TABLE, help="the table to write (default tools/judge/known_shards.json)"
    )


def run(args: argparse.Namespace) -> int:
    hashes = fetch_shard_hashes(args.repo)
    write_table(hashes, args.repo, args.out)
    print(f"wrote {len(hashes)} shard hashes from {args.repo} to {args.out}")
    return 0
