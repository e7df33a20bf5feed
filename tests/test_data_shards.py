"""data/shards.py: the shard format, its checks, the packing writer and sha256sums.txt."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT
from data.shards import (
    HEADER_BYTES,
    MAGIC,
    ShardError,
    ShardWriter,
    fix_hint,
    folder_vocab_size,
    list_shards,
    make_header,
    read_header,
    read_sums,
    read_tokens,
    scan_tokens,
    sha256_file,
    update_sums,
    validate_shard,
    write_shard,
)


def naive_read(path):
    """The obviously-correct reader: parse the header by hand, then every token."""
    raw = path.read_bytes()
    header = [int.from_bytes(raw[4 * i : 4 * i + 4], "little", signed=True) for i in range(256)]
    tokens = [int.from_bytes(raw[HEADER_BYTES + 2 * i : HEADER_BYTES + 2 * i + 2], "little") for i in range(header[2])]
    return header, tokens


def test_round_trip_against_a_naive_reader(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 2**16, 3001).astype(np.uint16)
    tokens[[0, 1, 2]] = [0, 65535, 65535]  # the edges of uint16
    path = write_shard(tmp_path / "x_train_000001.bin", tokens, vocab_size=2**16)
    header, naive = naive_read(path)
    assert header[:3] == [MAGIC, 1, 3001] and not any(header[3:])
    assert naive == tokens.tolist()
    assert np.array_equal(read_tokens(path), tokens)
    assert np.array_equal(read_tokens(path, mmap=False), tokens)
    assert path.stat().st_size == HEADER_BYTES + 2 * 3001
    assert not list(tmp_path.glob("*.tmp"))


def _valid_bytes(ntok=100, sep=50256):
    tokens = np.full(ntok, 7, dtype="<u2")
    tokens[0] = sep
    return make_header(ntok) + tokens.tobytes()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (lambda: _valid_bytes()[:-10], ["truncated", "cached_fineweb10B.py"]),
        (lambda: _valid_bytes() + b"\0\0", ["trailing bytes"]),
        (lambda: _valid_bytes()[:500], ["shorter than the 1024-byte shard header"]),
        (lambda: b"", ["the file is empty"]),
        (lambda: b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 1\n", ["Git LFS pointer"]),
        (lambda: b"<!DOCTYPE html>" + b" " * 2000, ["HTML"]),
        (lambda: b"PAR1" + b"\0" * 2000, ["Parquet", "fineweb.py --input"]),
        (lambda: b"\x01\x02\x03\x04" + _valid_bytes()[4:], ["magic number"]),
        (lambda: make_header(100)[:4] + (2).to_bytes(4, "little") + make_header(100)[8:] + b"\0" * 200, ["version 2"]),
        (lambda: make_header(0), ["0 tokens"]),
    ],
)
def test_read_header_names_the_file_and_the_problem(tmp_path, content, words):
    path = tmp_path / "fineweb_train_000003.bin"
    path.write_bytes(content())
    with pytest.raises(ShardError) as err:
        read_header(path)
    assert str(path) in str(err.value)
    for word in words:
        assert word in str(err.value)


def test_missing_file_and_hints_follow_the_name(tmp_path):
    with pytest.raises(ShardError, match="cannot read shard"):
        read_header(tmp_path / "nope.bin")
    syn = tmp_path / "synthetic_val_000000.bin"
    syn.write_bytes(b"junk")
    with pytest.raises(
        ShardError, match=re.escape(f"synthetic.py --out {tmp_path} --force` with the settings it was made with")
    ):
        read_header(syn)
    (tmp_path / "meta.json").write_text(
        '{"seed": 3, "vocab_size": 512, "train_shards": 2, "shard_tokens": 5000, "val_tokens": 4000}'
    )
    settings = "--seed 3 --vocab-size 512 --train-shards 2 --shard-tokens 5000 --val-tokens 4000 --force"
    with pytest.raises(ShardError, match=re.escape(f"synthetic.py --out {tmp_path} {settings}`")):
        read_header(syn)
    edu = tmp_path / "finewebedu_val_000000.bin"
    edu.write_bytes(b"junk")
    with pytest.raises(ShardError, match=re.escape(f"cached_fineweb10B.py --variant edu10B --out {tmp_path}` again")):
        read_header(edu)
    (tmp_path / "finewebedu_train_000012.bin").write_bytes(b"junk")
    with pytest.raises(
        ShardError, match=re.escape(f"cached_fineweb10B.py 12 --variant edu10B --out {tmp_path}` again")
    ):
        read_header(edu)


def test_download_hint_names_out_only_outside_the_default_folder():
    default = REPO_ROOT / "data" / "fineweb10B" / "fineweb_val_000000.bin"
    assert "`python data/cached_fineweb10B.py` again:" in fix_hint(default)
    assert "`python data/cached_fineweb10B.py --variant 100B` again:" in fix_hint(
        REPO_ROOT / "data" / "fineweb100B" / "fineweb_val_000000.bin"
    )
    elsewhere = fix_hint("/scratch/fw/fineweb_val_000000.bin")
    assert "`python data/cached_fineweb10B.py --out /scratch/fw` again (add `--variant 100B`" in elsewhere


def test_scan_tokens_checks_vocabulary_and_separators():
    tokens = np.array([511, 3, 4, 511, 5], dtype=np.uint16)
    assert scan_tokens(tokens, 512, "x") == (2, 511)
    with pytest.raises(ShardError, match="token 511 at position 0 is not below the vocabulary size 300"):
        scan_tokens(tokens, 300, "x")
    with pytest.raises(ShardError, match="no document separator"):
        scan_tokens(np.array([1, 2, 3], dtype=np.uint16), 512, "x")
    with pytest.raises(ShardError, match="no tokens"):
        scan_tokens(np.array([], dtype=np.uint16), 512, "x")


def test_validate_shard_reports_what_it_found(tmp_path):
    tokens = np.array([9, 9, 50256, 1, 2, 50256, 3], dtype=np.uint16)
    info = validate_shard(write_shard(tmp_path / "fineweb_val_000000.bin", tokens))
    assert (info.split, info.tokens, info.documents, info.max_token) == ("val", 7, 2, 50256)
    bad = write_shard(tmp_path / "fineweb_train_000001.bin", np.array([1, 2, 3], dtype=np.uint16))
    with pytest.raises(ShardError, match="no document separator.*cached_fineweb10B.py"):
        validate_shard(bad)


def test_write_shard_refuses_what_check_would_reject(tmp_path):
    with pytest.raises(ShardError, match="not below the vocabulary size"):
        write_shard(tmp_path / "a.bin", np.array([600, 511], dtype=np.uint16), vocab_size=512)
    with pytest.raises(ValueError, match="uint16"):
        write_shard(tmp_path / "a.bin", np.array([70000]))
    assert not list(tmp_path.iterdir())


def packed_reference(stream, val_tokens, shard_tokens, sep):
    """Slow and obvious: cut the whole stream at val_tokens, then every shard_tokens; a last piece without a
    separator (the end of a document) joins the shard before it."""
    cuts = [0, val_tokens] + list(range(val_tokens + shard_tokens, len(stream), shard_tokens)) + [len(stream)]
    shards = [list(stream[a:b]) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
    if len(shards) > 1 and sep not in shards[-1]:
        tail = shards.pop()
        shards[-1] += tail
    return shards


@settings(max_examples=25, deadline=None)
@given(
    pieces=st.lists(st.integers(1, 60), min_size=1, max_size=30),
    val_tokens=st.integers(5, 80),
    shard_tokens=st.integers(5, 80),
)
def test_shard_writer_cuts_the_stream_like_the_reference(tmp_path_factory, pieces, val_tokens, shard_tokens):
    out = tmp_path_factory.mktemp("w")
    rng = np.random.default_rng(len(pieces))
    # Documents of 1..4 tokens after a separator, so that every shard holds a separator.
    stream = np.concatenate([np.r_[99, rng.integers(0, 99, rng.integers(1, 5))] for _ in range(sum(pieces))])
    writer = ShardWriter(out, "t", vocab_size=100, shard_tokens=shard_tokens, val_tokens=val_tokens)
    at = 0
    for n in pieces:  # the same stream, fed in arbitrary chunks
        writer.add(stream[at : at + n * 3])
        at += n * 3
    writer.add(stream[at:])
    written = writer.close()
    expected = packed_reference(stream, val_tokens, shard_tokens, sep=99)
    assert [p.name for p in written] == [f"t_{'val' if i == 0 else 'train'}_{i:06d}.bin" for i in range(len(expected))]
    for path, want in zip(written, expected, strict=True):
        assert read_tokens(path).tolist() == want
    assert writer.total_tokens == stream.size
    assert read_sums(out) == {p.name: sha256_file(p) for p in written}
    assert list_shards(out) == written


def test_shard_writer_refuses_a_shard_inside_one_document(tmp_path):
    writer = ShardWriter(tmp_path, "t", vocab_size=100, shard_tokens=4, val_tokens=4)
    writer.add(np.array([99, 1, 2, 3], dtype=np.uint16))
    with pytest.raises(ShardError, match="larger --shard-tokens"):
        writer.add(np.array([5, 6, 7, 8, 9], dtype=np.uint16))
    with pytest.raises(ShardError, match="0..99"):
        writer.add(np.array([100]))


def test_sums_file_round_trip_and_errors(tmp_path):
    update_sums(tmp_path, {"b.bin": "b" * 64, "a.bin": "a" * 64})
    assert (tmp_path / "sha256sums.txt").read_text() == f"{'a' * 64}  a.bin\n{'b' * 64}  b.bin\n"
    update_sums(tmp_path, {}, remove=["a.bin"])
    assert read_sums(tmp_path) == {"b.bin": "b" * 64}
    (tmp_path / "sha256sums.txt").write_text(f"{'C' * 64} *c.bin\n\nnot a line\n")
    with pytest.raises(ShardError, match="line 3"):
        read_sums(tmp_path)


def test_folder_vocab_size(tmp_path):
    assert folder_vocab_size(tmp_path) == (50257, "GPT-2 (no meta.json)")
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 512}))
    assert folder_vocab_size(tmp_path)[0] == 512
    for bad in (
        "{not json",
        json.dumps({"vocab": 3}),
        json.dumps({"vocab_size": "512"}),
        json.dumps({"vocab_size": 1}),
    ):
        (tmp_path / "meta.json").write_text(bad)
        with pytest.raises(ShardError, match="meta.json"):
            folder_vocab_size(tmp_path)
