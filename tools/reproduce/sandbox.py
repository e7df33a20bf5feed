"""Run a log's code isolated: in bubblewrap (``--sandbox bwrap``, no daemon) or the project's Docker image.

A record's code is whatever its submitter wrote: re-running it must not hand it the network, the
maintainer's home folder, credentials in the environment, or write access anywhere but one output
folder. Both sandboxes give it the same view, built by a pure function of a run description
(``bwrap_argv`` of a ``BwrapRun``, ``docker_argv`` of a ``DockerRun``; tests/test_tools_reproduce.py checks every
property on the command lines, tests/adversarial/test_reproduce_hostile.py against hostile code in a real bubblewrap):

- no network (new network namespace: loopback only, which torchrun's rendezvous uses), and new PID, IPC and UTS
  namespaces: the code sees no process of the host and can signal none;
- a read-only root: the system's /usr (and /bin, /lib...), the few files of /etc a Python program reads, the
  Python installation the tools run on (torch included) and /sys; no home folder, no /root, no /var, no /run;
  a size-limited tmpfs at ``/tmp`` (``HOME=/tmp``: compiler caches);
- the extracted code, the data folder and the probe (tools/reproduce/probe.py) read-only; nothing of the host
  writable but the probe's report channel (a FIFO the runner reads): the output folder the code writes is a tmpfs
  of the output limit's size, which probe.py launch copies (regular files and folders, links never followed) into
  the run's fresh folder once every process of the sandbox is gone;
- no variable of the caller's environment: only the trainer's settings given here, fixed values (``HOME``,
  ``USER``, the compiler cache folders), and ``OMP_NUM_THREADS`` when the caller set it (a thread count changes
  the speed, not what is computed);
- never root: bubblewrap maps the code to uid 65534; when the caller is root, the sandbox is made with root's
  rights and its first process (probe.py launch) drops to the real uid 65534 before anything else runs, so that
  the code has no root rights at all, not even over root's files;
- limits (``Limits``): the kernel's, set inside the sandbox (processes, address space on CPU and file size by
  probe.py launch with setrlimit; the sizes of the /tmp and output tmpfs), and the runner's watch
  (tools/reproduce/watch.py: time, processes, resident memory, output size);
- GPU device nodes (``/dev/nvidia*``) only when the log ran on CUDA.

Docker (``--sandbox docker``): ``--network none``, ``--read-only`` root with a tmpfs ``/tmp``, the code and data
mounted read-only and the output folder writable, no home, ``--cap-drop ALL``, ``no-new-privileges``, a user that
is not root, ``--pids-limit``/``--memory``/``--ulimit fsize``, ``--gpus all`` only for a CUDA log and
``--ipc=host`` (NCCL's shared memory between the processes of one node, as in the Dockerfile's instructions).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_IMAGE = "speedrun"
# Paths inside the sandbox (both kinds).
CODE_DIR = "/reproduce"
DATA_DIR = "/data"
OUT_DIR = "/out"
TMP_DIR = "/tmp"
PROBE_DIR = "/probe"
PROBE_FILE = f"{PROBE_DIR}/probe.py"
REPORT_FILE = f"{PROBE_DIR}/report"
# The uid/gid of "nobody": the code's user in both sandboxes (Docker: when the caller is root).
NOBODY = 65534
# Fixed values, not the caller's: caches go to the tmpfs, and getpass.getuser() (used for cache
# folder names by torch's compiler) finds a name without an /etc/passwd entry for the uid.
FIXED_ENV = {
    "HOME": TMP_DIR,
    "USER": "speedrun",
    "PYTHONDONTWRITEBYTECODE": "1",
    "TORCHINDUCTOR_CACHE_DIR": f"{TMP_DIR}/torchinductor",
    "TRITON_CACHE_DIR": f"{TMP_DIR}/triton",
}
# What the caller may pass on: the thread count changes how fast a CPU run is, never what it computes.
PASSED_ENV = ("OMP_NUM_THREADS",)
# The files of /etc a Python program, torchrun's rendezvous on localhost and ldconfig (Triton finds libcuda
# with it) read; /etc/alternatives holds the links of cc and c++ (inductor's C++ compiler on CPU).
ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/machine-id",
    "/etc/alternatives",
)
# Top-level folders that are links into /usr on merged-/usr systems (Debian 12, Ubuntu), or folders of their own.
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


@dataclass(frozen=True)
class Limits:
    """What one reproduction may use. Defaults: ``default_limits``."""

    seconds: float  # wall time of the whole run
    memory: int  # bytes: the sum of the resident memory of its processes (and each process's address space on CPU)
    processes: int  # processes and threads at once (RLIMIT_NPROC counts threads too)
    output: int  # bytes written to the output folder, all files together
    file_size: int  # bytes: the largest file it may write anywhere (RLIMIT_FSIZE)
    tmp: int  # bytes: the size of its /tmp


GIB = 1024**3
LIMIT_KEYS = {"time": "seconds", "memory": "memory", "processes": "processes", "output": "output", "file": "file_size"}


def default_limits(claimed_train_ms: float | None, device: str, nproc: int) -> Limits:
    """Generous bounds an honest run never meets: 30 minutes plus 4 times the claimed training time (compilation
    and validation are not in it), 90 % of the machine's memory, 256 processes per trainer process (a CUDA
    process runs ~100 threads, inductor's compile workers ~30 more), 1 GiB of output (a log is ~150 KB)."""
    seconds = 1800 + 4 * (claimed_train_ms or 0) / 1000
    return Limits(
        seconds=seconds,
        memory=int(0.9 * physical_memory()),
        processes=max(512, 256 * nproc),
        output=GIB,
        file_size=GIB,
        tmp=16 * GIB if device == "cuda" else 4 * GIB,
    )


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 16 * GIB


def parse_size(text: str) -> int:
    """'512M', '2G', '1.5G', '4096' (bytes) -> bytes; ValueError with the fix otherwise."""
    units = {"K": 1024, "M": 1024**2, "G": GIB, "T": 1024**4}
    t = text.strip().upper().removesuffix("B")
    scale = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a size; give bytes or a number with K, M, G or T (e.g. 2G)") from None
    if not value > 0 or value * scale > 2**62:
        raise ValueError(f"{text!r} is not a size above zero")
    return int(value * scale)


def parse_seconds(text: str) -> float:
    """'90', '90s', '30m', '2h' -> seconds."""
    units = {"S": 1, "M": 60, "H": 3600}
    t = text.strip().upper()
    scale = units.get(t[-1:], 1)
    number = t[:-1] if t[-1:] in units else t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration; give seconds or a number with s, m or h (e.g. 30m)") from None
    if not value > 0 or value * scale > 10**8:
        raise ValueError(f"{text!r} is not a duration above zero")
    return value * scale


def with_overrides(limits: Limits, given: Sequence[str]) -> Limits:
    """``limits`` with the ``KEY=VALUE`` settings of ``--limit`` applied (time=30m, memory=8G, processes=64,
    output=100M, file=10M)."""
    values = {f: getattr(limits, f) for f in ("seconds", "memory", "processes", "output", "file_size", "tmp")}
    for item in given:
        key, sep, value = item.partition("=")
        if not sep or key not in LIMIT_KEYS:
            raise ValueError(
                f"--limit {item!r}: give KEY=VALUE with KEY one of {', '.join(LIMIT_KEYS)} (e.g. --limit time=2h)"
            )
        name = LIMIT_KEYS[key]
        if name == "seconds":
            values[name] = parse_seconds(value)
        elif name == "processes":
            if not value.isdigit() or not 16 <= int(value) <= 1_000_000:
                raise ValueError(f"--limit {item!r}: give a number of processes from 16 up")
            values[name] = int(value)
        else:
            values[name] = parse_size(value)
    return Limits(**values)


# --- bubblewrap -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BwrapRun:
    code_file: Path  # the extracted train_gpt.py on the host
    data_dir: Path  # the shards on the host
    out_dir: Path  # where the trainer's LOG_DIR is copied at the end (through result_fd: it is never bound)
    probe: Path  # tools/reproduce/probe.py
    report: Path  # the FIFO the probe writes to (the runner reads it)
    nproc: int
    gpus: bool  # the log ran on CUDA
    limits: Limits
    env: Mapping[str, str] = field(default_factory=dict)  # the trainer's settings (SEED, SPEEDRUN_PRESET, ...)
    python: str = sys.executable  # the interpreter the tools run on: the sandbox runs the same one
    python_dirs: tuple[str, ...] = ()  # its installation (prefix, site-packages): bound read-only (python_dirs())
    root: bool = False  # the caller is root: no user namespace, probe.py launch drops to NOBODY itself
    result_fd: int = 3  # the output folder, open in the runner and passed to bubblewrap (out_dir is never bound)
    gpu_devices: tuple[str, ...] = ()  # /dev/nvidia* nodes, bound for a CUDA log only
    passed: Mapping[str, str] = field(default_factory=dict)  # PASSED_ENV values of the caller


def python_dirs(repository: Path) -> tuple[str, ...]:
    """The folders of this Python installation the sandbox needs: its prefixes and every folder on sys.path
    (site-packages, a user site, an editable install), without the working folder and ``repository``."""
    skip = {os.path.realpath(os.getcwd()), os.path.realpath(repository)}
    out: list[str] = []
    for p in [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path]:
        if not p or not os.path.isabs(p) or not os.path.isdir(p):
            continue
        real = os.path.realpath(p)
        if any(real == s or real.startswith(s + "/") for s in skip) or real == "/usr" or real.startswith("/usr/"):
            continue  # the repository (tools/, tests/) is not the image; /usr is bound whole
        if not any(real == d or real.startswith(d + "/") for d in out):
            out = [d for d in out if not d.startswith(real + "/")] + [real]
    return tuple(sorted(out))


def trainer_command(nproc: int, code: str, probe: str, report: str, python: str = "python") -> list[str]:
    """torchrun, each rank through the probe: ``probe.py run --report FIFO CODE``."""
    return [
        python,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        probe,
        "run",
        "--report",
        report,
        code,
    ]


def launch_command(
    limits: Limits, gpus: bool, drop_to: int | None, python: str, probe: str, result_fd: int | None = None
) -> list[str]:
    """probe.py launch: the limits the kernel enforces, set inside the sandbox (and, for a root caller, the drop
    to the unprivileged uid). No address-space limit on CUDA: the driver reserves far more than it uses. With
    ``result_fd``, the output folder is a tmpfs the launcher copies to that descriptor at the end."""
    argv = [python, "-I", "-S", probe, "launch", "--nproc", str(limits.processes), "--fsize", str(limits.file_size)]
    if not gpus:
        argv += ["--as", str(max(limits.memory, 8 * GIB))]
    if drop_to is not None:
        argv += ["--uid", str(drop_to), "--gid", str(drop_to)]
    if result_fd is not None:
        argv += ["--result-fd", str(result_fd), "--out", OUT_DIR]
    return argv + ["--"]


def bwrap_argv(run: BwrapRun) -> list[str]:
    """The ``bwrap`` command line that trains ``run.code_file`` in the sandbox (a pure function of ``run``)."""
    argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    argv += ["--unshare-uts", "--hostname", "localhost", "--unshare-cgroup-try"]
    if not run.root:  # an unprivileged caller: a user namespace, the code mapped to uid 65534
        argv += ["--unshare-user", "--disable-userns", "--uid", str(NOBODY), "--gid", str(NOBODY), "--cap-drop", "ALL"]
    argv += ["--ro-bind", "/usr", "/usr"]
    for d in SYSTEM_DIRS:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    # Folders bubblewrap makes for the binds below copy no mode that lets uid 65534 in: made readable first.
    for d in ("/etc", CODE_DIR, PROBE_DIR):
        argv += ["--perms", "0755", "--dir", d]
    for f in ETC_FILES:
        argv += ["--ro-bind-try", f, f]
    for d in ("/opt", "/sys"):
        argv += ["--ro-bind-try", d, d]
    made: set[str] = set()
    for d in run.python_dirs:
        # Folders above it are made traversable (bubblewrap copies their modes: /root is 0700) and hold nothing else.
        for parent in reversed(Path(d).parents[:-1]):
            if str(parent) not in made and not str(parent).startswith(("/usr", "/opt", "/sys")):
                made.add(str(parent))
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", d, d]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(run.limits.tmp), "--tmpfs", TMP_DIR]
    # The output folder is a tmpfs of the output limit's size: the kernel bounds what the code writes; the host's
    # folder is never in the sandbox, only a descriptor of the launcher, which copies the tmpfs there at the end.
    argv += ["--perms", "1777", "--size", str(run.limits.output), "--tmpfs", OUT_DIR]
    if run.gpus:
        for node in run.gpu_devices:
            argv += ["--dev-bind", node, node]
    argv += [
        "--ro-bind",
        str(run.code_file.resolve()),
        f"{CODE_DIR}/{run.code_file.name}",
        "--ro-bind",
        str(run.data_dir.resolve()),
        DATA_DIR,
        "--ro-bind",
        str(run.probe.resolve()),
        PROBE_FILE,
        "--bind",
        str(run.report),
        REPORT_FILE,
        "--chdir",
        CODE_DIR,
        "--clearenv",
    ]
    env = {k: v for k, v in run.passed.items() if k in PASSED_ENV}
    env.update(run.env)
    env.update(FIXED_ENV)
    env.update(DATA_PATH=DATA_DIR, LOG_DIR=OUT_DIR, PATH="/usr/local/bin:/usr/bin:/bin")
    if not run.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    for key in sorted(env):
        argv += ["--setenv", key, env[key]]
    argv += launch_command(run.limits, run.gpus, NOBODY if run.root else None, run.python, PROBE_FILE, run.result_fd)
    argv += trainer_command(run.nproc, f"{CODE_DIR}/{run.code_file.name}", PROBE_FILE, REPORT_FILE, run.python)
    return argv


def reference_argv(run: BwrapRun) -> list[str]:
    """The same sandbox, running ``probe.py reference`` instead of the trainer: what an untouched process reads (no
    output folder to copy back)."""
    argv = bwrap_argv(run)
    launch = argv.index("launch", argv.index(PROBE_FILE))
    cut = argv.index("--", launch)
    if "--result-fd" in argv[launch:cut]:
        at = argv.index("--result-fd", launch)
        del argv[at : at + 4]  # --result-fd FD --out DIR
        cut -= 4
    return [*argv[: cut + 1], run.python, PROBE_FILE, "reference"]


def gpu_devices() -> tuple[str, ...]:
    """The NVIDIA device nodes of this machine (bound into the sandbox of a CUDA log)."""
    dev = Path("/dev")
    nodes = sorted(str(p) for p in dev.glob("nvidia*") if not p.is_dir())
    caps = dev / "nvidia-caps"
    if caps.is_dir():
        nodes += sorted(str(p) for p in caps.iterdir())
    return tuple(nodes)


def bwrap_problem(root: bool) -> str | None:
    """None when bubblewrap can make the sandbox here; otherwise why not, in a few words."""
    if shutil.which("bwrap") is None:
        return "the bwrap command is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    argv = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--ro-bind", "/", "/", "--proc", "/proc"]
    if not root:
        argv += ["--unshare-user", "--disable-userns"]
    argv += ["--dev", "/dev", "true"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap could not be run ({e})"
    if out.returncode != 0:
        reason = (out.stderr.strip().splitlines() or ["no message"])[-1]
        how = "mount and PID namespaces (CAP_SYS_ADMIN)" if root else "unprivileged user namespaces"
        return f"bwrap cannot make a sandbox here ({reason[:200]}): it needs {how}"
    return None


# --- Docker -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerRun:
    image: str
    code_file: Path  # the extracted train_gpt.py on the host
    data_dir: Path  # the shards on the host
    out_dir: Path  # the only writable folder: the trainer's LOG_DIR
    nproc: int
    gpus: bool  # the log ran on CUDA
    probe: Path  # tools/reproduce/probe.py
    report: Path  # the FIFO the probe writes to
    limits: Limits
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
    for host in (run.code_file, run.data_dir, run.out_dir, run.probe, run.report):
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
        f"{TMP_DIR}:rw,exec,nosuid,nodev,size={run.limits.tmp}",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--pids-limit",
        str(run.limits.processes),
        "--memory",
        str(run.limits.memory),
        "--ulimit",
        f"fsize={run.limits.file_size}",
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
        "--mount",
        f"type=bind,source={run.probe.resolve()},target={PROBE_FILE},readonly",
        "--mount",
        f"type=bind,source={run.report},target={REPORT_FILE}",
    ]
    if run.gpus:
        argv += ["--gpus", "all"]
    env = dict(run.env)
    env.update(FIXED_ENV)
    env.update(DATA_PATH=DATA_DIR, LOG_DIR=OUT_DIR)
    if not run.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    for key in sorted(env):
        argv += ["--env", f"{key}={env[key]}"]
    argv += [run.image, *trainer_command(run.nproc, paths["code"], PROBE_FILE, REPORT_FILE)]
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
