"""data/synthetic.py: deterministic, valid, and learnable far below ln(vocab) (checked with a bigram model)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

from conftest import REPO_ROOT
from data import check, synthetic
from data.shards import read_tokens

SMALL = ["--train-shards", "2", "--shard-tokens", "200000", "--val-tokens", "100000"]


def make(out, *extra, capsys=None):
    rc = synthetic.main(["--out", str(out), *SMALL, *map(str, extra)])
    if capsys is not None:
        capsys.readouterr()
    return rc


def test_layout_meta_and_check(tmp_path, capsys):
    assert make(tmp_path, capsys=capsys) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "meta.json",
        "sha256sums.txt",
        "synthetic_train_000001.bin",
        "synthetic_train_000002.bin",
        "synthetic_val_000000.bin",
    ]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["vocab_size"] == 512 and meta["eot_token"] == 511
    assert read_tokens(tmp_path / "synthetic_val_000000.bin").size == 100_000
    assert check.main([str(tmp_path)]) == 0


def test_deterministic_for_a_seed(tmp_path, capsys):
    make(tmp_path / "a", "--seed", 5, capsys=capsys)
    make(tmp_path / "b", "--seed", 5, capsys=capsys)
    make(tmp_path / "c", "--seed", 6, capsys=capsys)
    for name in ("synthetic_val_000000.bin", "synthetic_train_000002.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


# sha256 of `--seed 5` with SMALL, as written before shards were generated one at a time: the bytes must never change
# (the trainer tests pin losses measured on this data, and run.sh's smoke run on the default set).
PINNED = {
    "synthetic_val_000000.bin": "55a1a88cbd0fed99e5710f970d6a37c4d7a89b4ff4435a4c9a45245f19f3db63",
    "synthetic_train_000001.bin": "5f40bf2d09247860ef6d10d06688761ac977637931dc8898daca434c9261c5ff",
    "synthetic_train_000002.bin": "1f70e8a7ddf8134e7ef1505765ea6c477f5c3574e5cfcc1283f1e5c16873de45",
}


def test_output_bytes_are_pinned(tmp_path, capsys):
    assert make(tmp_path, "--seed", 5, capsys=capsys) == 0
    assert {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in PINNED} == PINNED
    sums = (tmp_path / "sha256sums.txt").read_text()
    assert all(f"{digest}  {name}" in sums for name, digest in PINNED.items())


def test_memory_does_not_grow_with_the_number_of_shards(tmp_path, capsys):
    """Shards are generated and written one at a time: 8 shards peak no higher than 2 (traced numpy allocations)."""

    def peak(train_shards: int) -> int:
        argv = ["--out", tmp_path / str(train_shards), "--train-shards", train_shards, "--shard-tokens", 200_000]
        tracemalloc.start()
        try:
            assert synthetic.main([*map(str, argv), "--val-tokens", "100000"]) == 0
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            capsys.readouterr()

    two, eight = peak(2), peak(8)
    # Building the whole stream first (as before) costs ~19 bytes per token: +23 MB for the 1.2M extra tokens.
    assert eight < two + 4_000_000, (two, eight)


def bigram_cross_entropy(train: np.ndarray, val: np.ndarray, vocab: int) -> float:
    """Nats per token on val of an add-one-smoothed bigram model counted on train."""
    counts = np.ones((vocab, vocab))
    np.add.at(counts, (train[:-1].astype(np.int64), train[1:].astype(np.int64)), 1)
    probs = counts / counts.sum(axis=1, keepdims=True)
    return float(-np.log(probs[val[:-1].astype(np.int64), val[1:].astype(np.int64)]).mean())


@pytest.mark.parametrize("vocab", [512, 50257])
def test_learnable_far_below_uniform(tmp_path, capsys, vocab):
    assert make(tmp_path, "--vocab-size", vocab, capsys=capsys) == 0
    val = np.asarray(read_tokens(tmp_path / "synthetic_val_000000.bin"))
    assert val.max() == vocab - 1 and np.count_nonzero(val == vocab - 1) > 100  # separators: the last token
    if vocab > 1024:  # a bigram table of 50257^2 does not fit a test; the separator convention is what matters here
        return
    train = np.concatenate([read_tokens(tmp_path / f"synthetic_train_{i:06d}.bin") for i in (1, 2)])
    unigram = np.bincount(val, minlength=vocab) / val.size
    unigram_entropy = float(-(unigram[unigram > 0] * np.log(unigram[unigram > 0])).sum())
    ce = bigram_cross_entropy(train, val, vocab)
    # ln(512) = 6.24: a bigram model alone gets under half of that; attention can do better on the copies.
    assert ce < 0.5 * np.log(vocab) < unigram_entropy, (ce, unigram_entropy)


def test_rerun_is_a_no_op_and_other_settings_need_force(tmp_path, capsys):
    assert make(tmp_path, capsys=capsys) == 0
    before = (tmp_path / "synthetic_val_000000.bin").stat().st_mtime_ns
    assert synthetic.main(["--out", str(tmp_path), *SMALL]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert (tmp_path / "synthetic_val_000000.bin").stat().st_mtime_ns == before
    assert synthetic.main(["--out", str(tmp_path), *SMALL, "--seed", "1"]) == 2
    assert "--force" in capsys.readouterr().err
    assert make(tmp_path, "--seed", 1, "--force", capsys=capsys) == 0
    assert json.loads((tmp_path / "meta.json").read_text())["seed"] == 1
    assert check.main([str(tmp_path)]) == 0
    # A truncated shard with unchanged settings is simply written again, identical.
    val = tmp_path / "synthetic_val_000000.bin"
    good = val.read_bytes()
    val.write_bytes(good[:-100])
    assert make(tmp_path, "--seed", 1, capsys=capsys) == 0
    assert val.read_bytes() == good
    # Damaged in place (same size, valid tokens): check.py says BAD from the sums, and the same command repairs it.
    raw = bytearray(good)
    raw[-2:] = (7 if raw[-2:] != b"\x07\x00" else 8).to_bytes(2, "little")
    val.write_bytes(bytes(raw))
    assert check.main([str(tmp_path)]) == 1 and "differs from" in capsys.readouterr().out
    assert make(tmp_path, "--seed", 1, capsys=capsys) == 0
    assert val.read_bytes() == good and check.main([str(tmp_path)]) == 0


def test_fewer_shards_than_before_leaves_no_stale_shard(tmp_path, capsys):
    sizes = ["--shard-tokens", 2000, "--val-tokens", 2000]
    assert synthetic.main(["--out", str(tmp_path), "--train-shards", "4", *map(str, sizes)]) == 0
    assert len(list(tmp_path.glob("synthetic_train_*.bin"))) == 4
    assert synthetic.main(["--out", str(tmp_path), "--train-shards", "2", *map(str, sizes), "--force"]) == 0
    names = ["synthetic_train_000001.bin", "synthetic_train_000002.bin", "synthetic_val_000000.bin"]
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == names
    assert sorted(line.split()[1] for line in (tmp_path / "sha256sums.txt").read_text().splitlines()) == names
    assert json.loads((tmp_path / "meta.json").read_text())["train_shards"] == 2
    assert "removed" in capsys.readouterr().out
    # An interrupted run leaves no meta.json, so no --force is needed: the leftovers go all the same.
    (tmp_path / "meta.json").unlink()
    (tmp_path / "synthetic_train_000007.bin").write_bytes((tmp_path / names[0]).read_bytes())
    assert synthetic.main(["--out", str(tmp_path), "--train-shards", "1", *map(str, sizes)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == [names[0], names[2]]
    assert check.main([str(tmp_path)]) == 0


def script(*argv):
    result = subprocess.run(
        [sys.executable, "data/synthetic.py", *map(str, argv)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (["--vocab-size", "2"], "between 3 and 65536"),
        (["--vocab-size", "70000"], "between 3 and 65536"),
        (["--train-shards", "0"], "must be a positive integer"),
        (["--shard-tokens", "5", "--val-tokens", "5"], "--shard-tokens 5 is too small: the minimum is 1537"),
        (["--shard-tokens", "1000", "--train-shards", "30"], "--shard-tokens 1000 is too small: the minimum is 1537"),
        (["--val-tokens", "1536"], "--val-tokens 1536 is too small: the minimum is 1537"),
    ],
)
def test_script_usage_errors(tmp_path, bad, expected):
    result = script("--out", tmp_path / "out", *bad)
    assert result.returncode == 2 and "usage:" in result.stderr and expected in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_minimum_shard_size_always_holds_a_separator(tmp_path, capsys, seed):
    n = synthetic.MIN_SHARD_TOKENS
    argv = ["--out", tmp_path, "--seed", seed, "--vocab-size", 3, "--train-shards", 40, "--shard-tokens", n]
    assert synthetic.main([*map(str, argv), "--val-tokens", str(n)]) == 0, capsys.readouterr().err
    assert check.main([str(tmp_path)]) == 0


def test_out_that_is_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = script("--out", tmp_path / "file")
    assert result.returncode == 2 and f"--out {tmp_path / 'file'} is a file, not a folder" in result.stderr


def test_a_damaged_sums_file_stops_before_any_shard_is_touched(tmp_path, capsys):
    assert make(tmp_path, capsys=capsys) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    (tmp_path / "sha256sums.txt").write_text("not a digest line\n")
    result = script("--out", tmp_path, *SMALL, "--seed", 4, "--force")
    assert result.returncode == 1
    assert (
        result.stderr.startswith(f"error: {tmp_path / 'sha256sums.txt'}, line 1:") and "fix or delete" in result.stderr
    )
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "sha256sums.txt"} == {
        k: v for k, v in before.items() if k != "sha256sums.txt"
    }
