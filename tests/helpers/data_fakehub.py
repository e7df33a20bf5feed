"""Test helpers for data/: small valid shards, a filled Hugging Face cache, and a local stand-in for the Hub.

The stand-in answers the four Hub calls data/hub.py makes (revision info, paths-info, tree listing,
file download with HTTP Range) on 127.0.0.1, so the online code path runs for real without a network.
It can publish a wrong sha256 for a file, cut a transfer short or send it slowly, and it logs every Range header.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np

from data.shards import GPT2_VOCAB_SIZE, make_header

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SLOW_PIECES = 200


def shard_bytes(seed: int, ntok: int = 4096, vocab_size: int = GPT2_VOCAB_SIZE) -> bytes:
    """A valid shard: random tokens below vocab_size - 1 with a separator (vocab_size - 1) every ~100 tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab_size - 1, ntok, dtype=np.int64)
    tokens[rng.random(ntok) < 0.01] = vocab_size - 1
    tokens[0] = vocab_size - 1
    return make_header(ntok) + tokens.astype("<u2").tobytes()


def fill_hf_cache(cache: Path, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Lay files out as huggingface_hub does: blobs/<sha256>, snapshots/<commit>/<name> -> blob, refs/main."""
    repo_dir = cache / f"datasets--{repo_id.replace('/', '--')}"
    for name, content in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = repo_dir / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    return repo_dir


class FakeHub:
    """A dataset repository served over HTTP on 127.0.0.1 the way the Hugging Face Hub serves it."""

    def __init__(self, repo_id: str, files: dict[str, bytes], commit: str = COMMIT) -> None:
        self.repo_id = repo_id
        self.files = dict(files)
        self.commit = commit
        self.published_sha256 = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        self.cut_after: dict[str, int] = {}  # name -> bytes sent before the next transfer of it is dropped
        self.slow: dict[str, float] = {}  # name -> seconds its transfers take, sent in SLOW_PIECES pieces
        self.ranges: list[tuple[str, str | None]] = []  # (name, Range header) of every file GET
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _json(self, payload: object, status: int = 200) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                hub.requests.append(f"GET {self.path}")
                path = unquote(urlparse(self.path).path)
                api = f"/api/datasets/{hub.repo_id}/"
                if path == api + "revision/main" or path == api + f"revision/{hub.commit}":
                    return self._json({"id": hub.repo_id, "sha": hub.commit, "private": False})
                if path.startswith(api + f"tree/{hub.commit}/"):
                    folder = path[len(api + f"tree/{hub.commit}/") :].rstrip("/")
                    entries = [hub.entry(n) for n in sorted(hub.files) if n.startswith(folder + "/")]
                    return self._json(entries)
                prefix = f"/datasets/{hub.repo_id}/resolve/{hub.commit}/"
                if path.startswith(prefix) and path[len(prefix) :] in hub.files:
                    return self._file(path[len(prefix) :])
                self._json({"error": "Entry not found"}, 404)

            def do_POST(self) -> None:  # noqa: N802
                hub.requests.append(f"POST {self.path}")
                path = unquote(urlparse(self.path).path)
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                if path == f"/api/datasets/{hub.repo_id}/paths-info/{hub.commit}":
                    return self._json([hub.entry(n) for n in form.get("paths", []) if n in hub.files])
                self._json({"error": "not found"}, 404)

            def _file(self, name: str) -> None:
                data = hub.files[name]
                rng = self.headers.get("Range")
                hub.ranges.append((name, rng))
                start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", f'"{hub.published_sha256[name]}"')
                self.end_headers()
                if name in hub.slow:
                    step = -(-len(body) // SLOW_PIECES)
                    try:
                        for start in range(0, len(body), step):
                            self.wfile.write(body[start : start + step])
                            self.wfile.flush()
                            time.sleep(hub.slow[name] / SLOW_PIECES)
                    except (BrokenPipeError, ConnectionResetError):  # the client went away
                        pass
                    return
                cut = hub.cut_after.pop(name, None)
                if cut is not None:  # drop the connection mid-transfer, once
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def entry(self, name: str) -> dict[str, object]:
        data = self.files[name]
        return {
            "type": "file",
            "path": name,
            "size": len(data),
            "oid": hashlib.sha1(data).hexdigest(),
            "lfs": {"oid": self.published_sha256[name], "size": len(data), "pointerSize": 134},
        }

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
