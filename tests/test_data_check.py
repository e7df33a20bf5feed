"""data/check.py: every kind of bad shard is reported with its reason; exit 1 when anything is bad."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from data import check
from data.shards import HEADER_BYTES, ShardWriter


@pytest.fixture
def shard_dir(tmp_path):
    """A folder as the writers leave it: val + 2 train shards of a 512-token vocabulary, meta.json, sha256sums.txt."""
    rng = np.random.default_rng(1)
    stream = np.concatenate([np.r_[511, rng.integers(0, 511, rng.integers(5, 50))] for _ in range(200)])
    writer = ShardWriter(tmp_path, "s", vocab_size=512, shard_tokens=2000, val_tokens=1500)
    writer.add(stream[:4500])
    assert len(writer.close()) == 3
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 512}))
    return tmp_path


def run(argv, capsys):
    rc = check.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_valid_folder_and_file(shard_dir, capsys):
    rc, text = run([shard_dir], capsys)
    assert rc == 0, text
    assert text.count("ok   ") == 3 and "sha256 ok" in text and "vocabulary 512" in text
    rc, text = run([shard_dir / "s_val_000000.bin"], capsys)
    assert rc == 0 and "1,500 tokens" in text


def test_each_bad_file_is_named_with_its_reason(shard_dir, capsys):
    val = shard_dir / "s_val_000000.bin"
    val.write_bytes(val.read_bytes()[:-6])  # truncated
    train = shard_dir / "s_train_000001.bin"
    raw = bytearray(train.read_bytes())
    raw[HEADER_BYTES + 20 : HEADER_BYTES + 22] = (600).to_bytes(2, "little")  # a token >= the vocabulary
    train.write_bytes(bytes(raw))
    rc, text = run([shard_dir], capsys)
    assert rc == 1
    bad = [line for line in text.splitlines() if line.startswith("BAD")]
    assert len(bad) == 2, text
    assert str(val) in bad[1] and "truncated" in bad[1]
    assert str(train) in bad[0] and "token 600 at position 10" in bad[0]
    assert "ok   " in text  # the good shard is still reported as good


def test_changed_content_is_caught_by_the_sums(shard_dir, capsys):
    train = shard_dir / "s_train_000002.bin"
    raw = bytearray(train.read_bytes())
    raw[-2:] = (7 if raw[-2] != 7 else 8).to_bytes(2, "little")  # still a valid shard, but not the verified one
    train.write_bytes(bytes(raw))
    rc, text = run([shard_dir], capsys)
    assert rc == 1 and "differs from" in text and "sha256sums.txt" in text
    rc, text = run(["--no-sums", shard_dir], capsys)
    assert rc == 0, text


def test_vocabulary_sources(shard_dir, capsys):
    (shard_dir / "meta.json").unlink()
    rc, text = run([shard_dir], capsys)  # GPT-2's vocabulary: separator 50256 is missing from every shard
    assert rc == 1 and "no document separator (token 50256" in text
    rc, text = run(["--vocab-size", "512", shard_dir], capsys)
    assert rc == 0, text
    (shard_dir / "meta.json").write_text("{broken")
    rc, text = run([shard_dir], capsys)
    assert rc == 1 and "meta.json" in text


def test_folder_level_problems(tmp_path, shard_dir, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, text = run([empty, tmp_path / "missing", shard_dir / "meta.json"], capsys)
    assert rc == 1 and "holds no .bin shards" in text and "no such file or folder" in text
    assert "meta.json is not a .bin shard" in text
    (shard_dir / "s_val_000000.bin").unlink()
    (shard_dir / "s_train_000009.bin.part").write_bytes(b"partial")
    rc, text = run([shard_dir], capsys)
    assert rc == 1 and "has no *_val_*.bin shard" in text and "unfinished files s_train_000009.bin.part" in text


def test_a_sums_file_that_is_not_text_is_reported_not_raised(shard_dir, capsys):
    (shard_dir / "sha256sums.txt").write_bytes(b"\xff\xfe\x00garbage\x9c")
    rc, text = run([shard_dir], capsys)
    assert rc == 1
    bad = [line for line in text.splitlines() if line.startswith("BAD")]
    assert len(bad) == 1 and f"{shard_dir / 'sha256sums.txt'} is not a text file of digests" in bad[0]
    assert "delete it" in bad[0]
    rc, text = run(["--no-sums", shard_dir], capsys)
    assert rc == 0, text


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as err:
        check.main([])
    assert err.value.code == 2
    with pytest.raises(SystemExit) as err:
        check.main(["--vocab-size", "70000", "x"])
    assert err.value.code == 2


def test_script_entry_point_has_no_traceback(tmp_path):
    bad = tmp_path / "fineweb_val_000000.bin"
    bad.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    result = subprocess.run(
        [sys.executable, "data/check.py", str(bad)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "Git LFS pointer" in result.stdout and "Traceback" not in result.stdout + result.stderr
