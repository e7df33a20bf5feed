"""Hostile records reproduced for real, in bubblewrap: what the sandbox holds, and what the run-time probe sees.

Each log's code attacks: the network, files outside the output folder, the caller's secrets and environment, a fork
bomb, a disk fill, memory, time; and the routes that turned ``max_autotune`` on where the static reading could not see
it (issue 20). They run only in bubblewrap, never unsandboxed: without a usable bubblewrap the tests skip (and fail in
CI, which installs it). The costs are kept down: one attacking record does every file and probe attack at once, the
limit records do nothing else, the trainer with hidden settings trains 4 steps, and the probe's reference (an
untouched process's settings) is read once per session.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO_ROOT, skip_or_fail
from helpers import hostile
from tools.judge.parse import parse_log
from tools.reproduce import sandbox, watch

pytestmark = pytest.mark.slow
SECRET = "s3cr3t-token-of-the-maintainer"


@dataclass(frozen=True)
class Place:
    tmp: Path
    data: Path
    shards: list[dict[str, Any]]


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Place:
    problem = sandbox.bwrap_problem(os.geteuid() == 0)
    if problem is not None:
        skip_or_fail(f"bubblewrap cannot make a sandbox here ({problem}); hostile code runs only in one")
    tmp = tmp_path_factory.mktemp("hostile")
    tmp.chmod(0o755)
    data, shards = hostile.make_data(tmp / "data")
    return Place(tmp, data, shards)


# --- one record that attacks everything at once -------------------------------------------------------------


@dataclass(frozen=True)
class Attacked:
    code: int
    verdict: dict[str, Any]
    result: dict[str, Any]
    marker: Path
    torch_config: Path
    torch_config_before: str


@pytest.fixture(scope="module")
def attacked(place: Place) -> Attacked:
    import torch._inductor.config as torch_config

    config_file = Path(torch_config.__file__)
    before = hashlib.sha256(config_file.read_bytes()).hexdigest()
    home = place.tmp / "home"
    home.mkdir()
    (home / ".netrc").write_text(f"machine example.com password {SECRET}\n")
    marker = place.tmp / "written-by-the-record"
    code = hostile.ATTACK.replace("HOST_MARKER", str(marker)).replace("SECRET_FILE", str(home / ".netrc"))
    log = hostile.hostile_log(place.tmp / "attack", code, place.shards)
    saved = dict(os.environ)
    os.environ.update(HOME=str(home), MAINTAINER_TOKEN=SECRET)
    try:
        exit_code, verdict, err = hostile.reproduce(log, place.data, place.tmp / "attack-out")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    result = hostile.found(place.tmp / "attack-out", "result.json")
    return Attacked(exit_code, verdict, result, marker, config_file, before)


def test_the_code_runs_as_nobody_without_network_secrets_or_home(attacked: Attacked) -> None:
    r = attacked.result
    assert r["uid"] == [sandbox.NOBODY, sandbox.NOBODY, sandbox.NOBODY]
    assert r["network"].startswith("refused")
    assert SECRET not in json.dumps(r["environ"]) and "MAINTAINER_TOKEN" not in r["environ"]
    assert set(r["environ"]) - {
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "PWD",
        "LC_CTYPE",
    } <= {
        *sandbox.FIXED_ENV,
        "SEED",
        "SPEEDRUN_PRESET",
        "SPEEDRUN_OVERRIDES",
        "SPEEDRUN_CHECKPOINT_EVERY",
        "DATA_PATH",
        "LOG_DIR",
        "PATH",
        "CUDA_VISIBLE_DEVICES",
        "OMP_NUM_THREADS",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING",
        "GROUP_RANK",
        "GROUP_WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "ROLE_NAME",
        "ROLE_RANK",
        "ROLE_WORLD_SIZE",
    } | {k for k in r["environ"] if k.startswith("TORCHELASTIC_")}  # torchrun's own
    for what in ("read the caller's secret file", "read ~/.netrc", "read /etc/shadow"):
        assert r[what].startswith("refused"), what
    assert "home" not in r["root"] and "work" not in r["root"] and "var" not in r["root"]


def test_nothing_is_written_outside_the_output_folder(attacked: Attacked) -> None:
    r = attacked.result
    for target in ("/x", "/reproduce/x", "/reproduce/wave.py", "/data/x", "/probe/probe.py", "/etc/x", "/usr/x"):
        assert r[f"write {target}"].startswith("refused"), target
    assert r[f"write {attacked.marker}"].startswith("refused") and not attacked.marker.exists()
    assert r["write torch's config.py"].startswith("refused")
    assert hashlib.sha256(attacked.torch_config.read_bytes()).hexdigest() == attacked.torch_config_before
    status, shell_ran = r["git"]
    assert shell_ran and status != 0  # the alias's shell ran, in the sandbox, and its append to torch failed


def test_the_probe_sees_every_route_and_the_attacks_on_itself(attacked: Attacked) -> None:
    v = attacked.verdict
    assert attacked.code == 1 and v["verdict"].startswith("rule broken at run time"), v["verdict"]
    probe = v["probe"]
    said = "\n".join(f["message"] for f in probe["findings"])
    options = {f["option"] for f in probe["findings"]}
    assert "split_reductions" in options  # the line hidden by the UTF-7 cookie
    assert "max_fusion_size" in options and "the module /tmp/wave.py" in said  # a standard-library name in /tmp
    assert "benchmark_kernel" in options and "/tmp/sitehack/speedrun_hack.py" in said  # .pth and site.addsitedir
    assert re.search(r"started git with \[\"-c\", \"alias\.x=!sh", said)  # a git alias runs a shell
    assert "torch/_inductor/config.py was opened for writing" in said  # appending to torch's config
    # on only while inductor compiled: seen when it loaded the code it generated, not at the call nor the end
    [epilogue] = [f for f in probe["findings"] if f["option"] == "epilogue_fusion"]
    assert "inductor loading the code it generated" in epilogue["message"]
    assert "comprehensive_padding" not in options  # inductor's own patch on CPU is not the record's
    # the forged record on the probe's channel: the opening is seen, the bytes are not the probe's
    assert "opened the probe's channel" in said
    assert any("not the probe's records" in x or "no valid MAC" in x for x in probe["incomplete"])
    assert attacked.result["compiled"] and probe["facts"]["generated_code_loads"] >= 1


# --- a trainer that hides its settings from the reader, and trains --------------------------------------


HIDDEN_OPTIONS = {
    "max_autotune": "a format-string field path to a function's __globals__",
    "max_autotune_gemm": "getattr and setattr with names built at run time",
    "aggressive_fusion": "functools.reduce over getattr",
    "coordinate_descent_tuning": "typing.get_type_hints evaluating an annotation string",
    "benchmark_fusion": "torch.fx's _forward_from_src",
    "max_autotune_pointwise": "TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE, its name built at run time",
    "search_autotune_cache": "on only while torch.compile is called",
}
PRELUDE = """
# --- hidden: compile options turned on at run time by routes a reader of the code does not follow -------------
import functools as _ft
import string as _string
import typing as _typing

os.environ["TORCHINDUCTOR_" "MAX_AUTOTUNE_POINTWISE"] = "1"  # read by inductor's config when it is imported


def _torch_by_format(fn):
    return _string.Formatter().get_field("0.__globals__[torch]", (fn,), {})[0]


_torch_by_format(setup_distributed)._inductor.config.max_autotune = True
setattr(getattr(getattr(torch, "_ind" "uctor"), "con" "fig"), "max_autotune_" "gemm", True)
_ft.reduce(getattr, ["_inductor", "config"], torch).aggressive_fusion = True


def _hint(x: "__import__('torch')._inductor.config.__setattr__('coordinate_descent_tuning', True)"):
    return x


_typing.get_type_hints(_hint)
torch.fx.graph_module._forward_from_src(
    "import torch\\ntorch._inductor.config.benchmark_fusion = True\\ndef forward(self):\\n    return None\\n", {}
)
with torch._inductor.config.patch(search_autotune_cache=True):
    torch.compile(lambda x: x)

"""


@pytest.fixture(scope="module")
def hidden(place: Place) -> tuple[int, dict[str, Any], Path]:
    """train_gpt.py with the hiding routes, run once as a submitter would (this changes only its own process's
    settings, so it runs unsandboxed here), then reproduced in bubblewrap."""
    source = (REPO_ROOT / "train_gpt.py").read_text(encoding="utf-8")
    anchor = '\nif __name__ == "__main__":\n'
    assert source.count(anchor) == 1, "train_gpt.py no longer ends with its __main__ block"
    trainer = place.tmp / "hidden" / "train_gpt.py"
    trainer.parent.mkdir()
    trainer.write_text(source.replace(anchor, PRELUDE + anchor), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHINDUCTOR_") or k == "TORCHINDUCTOR_CACHE_DIR"}
    env.update(
        SEED="7",
        SPEEDRUN_PRESET="smoke",
        DATA_PATH=str(place.data),
        LOG_DIR=str(trainer.parent / "logs"),
        SPEEDRUN_OVERRIDES=json.dumps({"num_iterations": 4, "val_loss_every": 2}),
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
    )
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(trainer)],
        env=env,
        cwd=trainer.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    [log] = list((trainer.parent / "logs").glob("*.txt"))
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the thread count the claimed run had (passed into the sandbox)
    try:
        code, verdict, _ = hostile.reproduce(log, place.data, place.tmp / "hidden-out")
    finally:
        os.environ.pop("OMP_NUM_THREADS") if saved is None else os.environ.update(OMP_NUM_THREADS=saved)
    return code, verdict, log


def test_each_hiding_route_is_caught_though_the_run_reproduces(hidden: tuple[int, dict[str, Any], Path]) -> None:
    """Before the probe this reproduced: the same code re-run is just as fast and computes the same losses."""
    code, v, log = hidden
    assert v["loss"]["differing"] == 0 and v["loss"]["exact"] and v["loss"]["points"] == 3  # the losses reproduce
    assert parse_log(Path(v["reproduction"])).source_sha256 == parse_log(log).source_sha256
    assert code == 1 and v["verdict"].startswith("rule broken at run time ("), v["verdict"]
    caught = {f["option"] for f in v["probe"]["findings"] if f["rule"] == "compile-flags"}
    assert {o: HIDDEN_OPTIONS[o] for o in HIDDEN_OPTIONS if o not in caught} == {}
    assert "TORCHINDUCTOR_MAX_AUTOTUNE_POINTWISE" in caught  # the variable itself, set by the record's code
    assert v["probe"]["incomplete"] == []
    # the page shows both readings: the static one (which the hiding routes get past in part) and the probe's
    assert isinstance(v["static"], list)


# --- limits ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel_limits(place: Place) -> tuple[int, dict[str, Any], dict[str, Any], Path, set[int]]:
    before = hostile.processes_of(sandbox.NOBODY)
    log = hostile.hostile_log(place.tmp / "limits", hostile.KERNEL_LIMITS, place.shards)
    out = place.tmp / "limits-out"
    limits = ["--limit", "processes=64", "--limit", "output=16M", "--limit", "file=4M"]
    code, v, _ = hostile.reproduce(log, place.data, out, *limits)
    return code, v, hostile.found(out, "result.json"), out, before


def test_a_fork_bomb_stops_at_the_process_limit(
    kernel_limits: tuple[int, dict[str, Any], dict[str, Any], Path, set[int]],
) -> None:
    code, v, result, _, before = kernel_limits
    forked, why = result["forks"]
    assert why == errno.EAGAIN and forked < 64  # the kernel refused the fork (RLIMIT_NPROC inside the sandbox)
    assert v["watch"]["peak_processes"] <= 64 + watch.SANDBOX_PROCESSES  # bubblewrap's own two included
    assert code == 1 and v["verdict"] == "run failed"  # it wrote no log
    assert hostile.processes_of(sandbox.NOBODY) - before == set()  # nothing of the sandbox outlives it


def test_a_disk_fill_stops_at_the_output_limit(
    kernel_limits: tuple[int, dict[str, Any], dict[str, Any], Path, set[int]],
) -> None:
    _, _, result, out, _ = kernel_limits
    assert result["big"] == errno.EFBIG  # no file over the file-size limit (RLIMIT_FSIZE)
    written, why = result["fill"]
    assert why == errno.ENOSPC and written <= 16  # the output folder is a 16 MiB tmpfs: full, not the disk
    [run_folder] = [p for p in out.glob("*/*") if p.is_dir() and not p.name.startswith(".")]
    on_disk = sum(p.stat().st_blocks * 512 for p in run_folder.iterdir())
    assert on_disk <= 17 * 2**20  # what was copied out: at most the tmpfs, of 256 MiB tried


def test_a_run_past_its_time_is_stopped(place: Place) -> None:
    log = hostile.hostile_log(place.tmp / "sleep", hostile.SLEEPER, place.shards)
    code, v, _ = hostile.reproduce(log, place.data, place.tmp / "sleep-out", "--limit", "time=3s")
    assert code == 1 and v["verdict"] == "stopped at a limit (time)", v["verdict"]


def test_a_run_past_its_memory_is_stopped(place: Place) -> None:
    log = hostile.hostile_log(place.tmp / "hog", hostile.MEMORY_HOG, place.shards)
    code, v, _ = hostile.reproduce(log, place.data, place.tmp / "hog-out", "--limit", "memory=1G")
    assert code == 1 and v["verdict"] == "stopped at a limit (memory)", v["verdict"]
    assert v["watch"]["peak_memory_bytes"] < 3 * 2**30  # it tried 3 GiB
