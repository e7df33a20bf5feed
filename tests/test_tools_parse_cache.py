"""The cache of parse results: a hit is what parsing gives, a damaged entry is a miss that parsing writes again."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO_ROOT
from helpers.logfactory import LogSpec, make_log
from tools.judge import parse as parse_module
from tools.judge.parse import ParsedLog, parse_log

PUBLIC = REPO_ROOT / "tests" / "fixtures" / "public-speedrun" / "records"
FIXTURE_LOGS = sorted(p for p in PUBLIC.rglob("*") if p.suffix in (".txt", ".log"))
KERNEL_LOG = PUBLIC / "track_1_short/2026-02-02_KernelTuning/25afb73a-332f-4d69-b9ab-f6261497f2d8.txt"


def assert_same(a: ParsedLog, b: ParsedLog) -> None:
    """Every field equal, the metric columns bit for bit and of one dtype."""
    assert a.to_json() == b.to_json()
    for f in dataclasses.fields(ParsedLog):
        if f.name != "metrics":
            assert getattr(a, f.name) == getattr(b, f.name), f.name
    for f in dataclasses.fields(a.metrics):
        x, y = getattr(a.metrics, f.name), getattr(b.metrics, f.name)
        assert (x.dtype, x.shape, x.tobytes()) == (y.dtype, y.shape, y.tobytes()), f.name


def _entries(cache: Path) -> list[Path]:
    return sorted(cache.rglob("*.entry"))


def _no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> ParsedLog:
        raise AssertionError("parsed, though the cache holds the log")

    monkeypatch.setattr(parse_module, "_parse_bytes", refuse)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SPEEDRUN_CACHE", str(folder))
    return folder


def test_fixture_logs_exist() -> None:
    assert len(FIXTURE_LOGS) == 13 and any(p.suffix == ".log" for p in FIXTURE_LOGS)


@pytest.mark.parametrize("path", FIXTURE_LOGS, ids=lambda p: p.parent.name + "/" + p.name[:8])
def test_a_hit_is_what_parsing_gives(path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEEDRUN_CACHE", "off")
    uncached = parse_log(path)
    monkeypatch.setenv("SPEEDRUN_CACHE", str(cache))
    first = parse_log(path)  # a miss: parsed, then kept
    assert len(_entries(cache)) == 1
    _no_parsing(monkeypatch)
    hit = parse_log(path)
    assert_same(uncached, first)
    assert_same(uncached, hit)


def test_a_hit_takes_the_callers_path(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parse_log(KERNEL_LOG)
    moved = tmp_path / "elsewhere" / "renamed.log"
    moved.parent.mkdir()
    shutil.copyfile(KERNEL_LOG, moved)
    _no_parsing(monkeypatch)
    log = parse_log(moved)
    assert log.path == str(moved) and log.size_bytes == KERNEL_LOG.stat().st_size
    assert log.code_files[1].name == "triton_kernels.py" and log.final_step == log.total_steps


def test_the_cache_off_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEEDRUN_CACHE", "off")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    parse_log(KERNEL_LOG)
    assert list(tmp_path.iterdir()) == []


def _with_crc(entry: bytes, body: bytes) -> bytes:
    """An entry whose CRC is right for ``body``: damage the CRC cannot see."""
    head = len(parse_module._CACHE_FORMAT)
    return entry[:head] + b"%08x\n" % zlib.crc32(body) + body


def _header_edited(entry: bytes, edit: Any) -> bytes:
    start = len(parse_module._CACHE_FORMAT) + 9
    n = int.from_bytes(entry[start : start + 8], "little")
    header = json.loads(entry[start + 8 : start + 8 + n])
    edit(header)
    head = json.dumps(header).encode()
    return _with_crc(entry, len(head).to_bytes(8, "little") + head + entry[start + 8 + n :])


DAMAGE = {
    "a flipped byte": lambda e: e[: len(e) // 2] + bytes([e[len(e) // 2] ^ 1]) + e[len(e) // 2 + 1 :],
    "truncated": lambda e: e[: len(e) // 3],
    "empty": lambda e: b"",
    "garbage": lambda e: b"\x00\xff" * 100,
    "another format": lambda e: e.replace(b"speedrun-parse-v1", b"speedrun-parse-v0", 1),
    "columns cut, CRC right": lambda e: _with_crc(e, e[len(parse_module._CACHE_FORMAT) + 9 : -8]),
    "a field of the wrong type, CRC right": lambda e: _header_edited(
        e, lambda h: h["facts"].__setitem__("source_lines", "many")
    ),
    "a missing field, CRC right": lambda e: _header_edited(e, lambda h: h["facts"].pop("gpu_names")),
    "a text out of range, CRC right": lambda e: _header_edited(e, lambda h: h["text_refs"].__setitem__(0, -1)),
    "another log's entry, CRC right": lambda e: _header_edited(
        e, lambda h: h["facts"].__setitem__("file_sha256", "0" * 64)
    ),
    "more rows than the columns, CRC right": lambda e: _header_edited(e, lambda h: h.__setitem__("rows", 1)),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_a_miss_and_is_written_again(damage: str, cache: Path) -> None:
    good = parse_log(KERNEL_LOG)
    (entry,) = _entries(cache)
    whole = entry.read_bytes()
    entry.write_bytes(DAMAGE[damage](whole))
    assert entry.read_bytes() != whole
    assert_same(good, parse_log(KERNEL_LOG))
    assert entry.read_bytes() == whole  # parsed again and kept again


def test_an_entry_too_large_to_be_ours_is_not_read(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = parse_log(KERNEL_LOG)
    (entry,) = _entries(cache)
    monkeypatch.setattr(parse_module, "_MAX_ENTRY_BYTES", entry.stat().st_size - 1)
    monkeypatch.setattr(parse_module.Store, "read", lambda *a: pytest.fail("read an entry past the size limit"))
    assert_same(good, parse_log(KERNEL_LOG))


def test_hashes_and_odd_values_survive_the_cache(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config number json reads as inf, text beyond ASCII, an llm.c log: kept and read back the same."""
    text = make_log(LogSpec(source="print('h\u00e9llo \U0001f600')\n")).replace('"seed": ', '"big": 1e400, "seed": ', 1)
    path = tmp_path / "run.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("SPEEDRUN_CACHE", "off")
    uncached = parse_log(path)
    monkeypatch.setenv("SPEEDRUN_CACHE", str(cache))
    parse_log(path)
    _no_parsing(monkeypatch)
    hit = parse_log(path)
    assert_same(uncached, hit)
    assert hit.config is not None and hit.config["big"] == float("inf")
    assert hit.source_sha256 == hashlib.sha256(text.split("=" * 100)[0].encode()).hexdigest()
    assert np.isnan(hit.metrics.lr).all()
