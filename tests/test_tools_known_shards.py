"""The table of known FineWeb shard hashes: loading, and filling it from Hub LFS metadata (offline)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tools.cli import main
from tools.judge.known_shards import DEFAULT_TABLE, fetch_shard_hashes, load_known_shards, write_table

VAL_SHA = "1" * 64
TRAIN_SHA = "2" * 64


class FakeHub:
    """Stands in for huggingface_hub.HfApi: the Hub is unreachable here. Same call, same entry shapes."""

    def __init__(self, entries: list[Any]) -> None:
        self.entries = entries
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def list_repo_tree(self, repo_id: str, **kw: Any) -> list[Any]:
        self.calls.append((repo_id, kw))
        return self.entries


def _file(path: str, sha: str | None) -> SimpleNamespace:
    return SimpleNamespace(path=path, lfs=None if sha is None else SimpleNamespace(sha256=sha, size=200_000_000))


def test_committed_table_is_valid_and_holds_no_invented_hash() -> None:
    assert load_known_shards(DEFAULT_TABLE) == {}  # empty until filled from the Hub, never by hand


def test_fetch_reads_lfs_sha256_of_bin_files_only() -> None:
    hub = FakeHub(
        [
            _file("fineweb_val_000000.bin", VAL_SHA),
            _file("fineweb_train_000001.bin", TRAIN_SHA),
            _file("README.md", None),
            _file(".gitattributes", None),
        ]
    )
    assert fetch_shard_hashes("kjj0/fineweb10B-gpt2", api=hub) == {
        "fineweb_val_000000.bin": VAL_SHA,
        "fineweb_train_000001.bin": TRAIN_SHA,
    }
    assert hub.calls == [("kjj0/fineweb10B-gpt2", {"repo_type": "dataset", "recursive": True, "expand": True})]


def test_fetch_errors_are_one_clear_paragraph() -> None:
    class Down:
        def list_repo_tree(self, repo_id: str, **kw: Any) -> Any:
            raise ConnectionError("network is unreachable")

    with pytest.raises(ValueError, match="cannot list kjj0/x on the Hugging Face Hub .*ConnectionError"):
        fetch_shard_hashes("kjj0/x", api=Down())
    with pytest.raises(ValueError, match="no .bin LFS files"):
        fetch_shard_hashes("kjj0/x", api=FakeHub([_file("README.md", None)]))


def test_write_then_load_round_trip_and_corrupt_table(tmp_path: Path) -> None:
    table = tmp_path / "known.json"
    write_table({"b.bin": TRAIN_SHA, "a.bin": VAL_SHA}, "kjj0/fineweb10B-gpt2", table)
    assert load_known_shards(table) == {"a.bin": VAL_SHA, "b.bin": TRAIN_SHA}
    assert list(json.loads(table.read_text())["shards"]) == ["a.bin", "b.bin"]  # sorted: stable diffs
    table.write_text('{"shards": {"a.bin": "not-a-hash"}}')
    with pytest.raises(ValueError, match="restore it from git"):
        load_known_shards(table)


def test_cli_without_network_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, at import: a worker that imported it earlier would go to the network
    # (and spend ~20 s on retries without one) unless its constant is set too
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "table.json"
    assert main(["known-shards", "--repo", "kjj0/fineweb10B-gpt2", "--out", str(out)]) == 2
    assert "cannot list kjj0/fineweb10B-gpt2" in capsys.readouterr().err and not out.exists()
