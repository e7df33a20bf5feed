"""Run a log's code in the project's Docker image, isolated (``python -m tools reproduce --sandbox docker``).

A record's code is whatever its submitter wrote: re-running it must not hand it the network, the
maintainer's home folder, credentials in the environment, or write access anywhere but one output
folder. ``docker_argv`` builds the exact ``docker run`` command line as a pure function of a
``DockerRun`` (tests/test_tools_reproduce.py checks every property below on it):

- ``--network none``: no network at all (torchrun's rendezvous uses the loopback device, which stays);
- ``--read-only`` root file system, with a tmpfs for ``/tmp`` (compilers' caches; ``exec`` because
  Triton loads the kernels it builds there);
- the data folder and the extracted code mounted read-only; only the output folder is writable;
- no home folder mounted, ``HOME=/tmp`` inside; no variable of the caller's environment passed
  through, only the trainer's settings given here;
- ``--cap-drop ALL``, ``--security-opt no-new-privileges``, a user that is not root;
- ``--gpus all`` only when the log ran on CUDA, and ``--ipc=host`` (NCCL's shared memory between
  the processes of one node, as in the Dockerfile's instructions).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_IMAGE = "speedrun"
# Paths inside the container.
CODE_DIR = "/reproduce"
DATA_DIR = "/data"
OUT_DIR = "/out"
TMP_DIR = "/tmp"
# The uid/gid of "nobody" in Ubuntu images: used when the caller is root, since the code must not be.
NOBODY = 65534
# Fixed values, not the caller's: caches go to the tmpfs, and getpass.getuser() (used for cache
# folder names by torch's compiler) finds a name without an /etc/passwd entry for the uid.
FIXED_ENV = {"HOME": TMP_DIR, "USER": "speedrun", "PYTHONDONTWRITEBYTECODE": "1"}
TMPFS_SIZE = "16g"


@dataclass(frozen=True)
class DockerRun:
    image: str
    code_file: Path  # the extracted train_gpt.py on the host
    data_dir: Path  # the shards on the host
    out_dir: Path  # the only writable folder: the trainer's LOG_DIR
    nproc: int
    gpus: bool  # the log ran on CUDA
    env: Mapping[str, str] = field(default_factory=dict)  # the trainer's settings (SEED, SPEEDRUN_PRESET, ...)
    uid: int = NOBODY
    gid: int = NOBODY
    name: str = "speedrun-reproduce"


def container_paths(code_file: Path) -> dict[str, str]:
    """Where the code, data and output folder are inside the container (for DATA_PATH and LOG_DIR)."""
    return {"code": f"{CODE_DIR}/{code_file.name}", "data": DATA_DIR, "out": OUT_DIR}


def docker_argv(run: DockerRun) -> list[str]:
    """The ``docker run`` command line that trains ``run.code_file`` in the sandbox (a pure function)."""
    if run.uid == 0 or run.gid == 0:
        raise ValueError("the sandboxed code must not run as root: give a non-zero uid and gid")
    for host in (run.code_file, run.data_dir, run.out_dir):
        if any(c in str(host.resolve()) for c in ',="\n'):
            raise ValueError(
                f"{host}: a path with a comma, '=', a quote or a line break cannot be given to docker --mount; "
                "move it or give --data/--out another folder"
            )
    paths = container_paths(run.code_file)
    argv = [
        "docker",
        "run",
        "--rm",
        "--name",
        run.name,
        "--network",
        "none",
        "--ipc=host",
        "--read-only",
        "--tmpfs",
        f"{TMP_DIR}:rw,exec,nosuid,nodev,size={TMPFS_SIZE}",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        f"{run.uid}:{run.gid}",
        "--workdir",
        CODE_DIR,
        "--mount",
        f"type=bind,source={run.code_file.resolve()},target={paths['code']},readonly",
        "--mount",
        f"type=bind,source={run.data_dir.resolve()},target={DATA_DIR},readonly",
        "--mount",
        f"type=bind,source={run.out_dir.resolve()},target={OUT_DIR}",
    ]
    if run.gpus:
        argv += ["--gpus", "all"]
    env = dict(run.env)
    env.update(FIXED_ENV)
    env.update(DATA_PATH=DATA_DIR, LOG_DIR=OUT_DIR)
    for key in sorted(env):
        argv += ["--env", f"{key}={env[key]}"]
    argv += [
        run.image,
        "python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={run.nproc}",
        paths["code"],
    ]
    return argv


def docker_engine() -> str | None:
    """None when a Docker engine answers; otherwise why not, in a few words."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        out = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`docker info` failed ({e})"
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no message"])[-1]
        return f"the docker client is installed but no engine answers ({reason[:200]})"
    return None


def image_present(image: str) -> bool:
    try:
        out = subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def kill_container(name: str) -> None:
    """Stop a sandbox whose docker client was interrupted (the container may outlive its client)."""
    try:
        subprocess.run(["docker", "kill", name], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass
