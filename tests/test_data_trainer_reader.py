"""The trainer's own shard reader (train_gpt.read_shard, kept inside the one-file trainer) and data/shards.py agree
on every kind of file our writers produce, and the trainer refuses what check.py refuses."""

from __future__ import annotations

import numpy as np
import pytest

import train_gpt
from data import synthetic
from data.shards import ShardWriter, list_shards, read_tokens, write_shard


@pytest.fixture(scope="module")
def read_shard():
    return train_gpt.read_shard


@pytest.fixture(scope="module")
def shard_files(tmp_path_factory):
    """Shards from each writer: synthetic.py, the packing ShardWriter, and write_shard at the uint16 edges."""
    root = tmp_path_factory.mktemp("shards")
    assert (
        synthetic.main(
            ["--out", str(root / "syn"), "--train-shards", "1", "--shard-tokens", "50000", "--val-tokens", "30000"]
        )
        == 0
    )
    rng = np.random.default_rng(0)
    writer = ShardWriter(root / "packed", "p", vocab_size=50257, shard_tokens=7000, val_tokens=3000)
    writer.add(np.concatenate([np.r_[50256, rng.integers(0, 50256, rng.integers(1, 400))] for _ in range(80)]))
    writer.close()
    edges = np.array([65535, 0, 1, 65534, 65535, 256, 50256], dtype=np.uint16)
    write_shard(root / "edges" / "e_train_000001.bin", edges, vocab_size=65536)
    return list_shards(root / "syn") + list_shards(root / "packed") + list_shards(root / "edges")


def test_both_readers_return_the_same_tokens(read_shard, shard_files):
    assert len(shard_files) >= 5
    for path in shard_files:
        ours = np.asarray(read_tokens(path))
        theirs = read_shard(path)
        assert str(theirs.dtype) == "torch.uint16" and tuple(theirs.shape) == ours.shape, path
        assert np.array_equal(theirs.numpy(), ours), path


def test_the_trainer_refuses_broken_shards(read_shard, shard_files, tmp_path):
    good = shard_files[0].read_bytes()
    for name, content in {"truncated": good[:-2], "bad_magic": b"\0\0\0\0" + good[4:], "no_header": good[:100]}.items():
        path = tmp_path / f"{name}_train_000001.bin"
        path.write_bytes(content)
        with pytest.raises(train_gpt.ShardError) as err:
            read_shard(path)
        assert str(path.name) in str(err.value) or str(path) in str(err.value), err.value
