"""data/cached_fineweb10B.py, run as users run it: from a Hugging Face cache filled here (HF_HUB_OFFLINE=1), and
from a local stand-in for the Hub (resume, digest mismatch), with the clear offline error and no traceback."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import constants

from conftest import REPO_ROOT
from data import cached_fineweb10B, check
from data import hub as data_hub
from helpers.data_fakehub import FakeHub, fill_hf_cache, shard_bytes

REPO = "kjj0/fineweb10B-gpt2"
NAMES = ["fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"]
SCRIPT = "data/cached_fineweb10B.py"


def shards(names=NAMES, ntok=4096):
    return {name: shard_bytes(i, ntok) for i, name in enumerate(names)}


def run(args, tmp_path, *, offline=True, endpoint=None, cwd=REPO_ROOT):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_CACHE=str(tmp_path / "hub"), HF_HUB_DISABLE_TELEMETRY="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    result = subprocess.run(
        [sys.executable, SCRIPT, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def test_offline_cache_resolves_verifies_and_skips_what_is_there(tmp_path):
    files = shards()
    fill_hf_cache(tmp_path / "hub", REPO, files)
    out = tmp_path / "out"
    result = run([2, "--out", out], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("from the Hugging Face cache") == 3
    for name, content in files.items():
        assert (out / name).read_bytes() == content
    sums = (out / "sha256sums.txt").read_text()
    assert all(f"{hashlib.sha256(c).hexdigest()}  {n}" in sums for n, c in files.items())
    assert check.main([str(out)]) == 0

    before = {name: (out / name).stat().st_mtime_ns for name in files}
    again = run([2, "--out", out], tmp_path)
    assert again.returncode == 0 and again.stdout.count("already present") == 3
    assert before == {name: (out / name).stat().st_mtime_ns for name in files}


def test_default_destination_is_data_fineweb10B_beside_the_script(tmp_path):
    repo = tmp_path / "checkout"
    shutil.copytree(REPO_ROOT / "data", repo / "data", ignore=shutil.ignore_patterns("fineweb*", "synthetic", "raw"))
    fill_hf_cache(tmp_path / "hub", REPO, shards(NAMES[:2]))
    result = run([1], tmp_path, cwd=repo)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (repo / "data" / "fineweb10B").glob("*.bin")) == sorted(NAMES[:2])


def test_variant_flag_picks_repository_folder_and_names(tmp_path):
    names = ["finewebedu_val_000000.bin", "finewebedu_train_000001.bin"]
    fill_hf_cache(tmp_path / "hub", "kjj0/finewebedu10B-gpt2", shards(names))
    out = tmp_path / "edu"
    result = run([1, "--variant", "edu10B", "--out", out], tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.glob("*.bin")) == sorted(names)


def test_corrupt_and_truncated_cache_entries_are_refused(tmp_path):
    files = shards()
    repo_dir = fill_hf_cache(tmp_path / "hub", REPO, files)
    flipped = bytearray(files[NAMES[1]])
    flipped[-1] ^= 1  # same size, valid header: only the sha256 (the blob's name) can tell
    (repo_dir / "blobs" / hashlib.sha256(files[NAMES[1]]).hexdigest()).write_bytes(bytes(flipped))
    (repo_dir / "blobs" / hashlib.sha256(files[NAMES[2]]).hexdigest()).write_bytes(files[NAMES[2]][:-100])
    out = tmp_path / "out"
    result = run([2, "--out", out], tmp_path)
    assert result.returncode == 1
    assert NAMES[1] in result.stderr and "does not match" in result.stderr
    assert NAMES[2] in result.stderr and "truncated" in result.stderr
    assert (out / NAMES[0]).is_file() and not (out / NAMES[1]).exists() and not (out / NAMES[2]).exists()


def test_a_broken_copy_in_the_data_folder_is_replaced(tmp_path):
    files = shards()
    fill_hf_cache(tmp_path / "hub", REPO, files)
    out = tmp_path / "out"
    out.mkdir()
    (out / NAMES[1]).write_bytes(files[NAMES[1]][:5000])  # an interrupted copy
    result = run([2, "--out", out], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "broken" in result.stdout and (out / NAMES[1]).read_bytes() == files[NAMES[1]]


def test_a_damaged_sums_file_is_one_clear_error_before_any_download(tmp_path):
    fill_hf_cache(tmp_path / "hub", REPO, shards())
    out = tmp_path / "out"
    out.mkdir()
    (out / "sha256sums.txt").write_text("0123  fineweb_val_000000.bin\n")
    result = run([2, "--out", out], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {out / 'sha256sums.txt'}, line 1:") and "fix or delete" in result.stderr
    assert not list(out.glob("*.bin"))
    (out / "sha256sums.txt").write_bytes(b"\xff\xfe not text")
    result = run([2, "--out", out], tmp_path)
    assert result.returncode == 1 and "is not a text file of digests" in result.stderr


def test_out_that_is_a_file_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("x")
    result = run([2, "--out", tmp_path / "file"], tmp_path)
    assert result.returncode == 2 and "is a file, not a folder" in result.stderr


def damage_in_place(path: Path) -> bytes:
    """Change one token of a shard to another valid one: same size, valid header and tokens, other sha256.

    Written as a new file: the installed shard is a hard link to the cache blob, which must stay intact here."""
    good = path.read_bytes()
    raw = bytearray(good)
    raw[2000:2002] = (7 if raw[2000:2002] != b"\x07\x00" else 8).to_bytes(2, "little")
    path.unlink()
    path.write_bytes(bytes(raw))
    return good


def test_a_same_size_corrupt_shard_is_replaced_by_the_command_check_py_gives(tmp_path, capsys):
    files = shards()
    fill_hf_cache(tmp_path / "hub", REPO, files)
    out = tmp_path / "out"
    assert run([2, "--out", out], tmp_path).returncode == 0
    good = damage_in_place(out / NAMES[1])
    assert check.main([str(out)]) == 1
    report = capsys.readouterr().out
    assert "differs from" in report
    command = report.split("run `", 1)[1].split("`", 1)[0]
    assert command == f"python data/cached_fineweb10B.py 2 --out {out}"  # not the default folder: --out is needed
    result = run(command.split()[2:], tmp_path)  # what check.py says to run, offline with the cache filled
    assert result.returncode == 0, result.stderr
    assert f"{NAMES[1]}: the copy here is broken" in result.stdout and "does not match" in result.stdout
    assert result.stdout.count("sha256 verified") == 2
    assert (out / NAMES[1]).read_bytes() == good and check.main([str(out)]) == 0

    # Without sha256sums.txt, the cache's blob name (the published digest) still tells.
    (out / "sha256sums.txt").unlink()
    damage_in_place(out / NAMES[2])
    result = run([2, "--out", out], tmp_path)
    assert result.returncode == 0 and f"{NAMES[2]}: the copy here is broken" in result.stdout
    assert (out / NAMES[2]).read_bytes() == files[NAMES[2]]


def test_a_corrupt_shard_with_no_good_copy_in_reach_is_reported_and_kept(tmp_path):
    fill_hf_cache(tmp_path / "hub", REPO, shards())
    out = tmp_path / "out"
    assert run([2, "--out", out], tmp_path).returncode == 0
    shutil.rmtree(tmp_path / "hub")  # offline, and the cache is gone: only sha256sums.txt knows the digests
    damage_in_place(out / NAMES[1])
    damaged = (out / NAMES[1]).read_bytes()
    result = run([2, "--out", out], tmp_path)
    assert result.returncode == 1
    assert f"{NAMES[1]}: the copy in {out} is broken" in result.stderr and "left as it is" in result.stderr
    assert f"{out / 'sha256sums.txt'} lists" in result.stderr
    assert f"python data/cached_fineweb10B.py 2 --out {out}` again" in result.stderr
    assert (out / NAMES[1]).read_bytes() == damaged


def test_online_a_corrupt_shard_is_compared_with_the_hub_digest_and_fetched_again(tmp_path):
    files = shards()
    out = tmp_path / "out"
    out.mkdir()
    for name, content in files.items():
        (out / name).write_bytes(content)  # copied here by hand: no sha256sums.txt, no cache
    damage_in_place(out / NAMES[0])
    with FakeHub(REPO, files) as hub:
        result = run([2, "--out", out], tmp_path, offline=False, endpoint=hub.url)
        fetched = [name for name, _ in hub.ranges]
    assert result.returncode == 0, result.stderr
    assert fetched == [NAMES[0]] and result.stdout.count("sha256 verified") == 2
    assert (out / NAMES[0]).read_bytes() == files[NAMES[0]]
    assert check.main([str(out)]) == 0
    sums = (out / "sha256sums.txt").read_text()
    assert all(hashlib.sha256(c).hexdigest() in sums for c in files.values())


def test_digests_of_finished_shards_survive_an_interrupt(tmp_path, monkeypatch, capsys):
    files = shards()
    fill_hf_cache(tmp_path / "hub", REPO, files)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    install = data_hub.install

    def ctrl_c_on_the_last(src, dest):
        if dest.name == NAMES[2]:
            raise KeyboardInterrupt
        install(src, dest)

    monkeypatch.setattr(data_hub, "install", ctrl_c_on_the_last)
    out = tmp_path / "out"
    assert cached_fineweb10B.main(["2", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    sums = (out / "sha256sums.txt").read_text()
    assert all(f"{hashlib.sha256(files[n]).hexdigest()}  {n}" in sums for n in NAMES[:2]) and NAMES[2] not in sums


@pytest.mark.parametrize("offline", [True, False])
def test_nothing_cached_and_no_hub_gives_one_clear_paragraph(tmp_path, offline):
    # Offline: HF_HUB_OFFLINE=1. Online: the Hub's address is a closed local port (connection refused).
    result = run(
        [2, "--out", tmp_path / "out"], tmp_path, offline=offline, endpoint=None if offline else "http://127.0.0.1:9"
    )
    assert result.returncode == 1
    error = result.stderr.strip()
    assert error.startswith("error: could not reach the Hugging Face Hub") and "\n" not in error
    assert ("HF_HUB_OFFLINE=1" if offline else "Connection refused") in error
    assert all(name in error for name in NAMES) and "python data/cached_fineweb10B.py 2" in error


def test_bad_shard_count_is_a_usage_error(tmp_path, capsys):
    result = run(["104"], tmp_path)
    assert result.returncode == 2 and "N must be between 0 and 103" in result.stderr
    for argv in (["-1"], ["many"], ["5", "--variant", "1T"]):
        with pytest.raises(SystemExit) as err:
            cached_fineweb10B.main(argv)
        assert err.value.code == 2 and "usage:" in capsys.readouterr().err


def test_each_variant_offers_the_train_shards_its_repository_holds(capsys):
    # Counts of the public download scripts: FineWeb-Edu 10B ends at finewebedu_train_000099.bin (53,989,344 tokens).
    for variant, count in (("10B", 103), ("100B", 1030), ("edu10B", 99)):
        assert cached_fineweb10B.parse_args([str(count), "--variant", variant]).n == count
        with pytest.raises(SystemExit) as err:
            cached_fineweb10B.parse_args([str(count + 1), "--variant", variant])
        assert err.value.code == 2 and f"N must be between 0 and {count}" in capsys.readouterr().err


def test_download_resumes_a_partial_file_and_a_dropped_connection(tmp_path):
    files = shards(ntok=150_000)  # ~300 KB each
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{NAMES[1]}.part").write_bytes(files[NAMES[1]][:100_000])  # left by a killed run
    with FakeHub(REPO, files) as hub:
        hub.cut_after[NAMES[2]] = 120_000  # the connection drops once, mid-file
        result = run([2, "--out", out], tmp_path, offline=False, endpoint=hub.url)
        ranges = list(hub.ranges)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("downloaded and verified") == 3
    for name, content in files.items():
        assert (out / name).read_bytes() == content
    assert (NAMES[1], "bytes=100000-") in ranges  # resumed, not restarted
    assert (NAMES[2], "bytes=120000-") in ranges
    assert not list(out.glob("*.part"))
    assert check.main([str(out)]) == 0


def test_download_refuses_a_file_that_does_not_match_the_published_sha256(tmp_path):
    files = shards()
    out = tmp_path / "out"
    with FakeHub(REPO, files) as hub:
        hub.published_sha256[NAMES[2]] = "ab" * 32
        result = run([2, "--out", out], tmp_path, offline=False, endpoint=hub.url)
    assert result.returncode == 1
    assert NAMES[2] in result.stderr and "do not match the abababab" in result.stderr
    assert not (out / NAMES[2]).exists() and not (out / f"{NAMES[2]}.part").exists()
    assert (out / NAMES[0]).is_file() and (out / NAMES[1]).is_file()


def test_download_says_when_the_repository_has_fewer_shards(tmp_path):
    with FakeHub(REPO, shards()) as hub:
        result = run([3, "--out", tmp_path / "out"], tmp_path, offline=False, endpoint=hub.url)
    assert result.returncode == 1 and "has no fineweb_train_000003.bin" in result.stderr


def test_cache_is_checked_against_the_hub_digest_when_online(tmp_path):
    files = shards()
    repo_dir = fill_hf_cache(tmp_path / "hub", REPO, files)
    damaged = bytearray(files[NAMES[2]])
    damaged[-1] ^= 1
    (repo_dir / "blobs" / hashlib.sha256(files[NAMES[2]]).hexdigest()).write_bytes(bytes(damaged))
    with FakeHub(REPO, files) as hub:
        result = run([2, "--out", tmp_path / "out"], tmp_path, offline=False, endpoint=hub.url)
        fetched = [name for name, _ in hub.ranges]
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("from the Hugging Face cache") == 2 and "cache is broken" in result.stdout
    assert fetched == [NAMES[2]]  # only the damaged one is downloaded again
    for name, content in files.items():
        assert Path(tmp_path / "out" / name).read_bytes() == content


def test_remote_files_batches_paths_info_requests(monkeypatch):
    files = shards()
    with FakeHub(REPO, files) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(data_hub, "PATHS_PER_CALL", 2)
        commit, remote = data_hub.remote_files(REPO, [*NAMES, "fineweb_train_000077.bin"])
        posts = [r for r in hub.requests if r.startswith("POST")]
    assert commit == hub.commit and len(posts) == 2
    assert sorted(remote) == sorted(NAMES)
    assert remote[NAMES[1]].sha256 == hashlib.sha256(files[NAMES[1]]).hexdigest()
    assert remote[NAMES[1]].size == len(files[NAMES[1]])
