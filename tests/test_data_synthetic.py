"""data/synthetic.py: deterministic, valid, and learnable far below ln(vocab) (checked with a bigram model)."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_script_usage_errors(tmp_path):
    for bad in (["--vocab-size", "2"], ["--vocab-size", "70000"], ["--train-shards", "0"]):
        result = subprocess.run(
            [sys.executable, "data/synthetic.py", "--out", str(tmp_path), *bad],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2 and "usage:" in result.stderr and "Traceback" not in result.stderr
