"""Files from the Hugging Face Hub, reliably: published digests, resumable downloads, the local cache, offline.

Shared by data/cached_fineweb10B.py (token shards) and data/fineweb.py (raw FineWeb parquet).

- `remote_files` / `list_remote` ask the Hub once for the size and sha256 it publishes for each
  file (Git LFS metadata), pinned to one commit so that every file comes from the same revision.
- `download` writes to `<dest>.part`, resumes that file with an HTTP Range request after an
  interruption (a dropped connection, Ctrl-C, a killed job), retries transient errors, then checks
  the size and sha256 before the file gets its final name. huggingface_hub 2.4 restarts an
  interrupted `hf_hub_download` from zero, which is why the transfer itself is done here.
- `cached_file` finds a file in the standard Hugging Face cache (HF_HUB_CACHE), also when offline
  (HF_HUB_OFFLINE=1); the cache names a large file's blob by its sha256, so even offline a cached
  copy can be checked against the digest the Hub published when it was downloaded.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import httpx2  # huggingface_hub 2.x speaks HTTP through httpx2; its transport errors are not OSErrors
from huggingface_hub import HfApi, constants, is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status
from tqdm import tqdm

REPO_TYPE = "dataset"
_SHA256 = re.compile(r"[0-9a-f]{64}")
T = TypeVar("T")
PATHS_PER_CALL = 100  # paths per paths-info request, so that even the 1031 files of the 100B set stay small requests
RETRIES = 5  # attempts in a row without any new byte before a download gives up (the .part file stays)


class HubError(Exception):
    """The Hub answered, but not with what we need (no such repository, revision or file)."""


class HubUnreachable(Exception):
    """The Hub could not be asked: offline mode, no network, DNS, proxy, timeouts."""


class DownloadError(Exception):
    """A download failed or produced a file that does not match what the Hub published."""


class Stopped(Exception):
    """The caller's stop event was set during a download; the .part file is kept and resumes next time."""


@dataclass(frozen=True)
class RemoteFile:
    name: str  # path in the repository
    size: int
    sha256: str | None  # the LFS digest the Hub publishes; None for a small file kept in git itself


def endpoint() -> str:
    return constants.ENDPOINT


def file_url(repo_id: str, name: str, revision: str) -> str:
    """The download address of a file (what `hf_hub_url` gives, but reading HF_ENDPOINT at call time)."""
    return f"{endpoint()}/datasets/{repo_id}/resolve/{quote(revision, safe='')}/{quote(name)}"


def describe_unreachable(error: BaseException | None = None) -> str:
    """Why the Hub could not be reached, in a few words."""
    if error is None or is_offline_mode():
        return "HF_HUB_OFFLINE=1 is set"
    detail = str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {detail}"


def _remote(entry: RepoFile) -> RemoteFile:
    if entry.lfs is not None:
        return RemoteFile(entry.path, entry.lfs.size, entry.lfs.sha256)
    return RemoteFile(entry.path, entry.size, None)


def _hub_call(what: str, repo_id: str, call: Callable[[], T]) -> T:
    """Run one Hub API call; turn its failures into HubError (answered) or HubUnreachable (not answered)."""
    if is_offline_mode():
        raise HubUnreachable(describe_unreachable())
    try:
        return call()
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise HubError(
            f"the Hugging Face Hub has no {REPO_TYPE} repository {repo_id} at that revision, or it is private or gated "
            f"({type(e).__name__} while {what}); if you need a token, log in with `hf auth login`"
        ) from None
    except (OSError, httpx2.HTTPError) as e:
        raise HubUnreachable(describe_unreachable(e)) from None


def remote_files(repo_id: str, names: list[str], revision: str = "main") -> tuple[str, dict[str, RemoteFile]]:
    """(commit, {name: RemoteFile}) for those of `names` that exist in the repository at `revision`."""
    api = HfApi()
    commit = _hub_call(
        "resolving the revision", repo_id, lambda: api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision).sha
    )
    found: dict[str, RemoteFile] = {}
    for start in range(0, len(names), PATHS_PER_CALL):
        batch = names[start : start + PATHS_PER_CALL]
        entries = _hub_call(
            "reading file sizes and digests",
            repo_id,
            lambda batch=batch: api.get_paths_info(repo_id, batch, repo_type=REPO_TYPE, revision=commit),
        )
        found.update((e.path, _remote(e)) for e in entries if isinstance(e, RepoFile))
    return commit, found


def list_remote(repo_id: str, folder: str, suffix: str, revision: str = "main") -> tuple[str, list[RemoteFile]]:
    """(commit, files under `folder` whose names end with `suffix`, sorted by path)."""
    api = HfApi()
    commit = _hub_call(
        "resolving the revision", repo_id, lambda: api.repo_info(repo_id, repo_type=REPO_TYPE, revision=revision).sha
    )
    entries = _hub_call(
        f"listing {folder}",
        repo_id,
        lambda: list(api.list_repo_tree(repo_id, folder, repo_type=REPO_TYPE, revision=commit)),
    )
    files = [_remote(e) for e in entries if isinstance(e, RepoFile) and e.path.endswith(suffix)]
    return commit, sorted(files, key=lambda f: f.name)


def cached_file(repo_id: str, name: str, revision: str = "main") -> Path | None:
    """The file's path in the local Hugging Face cache (HF_HUB_CACHE), or None; works offline."""
    found = try_to_load_from_cache(repo_id, name, revision=revision, repo_type=REPO_TYPE)
    return Path(found) if isinstance(found, str) else None


def cache_dir() -> str:
    return constants.HF_HUB_CACHE


def blob_sha256(cached: Path) -> str | None:
    """The sha256 the Hub published for a cached file: its blob's name, for files stored with Git LFS."""
    name = Path(os.path.realpath(cached)).name
    return name if _SHA256.fullmatch(name) else None


def install(src: Path, dest: Path) -> None:
    """Put a verified file at dest atomically: a hard link when on the same filesystem (no second copy), else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(os.path.realpath(src), tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def download(
    repo_id: str, remote: RemoteFile, dest: Path, commit: str, desc: str, stop: threading.Event | None = None
) -> None:
    """Fetch one file to dest: resumable through `<dest>.part`, size and sha256 checked before the rename.

    Raises DownloadError (the .part file is kept when it can be resumed) or HubError. `stop` is for a download that
    runs outside the main thread, where Ctrl-C does not reach: once it is set, the transfer raises Stopped at the next
    chunk received (or within the read timeout, HF_HUB_DOWNLOAD_TIMEOUT, when none comes), keeping the .part file.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    url = file_url(repo_id, remote.name, commit)
    for fresh_start in (False, True):
        if fresh_start:
            part.unlink(missing_ok=True)
        _transfer(url, part, remote.size, desc, stop)
        if remote.sha256 is None:
            break
        h = hashlib.sha256()
        with part.open("rb") as f:
            while block := f.read(8 << 20):
                h.update(block)
        if h.hexdigest() == remote.sha256:
            break
        # A .part left by an older revision of the file, or bytes damaged in transit: start over once.
        if fresh_start:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"{dest}: downloaded twice, and the bytes (sha256 {h.hexdigest()[:16]}...) do not match the "
                f"{remote.sha256[:16]}... that {endpoint()} publishes for {repo_id}@{commit[:12]}; the file was not "
                f"kept. Try again later; if it persists, the Hub's copy is damaged"
            )
    os.replace(part, dest)


def _check_stop(stop: threading.Event | None, part: Path) -> None:
    if stop is not None and stop.is_set():
        raise Stopped(f"download stopped; {part} is kept and resumes when you run the same command again")


def _transfer(url: str, part: Path, size: int, desc: str, stop: threading.Event | None = None) -> None:
    """Bring `part` to `size` bytes from url, resuming from its current length (Stopped once `stop` is set)."""
    headers = build_hf_headers()
    headers["Accept-Encoding"] = "identity"  # byte ranges must refer to the file itself, not a compressed stream
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    failures = 0
    while have < size:
        _check_stop(stop, part)
        request_headers = dict(headers)
        if have:
            request_headers["Range"] = f"bytes={have}-"
        try:
            with get_session().stream(
                "GET", url, headers=request_headers, follow_redirects=True, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT
            ) as response:
                if response.status_code == 416:  # the .part is not a prefix of this file any more
                    part.unlink(missing_ok=True)
                    have = 0
                    continue
                if response.status_code >= 400:
                    response.read()
                    hf_raise_for_status(response)
                if have and response.status_code != 206:  # the server ignored the range: take the whole file
                    have = 0
                with (
                    part.open("ab" if have else "wb") as f,
                    tqdm(
                        total=size,
                        initial=have,
                        desc=desc,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        mininterval=0.5,
                    ) as bar,
                ):
                    for chunk in response.iter_bytes():  # as received: a dropped transfer loses nothing
                        f.write(chunk)
                        have += len(chunk)
                        bar.update(len(chunk))
                        failures = 0
                        _check_stop(stop, part)
        except (RepositoryNotFoundError, RevisionNotFoundError) as e:
            raise HubError(f"{url}: {type(e).__name__}: the file is gone from the Hub") from None
        except httpx2.HTTPError as e:  # network trouble and HTTP errors; a full disk (OSError) is not retried
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status is not None and status < 500 and status not in (408, 429):
                raise DownloadError(f"{url}: HTTP {status} ({e})") from None
            failures += 1
            if failures >= RETRIES:
                raise DownloadError(
                    f"{url}: {describe_unreachable(e)} ({failures} attempts in a row); the partial file {part} "
                    f"({have:,} of {size:,} bytes) is kept and resumes when you run the same command again"
                ) from None
            tqdm.write(
                f"{desc}: {describe_unreachable(e)}; resuming at byte {have:,} (attempt {failures + 1} of {RETRIES})"
            )
            time.sleep(min(2.0 ** (failures - 1), 30.0))
            have = part.stat().st_size if part.exists() else 0
    if have != size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url}: received {have:,} bytes, the Hub says the file has {size:,}; run again")
