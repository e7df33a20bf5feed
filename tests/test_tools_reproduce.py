"""``python -m tools reproduce``: a log's own code, seed and data run again, and the claims judged against it.

End to end on CPU: one real smoke run is the claimed log; its reproduction must match exactly, and edited copies
of it (scaled times, an edited val loss, a swapped code section, a wrong seed) must each get the right verdict.
Runs are shared between tests (``--reuse`` judges a copy against a reproduction already made), so the file costs
four smoke runs. No test pins a loss value: runs are only compared with each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import IN_CI, REPO_ROOT
from helpers.logfactory import LogSpec, make_log, shard, write_log
from tools.cli import main
from tools.judge import reproduced
from tools.judge.parse import SEPARATOR, parse_bytes, parse_log
from tools.reproduce import runner as reproduce
from tools.reproduce import sandbox

STEPS, EVERY = 20, 10
OVERRIDES = {"num_iterations": STEPS, "val_loss_every": EVERY}
SEED = 1234


@dataclass(frozen=True)
class Claimed:
    log: Path  # the claimed log, alone in its folder
    data: Path  # the synthetic shards it read
    tmp: Path


def train(data: Path, log_dir: Path, seed: int, nproc: int = 1) -> Path:
    """One smoke run of the repository's trainer, as a submitter would make it."""
    env = dict(
        os.environ,
        SEED=str(seed),
        SPEEDRUN_PRESET="smoke",
        SPEEDRUN_OVERRIDES=json.dumps(OVERRIDES),
        DATA_PATH=str(data),
        LOG_DIR=str(log_dir),
        CUDA_VISIBLE_DEVICES="",
    )
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "train_gpt.py"]
    out = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    logs = list(log_dir.glob("*.txt"))
    assert len(logs) == 1
    return logs[0]


@pytest.fixture(scope="module", autouse=True)
def one_thread_per_process() -> Any:
    """Claimed and reproduced runs alike use one thread per process (--sandbox none passes the environment on):
    two processes of two threads each on the 2 shared cores of CI slow to a crawl, which would test the machine."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    if before is None:
        del os.environ["OMP_NUM_THREADS"]
    else:
        os.environ["OMP_NUM_THREADS"] = before


@pytest.fixture(scope="module")
def claimed(tmp_path_factory: pytest.TempPathFactory) -> Claimed:
    tmp = tmp_path_factory.mktemp("reproduce")
    data = tmp / "synthetic"
    made = subprocess.run(
        [sys.executable, "data/synthetic.py", "--out", str(data), "--train-shards", "1"]
        + ["--shard-tokens", "65536", "--val-tokens", "16384"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return Claimed(train(data, tmp / "claimed", SEED), data, tmp)


def reproduce_cli(
    target: Path, claimed: Claimed, out: Path, *extra: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[dict[str, Any]], str]:
    code = main(
        ["reproduce", str(target), "--sandbox", "none", "--data", str(claimed.data), "--out", str(out), "--json"]
        + list(extra)
    )
    captured = capsys.readouterr()
    verdicts = [json.loads(line) for line in captured.out.splitlines() if line.strip()]
    return code, verdicts, captured.err


@pytest.fixture(scope="module")
def out_dir(claimed: Claimed) -> Path:
    return claimed.tmp / "reproductions"


def edited_copy(claimed: Claimed, folder: str, edit: Any) -> Path:
    """A copy of the claimed log, passed through ``edit(text) -> text``, alone in a new folder."""
    dest = claimed.tmp / folder
    dest.mkdir()
    copy = dest / claimed.log.name
    copy.write_text(edit(claimed.log.read_text(encoding="utf-8")), encoding="utf-8")
    return copy


def set_config(text: str, **changes: Any) -> str:
    """The log with its config line changed, written as the trainer writes it (json.dumps)."""
    line = next(ln for ln in text.splitlines() if ln.startswith("config: "))
    config = json.loads(line[len("config: ") :])
    config.update(changes)
    return text.replace(line, "config: " + json.dumps(config), 1)


def rescale(text: str, factor: float) -> str:
    def one(m: re.Match[str]) -> str:
        step, ms = int(m.group(1)), float(m.group(4)) * factor
        return f"step:{step}/{m.group(2)}{m.group(3)} train_time:{ms:.0f}ms step_avg:{ms / max(step, 1):.2f}ms"

    return re.sub(r"^step:(\d+)/(\d+)( \S+)? train_time:(\d+)ms step_avg:\S+ms$", one, text, flags=re.M)


def val_losses(path: Path) -> dict[int, float]:
    return {p.step: p.val_loss for p in parse_log(path).val_curve}


# --- end to end on CPU ----------------------------------------------------------------------------


def default_sandbox() -> str:
    """bubblewrap where it works (CI installs it: there it must); else, locally, none for this trusted code."""
    problem = sandbox.bwrap_problem(os.geteuid() == 0)
    if problem is not None and IN_CI:
        pytest.fail(f"bubblewrap cannot make a sandbox in CI ({problem}); .ci/run installs it")
    return "bwrap" if problem is None else "none"


@pytest.fixture(scope="module")
def exact(claimed: Claimed, out_dir: Path) -> tuple[int, list[dict[str, Any]], str]:
    """The claimed log reproduced once, in bubblewrap (pytest's capture is set up per test, so no capsys)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(
            ["reproduce", str(claimed.log), "--sandbox", default_sandbox(), "--data", str(claimed.data)]
            + ["--out", str(out_dir), "--json"]
        )
    return code, [json.loads(line) for line in out.getvalue().splitlines() if line.strip()], err.getvalue()


@pytest.mark.slow
def test_a_smoke_log_reproduces_exactly(claimed: Claimed, out_dir: Path, exact: tuple[int, list[Any], str]) -> None:
    code, verdicts, err = exact
    assert code == 0, err[-3000:]
    [v] = verdicts
    assert (v["verdict"], v["reproduced"], v["findings"]) == ("reproduced", True, [])
    assert v["loss"] == {"points": 3, "max_abs_difference": 0.0, "exact": True, "differing": 0}
    assert v["time"]["judged"] and v["time"]["tolerance"] == reproduce.CPU_TIME_TOLERANCE
    assert v["sandbox"] == default_sandbox() and ("runs unsandboxed" in err) == (v["sandbox"] == "none")
    assert "step:20/20 val_loss:" in err  # the trainer's progress is shown while it runs
    # what the run really did, seen by the probe: the claimed shards read, nothing against the rules; the static
    # reading of the trainer finds nothing either
    probe = v["probe"]
    assert probe["clean"] and probe["findings"] == [] and probe["incomplete"] == [] and v["static"] == []
    claimed_data = parse_log(claimed.log).data
    assert claimed_data is not None
    assert {n: (f["split"], f["sha256"]) for n, f in probe["facts"]["data_files"].items()} == {
        s["name"]: (s["split"], s["sha256"]) for s in claimed_data["shards"]
    }
    assert probe["facts"]["ranks"] == ["0"] and probe["facts"]["modules_outside"] == []

    new = Path(v["reproduction"])
    assert new.is_relative_to(out_dir / claimed.log.stem) and new.is_file()
    assert v["reproduction_sha256"] == hashlib.sha256(new.read_bytes()).hexdigest()
    # the extracted code is the claimed source section, byte for byte, and the new run logged it back identically
    claimed_log, new_log = parse_log(claimed.log), parse_log(new)
    code_file = out_dir / claimed.log.stem / "train_gpt.py"
    assert hashlib.sha256(code_file.read_bytes()).hexdigest() == claimed_log.source_sha256 == new_log.source_sha256
    assert val_losses(new) == val_losses(claimed.log)
    assert new_log.config is not None and claimed_log.config is not None
    assert new_log.config["seed"] == SEED and new_log.config["run_id"] != claimed_log.config["run_id"]
    assert (new.parent / "console.log").is_file()


@pytest.mark.slow
def test_a_maintainer_records_the_verdicts_in_the_record_folder(
    claimed: Claimed, out_dir: Path, exact: tuple[int, list[Any], str], capsys: pytest.CaptureFixture[str]
) -> None:
    record = claimed.tmp / "records" / "smoke" / "2026-01-01_Claimed"
    record.mkdir(parents=True)
    (record / "README.md").write_text("---\ntitle: x\n---\n")
    shutil.copy(claimed.log, record / claimed.log.name)
    args = ["reproduce", str(record), "--sandbox", "none", "--data", str(claimed.data), "--out", str(out_dir)]
    assert main([*args, "--reuse", "--write-verdict"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0].startswith(f"{record / claimed.log.name}: reproduced: 3 val losses equal")
    assert "1 of 1 run(s) of 2026-01-01_Claimed reproduced" in captured.out
    assert "runs unsandboxed" not in captured.err  # nothing ran: the reproduction was reused
    rep = reproduced.read_reproduced(record)
    assert rep is not None and rep.all_reproduced and rep.machine["sandbox"] == default_sandbox()  # where it ran
    assert rep.runs[0].probe is not None and rep.runs[0].probe.clean and rep.runs[0].static == ()
    [run] = rep.runs
    assert run.log_sha256 == hashlib.sha256(claimed.log.read_bytes()).hexdigest()
    assert run.reproduction_sha256 == exact[1][0]["reproduction_sha256"]


@pytest.mark.slow
def test_scaled_train_time_is_slower_than_claimed(
    claimed: Claimed, out_dir: Path, exact: tuple[int, list[Any], str], capsys: pytest.CaptureFixture[str]
) -> None:
    # every train_time and step_avg x 0.2, consistently: the copy still agrees with itself
    copy = edited_copy(claimed, "scaled", lambda text: rescale(text, 0.2))
    assert parse_log(copy).train_time_ms == pytest.approx(0.2 * parse_log(claimed.log).train_time_ms, abs=1)
    runs_before = sorted(out_dir.glob("*/*/*.txt"))
    code, [v], _ = reproduce_cli(copy, claimed, out_dir, "--reuse", capsys=capsys)
    assert code == 1
    assert v["reused"] and sorted(out_dir.glob("*/*/*.txt")) == runs_before  # judged against the same reproduction
    assert v["verdict"].startswith("slower than claimed by ")
    [finding] = v["findings"]
    assert finding["kind"] == "slower than claimed" and finding["percent"] > 100 * reproduce.CPU_TIME_TOLERANCE
    assert f"tolerance {100 * reproduce.CPU_TIME_TOLERANCE:.1f} % on CPU" in finding["message"]


@pytest.mark.slow
def test_an_edited_val_loss_is_caught_at_its_step(
    claimed: Claimed, out_dir: Path, exact: tuple[int, list[Any], str], capsys: pytest.CaptureFixture[str]
) -> None:
    true = val_losses(claimed.log)[EVERY]
    edited = true - 0.0123

    def edit(text: str) -> str:
        line = f"step:{EVERY}/{STEPS} val_loss:{true:.4f} "
        assert line in text
        return text.replace(line, f"step:{EVERY}/{STEPS} val_loss:{edited:.4f} ")

    copy = edited_copy(claimed, "edited_loss", edit)
    code, [v], _ = reproduce_cli(copy, claimed, out_dir, "--reuse", capsys=capsys)
    assert code == 1 and v["reused"]
    assert v["verdict"] == f"loss differs at step {EVERY}"
    [finding] = v["findings"]
    assert finding["claimed"] == pytest.approx(edited) and finding["measured"] == pytest.approx(true)
    assert finding["difference"] == pytest.approx(0.0123, abs=1e-6)
    assert f"claimed {edited:.4f}, measured {true:.4f}" in finding["message"]


@pytest.mark.slow
def test_a_wrong_seed_is_caught_also_with_another_process_count(
    claimed: Claimed, out_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = edited_copy(claimed, "wrong_seed", lambda text: set_config(text, seed=SEED + 1))
    code, [v], _ = reproduce_cli(copy, claimed, out_dir, "--nproc", "2", capsys=capsys)
    assert code == 1
    # The trainer zero-initialises the output head, so the step-0 loss is ln(vocab) whatever the seed: the seed
    # shows from the first val step after training starts.
    assert v["verdict"] == f"loss differs at step {EVERY}", v
    assert val_losses(Path(v["reproduction"]))[0] == val_losses(claimed.log)[0]
    assert [f["kind"] for f in v["findings"]] == ["loss differs"]  # world_size and grad_accum_steps are not flagged
    assert v["nproc"] == 2 and "ran with 2 processes, the claimed run with 1 (same global batch)" in v["notes"]
    assert not v["time"]["judged"]
    new = parse_log(Path(v["reproduction"]))
    assert new.config is not None and (new.config["seed"], new.config["world_size"]) == (SEED + 1, 2)


@pytest.fixture(scope="module")
def swapped_code(claimed: Claimed, out_dir: Path) -> tuple[Path, str]:
    """The claimed log with muon_lr changed in its code section and in its config line (a consistent swap)."""
    text = claimed.log.read_text(encoding="utf-8")
    code, rest = text.split(SEPARATOR + "\n", 1)
    config = parse_bytes(text.encode()).config
    assert config is not None
    pattern = r"(\n    muon_lr: float = )([0-9.]+)"
    assert re.search(pattern, code), "train_gpt.py's Hyperparameters no longer has a 'muon_lr: float = ' line"
    lr = config["muon_lr"] / 2
    swapped = re.sub(pattern, lambda m: m.group(1) + repr(lr), code, count=1) + SEPARATOR + "\n" + rest
    return edited_copy(claimed, "swapped_code", lambda _: set_config(swapped, muon_lr=lr)), text


@pytest.mark.slow
def test_a_swapped_code_section_is_caught(
    claimed: Claimed, out_dir: Path, swapped_code: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    copy, _ = swapped_code
    code, [v], _ = reproduce_cli(copy, claimed, out_dir, capsys=capsys)
    assert code == 1
    # step 0 is before any update, so the learning rate shows only from the first val step after it
    assert v["verdict"] == f"loss differs at step {EVERY}", v
    assert [f["kind"] for f in v["findings"]] == ["loss differs"]
    assert val_losses(Path(v["reproduction"]))[0] == val_losses(claimed.log)[0]


@pytest.mark.slow
def test_a_code_section_swapped_without_its_config_line_is_a_config_difference(
    claimed: Claimed, out_dir: Path, swapped_code: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    copy, original = swapped_code
    # the swapped code under the original config line: run with the code, the trainer logs another muon_lr
    only_code = edited_copy(
        claimed,
        "swapped_code_only",
        lambda _: (
            copy.read_text(encoding="utf-8").split(SEPARATOR + "\n", 1)[0]
            + SEPARATOR
            + "\n"
            + original.split(SEPARATOR + "\n", 1)[1]
        ),
    )
    code, [v], _ = reproduce_cli(only_code, claimed, out_dir, "--reuse", capsys=capsys)
    assert code == 1 and v["reused"]  # the same code and seed as the swap above: its reproduction is judged
    assert v["verdict"] == "config differs (muon_lr)", v


# --- bad input: one paragraph, exit 2, nothing run --------------------------------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["reproduce", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def test_a_log_with_its_source_omitted_cannot_be_reproduced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = make_log(LogSpec(track="smoke", smi=False))
    omitted = f"# training source omitted from this copy: sha256={'a' * 64} lines=1200\n"
    log = tmp_path / "community.txt"
    log.write_text(omitted + SEPARATOR + "\n" + text.split(SEPARATOR + "\n", 1)[1])
    code, err = run_cli([str(log), "--sandbox", "none"], capsys)
    assert code == 2
    assert f"{log}: its training source was omitted" in err and "cannot be run again" in err


def test_a_log_without_a_config_line_cannot_be_reproduced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = write_log(tmp_path, LogSpec(track="smoke", smi=False, include_config=False))
    code, err = run_cli([str(log), "--sandbox", "none"], capsys)
    assert code == 2
    assert "no 'config:' line, so the run's seed and settings are unknown" in err and str(log) in err


def test_not_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("just some notes\n")
    code, err = run_cli([str(notes), "--sandbox", "none"], capsys)
    assert code == 2 and f"{notes}: not a training log" in err
    code, err = run_cli([str(tmp_path / "missing")], capsys)
    assert code == 2 and "no such file or folder" in err
    (tmp_path / "empty").mkdir()
    code, err = run_cli([str(tmp_path / "empty")], capsys)
    assert code == 2 and "no logs (*.txt) directly in this folder" in err


def test_missing_fineweb_shards_name_the_file_and_the_download(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path / "record", LogSpec())  # an 8x H100 log of FineWeb shards
    data = tmp_path / "fineweb10B"
    data.mkdir()
    code, err = run_cli([str(log), "--sandbox", "none", "--data", str(data)], capsys)
    assert code == 2
    assert f"lacks {data / 'fineweb_val_000000.bin'}" in err and "python data/cached_fineweb10B.py 9" in err
    code, err = run_cli([str(log), "--sandbox", "none", "--data", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and f"the data folder {tmp_path / 'nowhere'} does not exist" in err


def test_a_shard_with_other_content_or_an_extra_shard_is_refused_before_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shards = [shard("synthetic_val_000000.bin", "val", 8), shard("synthetic_train_000001.bin", "train", 8)]
    for s in shards:
        (data / s["name"]).write_bytes(s["name"].encode())  # logfactory's sha256 is of the name
    spec = LogSpec(track="smoke", smi=False, shards=shards)
    log = write_log(tmp_path / "logs", spec)
    (data / "synthetic_train_000001.bin").write_bytes(b"other tokens")
    code, err = run_cli([str(log), "--sandbox", "none", "--data", str(data)], capsys)
    assert code == 2
    assert f"{data / 'synthetic_train_000001.bin'} has sha256" in err and "not the same data" in err
    assert "python data/synthetic.py --out" in err

    (data / "synthetic_train_000001.bin").write_bytes(b"synthetic_train_000001.bin")
    (data / "synthetic_train_000000.bin").write_bytes(b"an earlier shard")
    code, err = run_cli([str(log), "--sandbox", "none", "--data", str(data)], capsys)
    assert code == 2 and "sorts before the train shards the run read" in err


@pytest.mark.parametrize(
    "config, why",
    [
        ({"seed": "1"}, "seed '1' is not a whole number"),
        ({"seed": True}, "seed True is not a whole number"),
        ({"seed": -1}, "seed -1 is not a whole number"),
        ({"preset": "../../x"}, "preset '../../x' is not a preset name"),
        ({"world_size": 0}, "world_size 0 is not a number of processes"),
        ({"device": "mps"}, "device 'mps' is neither"),
        ({"overrides": [1]}, "overrides '[1]' is not an object"),
        ({"overrides": {"x": "y" * 20_000}}, "overrides take more than 16,384 characters"),
    ],
)
def test_a_config_line_that_cannot_be_run_again(
    config: dict[str, Any], why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = write_log(tmp_path, LogSpec(track="smoke", smi=False, config=config))
    code, err = run_cli([str(log), "--sandbox", "none"], capsys)
    assert code == 2 and f"{log}: the config line cannot be run again: {why}" in err


def test_a_data_line_out_of_the_trainers_order_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = ["synthetic_val_000000.bin", "synthetic_train_000002.bin", "synthetic_train_000001.bin"]
    shards = [shard(n, "val" if "_val_" in n else "train", 8) for n in names]
    data = tmp_path / "data"
    data.mkdir()
    for n in names:
        (data / n).write_bytes(n.encode())
    log = write_log(tmp_path / "logs", LogSpec(track="smoke", smi=False, shards=shards))
    code, err = run_cli([str(log), "--sandbox", "none", "--data", str(data)], capsys)
    assert code == 2 and "lists its train shards twice or out of name order" in err
    code, err = run_cli([str(log), "--sandbox", "none", "--out", str(log)], capsys)
    assert code == 2 and f"{log}: not a folder" in err


def test_json_output_stays_valid_json_for_a_nan_loss() -> None:
    text = make_log(LogSpec(seed=3, total_steps=100, val_every=25))
    nan = re.sub(r"^(step:50/100 val_loss:)\S+", r"\1nan", text, count=1, flags=re.M)
    findings, notes, loss, time = reproduce.compare_logs(parse_bytes(nan.encode()), parse_bytes(text.encode()))
    v = reproduce.Reproduction(claimed="a.txt", claimed_sha256="0" * 64, findings=findings, loss=loss, time=time)
    assert v.verdict == "loss differs at step 50"
    assert json.loads(json.dumps(v.to_json(), allow_nan=False))["findings"][0]["claimed"] == "nan"


def test_no_sandbox_no_run_unless_none_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a sandbox the code never runs by default: before the fix, no Docker engine meant an unsandboxed run
    with a warning."""
    log = write_log(tmp_path, LogSpec(track="smoke", smi=False))
    monkeypatch.setattr(sandbox, "docker_engine", lambda: "the docker command is not installed")
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda root: "the bwrap command is not installed")
    ran: list[Any] = []
    monkeypatch.setattr(reproduce, "run_trainer", lambda *a, **k: ran.append(a))
    code, err = run_cli([str(log)], capsys)
    assert code == 2 and ran == []
    assert "no sandbox can run the logs' code here: bwrap: the bwrap command is not installed" in err
    assert "docker: the docker command is not installed" in err and "--sandbox none" in err
    code, err = run_cli([str(log), "--sandbox", "bwrap"], capsys)
    assert (
        code == 2
        and "--sandbox bwrap: the bwrap command is not installed" in err
        and "apt-get install bubblewrap" in err
    )
    code, err = run_cli([str(log), "--sandbox", "docker"], capsys)
    assert code == 2 and "--sandbox docker: the docker command is not installed" in err and "--sandbox none" in err
    monkeypatch.setattr(reproduce, "_has_torch", lambda: False)
    code, err = run_cli([str(log), "--sandbox", "none"], capsys)
    assert code == 2 and "which has no torch" in err and "pip install -r requirements.txt" in err


def test_usage_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "records" / "track_1_short" / "2026-01-01_X"
    log = write_log(records, LogSpec(track="smoke", smi=False))
    code, err = run_cli([str(log), "--write-verdict", "--sandbox", "none"], capsys)
    assert code == 2 and "give the record folder" in err
    code, err = run_cli([str(records), "--out", str(tmp_path / "records" / "x"), "--sandbox", "none"], capsys)
    assert code == 2 and "must stay outside records/" in err
    code, err = run_cli([str(records), "--runs", "0", "--sandbox", "none"], capsys)
    assert code == 2 and "--runs 0" in err


# --- the parts, as pure functions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        "print('a file ending with a newline')\n",
        "print('no newline at the end')",
        "print('two newlines at the end')\n\n",
        "x = 1\r\nprint(x)\r\n",
        "# ünïcödé\nprint('é')\n",
    ],
)
def test_the_extracted_source_is_what_the_trainer_logs_for_itself(code: str, tmp_path: Path) -> None:
    def trainer_log(source: str) -> bytes:  # what train_gpt.py writes: its code, less one final newline, then ...
        return (source.removesuffix("\n") + "\n" + SEPARATOR + "\nRunning Python 3.12\n" + SEPARATOR + "\n").encode()

    raw = trainer_log(code)
    extracted = reproduce.extract_source(raw)
    assert extracted is not None
    assert hashlib.sha256(extracted).hexdigest() == parse_bytes(raw).source_sha256
    assert extracted == code.encode() if code.endswith("\n") else extracted == code.encode() + b"\n"
    # run again, the trainer reads the extracted file (text mode) and logs it: the same section, unless the
    # claimed section had line ends Python's text mode rewrites (then reproduce reports "code differs")
    (tmp_path / "train_gpt.py").write_bytes(extracted)
    reread = (tmp_path / "train_gpt.py").open(encoding="utf-8").read()
    assert (trainer_log(reread) == raw) == ("\r" not in code)


def test_extract_source_needs_a_separator_line() -> None:
    assert reproduce.extract_source(b"print(1)\n") is None
    assert reproduce.extract_source(b"x = '" + SEPARATOR.encode() + b"'\n") is None  # not a line of its own
    assert reproduce.extract_source(b"a\n" + SEPARATOR.encode() + b"\nb\n") == b"a\n"


LIMITS = sandbox.Limits(
    seconds=600,
    memory=64 * sandbox.GIB,
    processes=2048,
    output=sandbox.GIB,
    file_size=sandbox.GIB,
    tmp=16 * sandbox.GIB,
)


def docker_run(**kw: Any) -> sandbox.DockerRun:
    fields: dict[str, Any] = dict(
        image="speedrun",
        code_file=Path("/work/reproductions/r/run/train_gpt.py"),
        data_dir=Path("/srv/data/fineweb10B"),
        out_dir=Path("/work/reproductions/r/run/20260101T000000Z"),
        nproc=8,
        gpus=True,
        probe=Path("/work/tools/reproduce/probe.py"),
        report=Path("/work/reproductions/r/run/.20260101T000000Z.probe/probe.fifo"),
        limits=LIMITS,
        env={"SEED": "7", "SPEEDRUN_PRESET": "short", "DATA_PATH": "/data", "LOG_DIR": "/out"},
        uid=1000,
        gid=1000,
        name="speedrun-reproduce-test",
    )
    fields.update(kw)
    return sandbox.DockerRun(**fields)


def test_docker_argv_isolates_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("HF_TOKEN", "do-not-leak")
    argv = sandbox.docker_argv(docker_run())
    assert argv[:3] == ["docker", "run", "--rm"]
    joined = " ".join(argv)
    assert "do-not-leak" not in joined and "TOKEN" not in joined and "SECRET" not in joined
    assert ["--network", "none"] == argv[argv.index("--network") : argv.index("--network") + 2]
    for flag in ("--read-only", "--ipc=host"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--security-opt") + 1] == "no-new-privileges"
    assert argv[argv.index("--user") + 1] == "1000:1000"
    assert argv[argv.index("--tmpfs") + 1].startswith("/tmp:rw,exec,nosuid,nodev,size=")
    assert argv[argv.index("--gpus") + 1] == "all"
    assert argv[argv.index("--pids-limit") + 1] == "2048" and argv[argv.index("--memory") + 1] == str(64 * sandbox.GIB)
    assert argv[argv.index("--ulimit") + 1] == f"fsize={sandbox.GIB}"
    # mounts: the code and the data read-only, only the output folder writable; nothing else (no home folder)
    mounts = [argv[i + 1] for i, a in enumerate(argv) if a == "--mount"]
    assert "-v" not in argv and "--volume" not in argv and "--volumes-from" not in argv
    assert mounts == [
        "type=bind,source=/work/reproductions/r/run/train_gpt.py,target=/reproduce/train_gpt.py,readonly",
        "type=bind,source=/srv/data/fineweb10B,target=/data,readonly",
        "type=bind,source=/work/reproductions/r/run/20260101T000000Z,target=/out",
        "type=bind,source=/work/tools/reproduce/probe.py,target=/probe/probe.py,readonly",
        "type=bind,source=/work/reproductions/r/run/.20260101T000000Z.probe/probe.fifo,target=/probe/report",
    ]
    # the environment: the trainer's settings and fixed values, nothing of the caller's
    env = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--env")
    assert env == {
        "SEED": "7",
        "SPEEDRUN_PRESET": "short",
        "DATA_PATH": "/data",
        "LOG_DIR": "/out",
        **sandbox.FIXED_ENV,
    }
    assert "--env-file" not in argv and "--privileged" not in argv and "--network=host" not in argv
    image = argv.index("speedrun")
    assert argv[image + 1 :] == [
        "python",
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=8",
        "/probe/probe.py",  # every rank through the run-time probe
        "run",
        "--report",
        "/probe/report",
        "/reproduce/train_gpt.py",
    ]
    assert all(a.startswith("-") or argv[i - 1].startswith("-") for i, a in enumerate(argv[2:image], start=2))


def test_docker_argv_cpu_runs_get_no_gpus_and_root_is_refused() -> None:
    assert "--gpus" not in sandbox.docker_argv(docker_run(gpus=False))
    with pytest.raises(ValueError, match="must not run as root"):
        sandbox.docker_argv(docker_run(uid=0))
    with pytest.raises(ValueError, match="comma"):
        sandbox.docker_argv(docker_run(data_dir=Path("/srv/a,b")))


def bwrap_run(**kw: Any) -> sandbox.BwrapRun:
    fields: dict[str, Any] = dict(
        code_file=Path("/work/reproductions/r/run/train_gpt.py"),
        data_dir=Path("/srv/data/fineweb10B"),
        out_dir=Path("/work/reproductions/r/run/20260101T000000Z"),
        probe=Path("/work/tools/reproduce/probe.py"),
        report=Path("/work/reproductions/r/run/.20260101T000000Z.probe/probe.fifo"),
        nproc=8,
        gpus=True,
        limits=LIMITS,
        env={"SEED": "7", "SPEEDRUN_PRESET": "short", "DATA_PATH": "/data", "LOG_DIR": "/out"},
        python="/opt/py/bin/python",
        python_dirs=("/opt/py", "/home/u/.local/lib/python3.11/site-packages"),
        gpu_devices=("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"),
        passed={"OMP_NUM_THREADS": "1"},
    )
    fields.update(kw)
    return sandbox.BwrapRun(**fields)


def _pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_bwrap_argv_isolates_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    argv = sandbox.bwrap_argv(bwrap_run())
    joined = " ".join(argv)
    assert argv[0] == "bwrap" and "do-not-leak" not in joined and "AWS" not in joined
    for flag in (
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
    ):
        assert flag in argv
    # an unprivileged caller: a user namespace, the code as uid 65534, no capabilities, no nested namespaces
    assert ["--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"] == argv[
        argv.index("--unshare-user") : argv.index("--unshare-user") + 8
    ]
    # writable on the host: the probe's channel, nothing else (the output folder is a sized tmpfs, copied out at the
    # end through a descriptor); the rest read-only; no home folder
    assert _pairs(argv, "--bind") == [("/work/reproductions/r/run/.20260101T000000Z.probe/probe.fifo", "/probe/report")]
    assert "/work/reproductions/r/run/20260101T000000Z" not in joined
    assert argv[argv.index("/out") - 5 : argv.index("/out") + 1] == [
        "--perms",
        "1777",
        "--size",
        str(LIMITS.output),
        "--tmpfs",
        "/out",
    ]
    ro = dict(_pairs(argv, "--ro-bind"))
    assert ro["/usr"] == "/usr" and ro["/work/reproductions/r/run/train_gpt.py"] == "/reproduce/train_gpt.py"
    assert ro["/srv/data/fineweb10B"] == "/data" and ro["/work/tools/reproduce/probe.py"] == "/probe/probe.py"
    assert ro["/opt/py"] == "/opt/py" and "/home/u" not in ro and "/root" not in ro and "/" not in ro
    assert {src for src, _ in _pairs(argv, "--ro-bind-try")} <= {*sandbox.ETC_FILES, "/opt", "/sys"}
    assert argv[argv.index("/tmp") - 3 : argv.index("/tmp") + 1] == ["--size", str(LIMITS.tmp), "--tmpfs", "/tmp"]
    assert [a for a, _ in _pairs(argv, "--dev-bind")] == ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    # an empty environment, then the trainer's settings and fixed values; the thread count the caller set
    assert argv.index("--clearenv") < argv.index("--setenv")
    env = dict(_pairs(argv, "--setenv"))
    assert env == {
        "SEED": "7",
        "SPEEDRUN_PRESET": "short",
        "DATA_PATH": "/data",
        "LOG_DIR": "/out",
        "OMP_NUM_THREADS": "1",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        **sandbox.FIXED_ENV,
    }
    # the limits, set by probe.py launch inside the sandbox; then torchrun, every rank through the probe
    tail = argv[argv.index("/opt/py/bin/python") :]
    assert tail[: tail.index("--") + 1] == [
        "/opt/py/bin/python",
        "-I",
        "-S",
        "/probe/probe.py",
        "launch",
        "--nproc",
        "2048",
        "--fsize",
        str(sandbox.GIB),
        "--result-fd",
        "3",
        "--out",
        "/out",
        "--",
    ]  # no address-space limit on CUDA
    assert tail[tail.index("--") + 1 :] == sandbox.trainer_command(
        8, "/reproduce/train_gpt.py", "/probe/probe.py", "/probe/report", "/opt/py/bin/python"
    )


def test_bwrap_argv_cpu_runs_and_root_callers() -> None:
    argv = sandbox.bwrap_argv(bwrap_run(gpus=False, root=True, passed={}))
    assert "--dev-bind" not in argv and dict(_pairs(argv, "--setenv"))["CUDA_VISIBLE_DEVICES"] == ""
    # root: no user namespace (it would map the code to root outside); the launcher drops to 65534 itself
    assert "--unshare-user" not in argv and "OMP_NUM_THREADS" not in argv
    launch = argv[argv.index("launch") : argv.index("--", argv.index("launch"))]
    assert launch[launch.index("--uid") + 1] == launch[launch.index("--gid") + 1] == "65534"
    assert launch[launch.index("--as") + 1] == str(max(LIMITS.memory, 8 * sandbox.GIB))  # CPU: address space too
    ref = sandbox.reference_argv(bwrap_run(gpus=False, root=True))
    assert ref[-3:] == ["/opt/py/bin/python", "/probe/probe.py", "reference"] and "--nproc_per_node=8" not in ref
    assert "--result-fd" not in ref and ref[ref.index("launch") :].count("--") == 1


@pytest.mark.parametrize(
    "given, field, value",
    [
        ("time=2h", "seconds", 7200.0),
        ("memory=1.5G", "memory", int(1.5 * sandbox.GIB)),
        ("processes=64", "processes", 64),
        ("output=100M", "output", 100 * 2**20),
        ("file=512K", "file_size", 512 * 1024),
    ],
)
def test_limits_from_the_command_line(given: str, field: str, value: float) -> None:
    assert getattr(sandbox.with_overrides(LIMITS, [given]), field) == value


@pytest.mark.parametrize("given", ["time", "speed=2", "memory=lots", "processes=3", "time=-1"])
def test_a_limit_that_is_not_one(given: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError):
        sandbox.with_overrides(LIMITS, [given])


def test_local_env_keeps_out_the_callers_run_settings(tmp_path: Path) -> None:
    log = write_log(tmp_path, LogSpec(track="smoke", smi=False, seed=5, config={"overrides": {"num_iterations": 3}}))
    claim = reproduce.load_claim(log)
    base = {"PATH": "/usr/bin", "SPEEDRUN_RESUME": "/ckpt", "SEED": "1", "RANK": "3", "MASTER_PORT": "1", "HOME": "/h"}
    base.update(TORCHINDUCTOR_MAX_AUTOTUNE="1", TORCH_COMPILE_DEBUG="1", TORCHINDUCTOR_CACHE_DIR="/c")
    env = reproduce.local_env(base, claim, tmp_path / "data", tmp_path / "out")
    # the caller's compile settings are not the record's: only the cache folder (where, not how) is kept
    assert "TORCHINDUCTOR_MAX_AUTOTUNE" not in env and "TORCH_COMPILE_DEBUG" not in env
    assert env["TORCHINDUCTOR_CACHE_DIR"] == "/c"
    assert env["SEED"] == "5" and env["SPEEDRUN_PRESET"] == "smoke"
    assert json.loads(env["SPEEDRUN_OVERRIDES"]) == {"num_iterations": 3}
    assert env["SPEEDRUN_CHECKPOINT_EVERY"] == "-1" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert "SPEEDRUN_RESUME" not in env and "RANK" not in env and "MASTER_PORT" not in env
    assert env["DATA_PATH"] == str((tmp_path / "data").resolve()) and env["PATH"] == "/usr/bin"


# --- the GPU judgement, on hand-made 8x H100 logs ------------------------------------------------------


def shift_loss(log_text: str, step: int, delta: float) -> str:
    def one(m: re.Match[str]) -> str:
        return f"step:{step}/{m.group(1)} val_loss:{float(m.group(2)) + delta:.4f} "

    return re.sub(rf"^step:{step}/(\d+) val_loss:(\S+) ", one, log_text, count=1, flags=re.M)


def judge_gpu(claimed_text: str, new_text: str) -> tuple[list[reproduce.Finding], list[str], dict[str, Any]]:
    findings, notes, _loss, time = reproduce.compare_logs(
        parse_bytes(claimed_text.encode()), parse_bytes(new_text.encode())
    )
    return findings, notes, time


def test_gpu_loss_is_judged_within_the_derived_tolerance_per_phase() -> None:
    text = make_log(LogSpec(seed=3, total_steps=100, val_every=25))
    assert judge_gpu(text, text)[0] == []
    tol_final = reproduce.GPU_LOSS_TOLERANCE["final"]
    inside = shift_loss(text, 100, tol_final - 0.0001)
    assert judge_gpu(text, inside)[0] == []
    outside = shift_loss(text, 100, tol_final + 0.0002)
    [f] = judge_gpu(text, outside)[0]
    assert f.kind == "loss differs" and f.details["step"] == 100 and f.details["tolerance"] == tol_final
    # step 0 depends only on the seed and the code: a different initial loss is a different run
    [f] = judge_gpu(text, shift_loss(text, 0, 0.0003))[0]
    assert f.details["step"] == 0 and "tolerance 0.0001" in f.message
    assert judge_gpu(text, shift_loss(text, 0, 0.0001))[0] == []
    # mid-run the spread of honest runs is wider (step 50 of 100 is in the 50-60% phase)
    assert judge_gpu(text, shift_loss(text, 50, reproduce.GPU_LOSS_TOLERANCE["50-60%"] - 0.0001))[0] == []


def test_gpu_time_is_judged_within_the_hardware_tolerance() -> None:
    text = make_log(LogSpec(seed=3, total_steps=100, val_every=25, step_ms=60.0))
    findings, _, time = judge_gpu(text, rescale(text, 1.09))
    assert findings == [] and time["judged"] and time["ratio"] == pytest.approx(1.09, abs=0.002)
    [f] = judge_gpu(text, rescale(text, 1.12))[0]
    assert f.kind == "slower than claimed" and f.details["percent"] == pytest.approx(12, abs=0.3)
    assert "tolerance 9.5 % on GPU" in f.message
    [f] = judge_gpu(text, rescale(text, 0.85))[0]
    assert f.kind == "faster than claimed" and f.details["percent"] == pytest.approx(15, abs=0.3)
    # on other GPUs the time is information, not a verdict
    other = make_log(LogSpec(seed=3, total_steps=100, val_every=25, step_ms=60.0, gpu="NVIDIA H200"))
    findings, notes, time = judge_gpu(text, rescale(other, 0.7))
    assert findings == [] and not time["judged"]
    assert "time not judged: the reproduction ran on other GPUs than the claimed run" in notes


def test_the_gpus_a_cuda_reproduction_used_are_judged_from_outside() -> None:
    uuids = [f"GPU-{i:08x}-0000-0000-0000-000000000000" for i in range(8)]
    assert reproduce.gpu_findings(8, uuids, uuids) == []
    assert reproduce.gpu_findings(8, uuids, list(reversed(uuids))) == []  # the order is the ranks'
    # one GPU's UUID written eight times by the code, while nvidia-smi saw the processes on one GPU
    [seen, logged] = reproduce.gpu_findings(8, uuids[:1], uuids[:1] * 8)
    assert seen.kind == logged.kind == "rule broken at run time"
    assert "saw the run's processes on 1 GPU(s), the run has 8" in seen.message
    assert "names 8 GPU(s) (1 distinct)" in logged.message
    [lie] = reproduce.gpu_findings(2, uuids[:2], uuids[2:4])  # a host line of other GPUs
    assert "wrote a host line of its own" in lie.message


def test_verdict_text_names_the_first_difference() -> None:
    v = reproduce.Reproduction(claimed="a.txt", claimed_sha256="0" * 64)
    v.findings = [
        reproduce.Finding("slower than claimed", "slower than claimed by 12.0 % (...)", {"percent": 12.0}),
        reproduce.Finding("loss differs", "loss differs at step 250: ...", {"step": 250}),
    ]
    assert v.verdict == "loss differs at step 250" and not v.ok
    assert v.text().splitlines()[:3] == [
        "a.txt: loss differs at step 250",
        "    loss differs at step 250: ...",
        "    also: slower than claimed by 12.0 % (...)",
    ]
    v.findings = v.findings[:1]
    assert v.verdict == "slower than claimed by 12.0 %"


# --- reproduced.json --------------------------------------------------------------------------------


def reproduced_record(tmp_path: Path) -> tuple[Path, list[reproduce.Claim], list[reproduce.Reproduction]]:
    record = tmp_path / "2026-01-01_Rec"
    logs = [write_log(record, LogSpec(track="smoke", smi=False, seed=s)) for s in (1, 2)]
    claims = [reproduce.load_claim(p) for p in sorted(logs)]
    verdicts = []
    for c in claims:
        v = reproduce.Reproduction(claimed=str(c.path), claimed_sha256=c.log.file_sha256, nproc=1)
        v.reproduction_sha256 = hashlib.sha256(c.path.name.encode()).hexdigest()
        v.gpu_names = ["NVIDIA H100 80GB HBM3"] * 8
        verdicts.append(v)
    return record, claims, verdicts


def test_reproduced_json_round_trip_and_staleness(tmp_path: Path) -> None:
    record, claims, verdicts = reproduced_record(tmp_path)
    assert reproduced.read_reproduced(record) is None
    path = reproduce.write_reproduced(record, claims, verdicts, "docker")
    rep = reproduced.read_reproduced(record)
    assert rep is not None and rep.path == path and rep.all_reproduced
    assert [r.log for r in rep.runs] == [c.path.name for c in claims]
    assert rep.machine["gpus"] == ["NVIDIA H100 80GB HBM3"] * 8 and rep.machine["sandbox"] == "docker"
    data = json.loads(path.read_text())
    assert "hostname" not in json.dumps(data) and set(data) == {"format", "date", "tools_commit", "machine", "runs"}

    claims[0].path.write_text(claims[0].path.read_text() + "\n")  # a log edited after its reproduction
    (record / "extra.txt").write_text(make_log(LogSpec(track="smoke", smi=False, seed=9)))
    rep = reproduced.read_reproduced(record)
    assert rep is not None and not rep.all_reproduced
    assert rep.stale == [f"{claims[0].path.name}: changed since it was reproduced (sha256 differs)"]
    assert rep.missing == ["extra.txt"]


def test_a_failed_reproduction_is_recorded_as_not_reproduced(tmp_path: Path) -> None:
    record, claims, verdicts = reproduced_record(tmp_path)
    verdicts[1].findings = [reproduce.Finding("loss differs", "...", {"step": 25})]
    reproduce.write_reproduced(record, claims, verdicts, "none")
    rep = reproduced.read_reproduced(record)
    assert rep is not None and not rep.all_reproduced
    assert [(r.verdict, r.reproduced) for r in rep.runs] == [("reproduced", True), ("loss differs at step 25", False)]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d.update(extra=1),
        lambda d: d["runs"][0].update(reproduced=False),  # inconsistent with its verdict
        lambda d: d["runs"][0].update(verdict="reproduced!"),
        lambda d: d["runs"][0].update(log="../../etc/passwd"),
        lambda d: d["runs"][1].update(log=d["runs"][0]["log"]),
        lambda d: d["machine"].update(hostname="node-17"),
        lambda d: d.update(date="2026-02-30"),
        lambda d: d.update(format="speedrun-reproduced/9"),
        lambda d: d.update(runs=[]),
        lambda d: d["runs"][0].update(probe={"clean": False, "findings": ["compile-flags: max_autotune"]}),
        lambda d: d["runs"][0].update(probe={"clean": True}),
        lambda d: d["runs"][0].update(static="none"),
        lambda d: d["machine"].update(sandbox="chroot"),
    ],
)
def test_read_reproduced_rejects_a_hand_made_file(tmp_path: Path, tamper: Any) -> None:
    record, claims, verdicts = reproduced_record(tmp_path)
    path = reproduce.write_reproduced(record, claims, verdicts, "docker")
    data = json.loads(path.read_text())
    tamper(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="--write-verdict"):
        reproduced.read_reproduced(record)


def test_a_reproduced_json_written_before_the_probe_is_still_read(tmp_path: Path) -> None:
    record, claims, verdicts = reproduced_record(tmp_path)
    path = reproduce.write_reproduced(record, claims, verdicts, "bwrap")
    data = json.loads(path.read_text())
    assert data["format"] == "speedrun-reproduced/2" and data["runs"][0]["probe"] == {"clean": True, "findings": []}
    data["format"] = "speedrun-reproduced/1"
    for r in data["runs"]:
        del r["probe"], r["static"]
    path.write_text(json.dumps(data))
    rep = reproduced.read_reproduced(record)
    assert rep is not None and rep.all_reproduced and rep.runs[0].probe is None


def test_read_reproduced_bounds_what_it_reads(tmp_path: Path) -> None:
    record, _, _ = reproduced_record(tmp_path)
    path = record / "reproduced.json"
    path.write_text(" " * (reproduced.MAX_REPRODUCED_BYTES + 1))
    with pytest.raises(ValueError, match="larger than"):
        reproduced.read_reproduced(record)
    path.write_text('{"format": NaN}')
    with pytest.raises(ValueError, match="not valid JSON"):
        reproduced.read_reproduced(record)
    path.unlink()
    path.symlink_to("/etc/passwd")
    with pytest.raises(ValueError, match="not a regular file"):
        reproduced.read_reproduced(record)


# --- the tolerances are the ones the public records give ------------------------------------------------------


@pytest.mark.slow  # parses the public tree's ~800 logs
def test_gpu_tolerances_are_derived_from_the_public_records(public_records: Path) -> None:
    from tools.reproduce.tolerances import derive

    d = derive(public_records)
    assert d.groups > 50
    assert d.loss_tolerance == reproduce.GPU_LOSS_TOLERANCE
    assert d.time_tolerance == reproduce.GPU_TIME_TOLERANCE


# --- the Docker sandbox, for real where an engine runs ---------------------------------------------------


@pytest.mark.slow
def test_the_docker_sandbox_runs_a_reproduction(claimed: Claimed, tmp_path: Path) -> None:
    problem = sandbox.docker_engine()
    if problem is not None:
        # Not skip_or_fail: CI and the development VM have the docker client but no engine.
        pytest.skip(f"no Docker engine ({problem}); CI and the development machine have none")
    if not sandbox.image_present("speedrun"):
        build = subprocess.run(
            ["docker", "build", "-t", "speedrun", "."], cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert build.returncode == 0, build.stderr[-3000:]
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tools", "reproduce", str(claimed.log), "--sandbox", "docker", "--json"]
        + ["--data", str(claimed.data), "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    [v] = [json.loads(line) for line in result.stdout.splitlines()]
    assert v["sandbox"] == "docker" and v["reproduction"], result.stderr[-3000:]
    kinds = {f["kind"] for f in v["findings"]}
    assert not kinds & {"run failed", "code differs", "config differs", "data differs"}, v
    if parse_log(Path(v["reproduction"])).torch_version == parse_log(claimed.log).torch_version:
        assert "loss differs" not in kinds, v

    # the sandbox itself: a "trainer" that tries to reach out, write outside its folder and read secrets
    probe = tmp_path / "probe" / "probe.txt"
    probe_code = (
        "import json, os, socket\n"
        "r = {}\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=3); r['net'] = 'open'\n"
        "except OSError as e:\n    r['net'] = 'closed'\n"
        "for p in ('/data/x', '/reproduce/x', '/x'):\n"
        "    try:\n        open(p, 'w').write('x'); r[p] = 'written'\n"
        "    except OSError:\n        r[p] = 'refused'\n"
        "r['uid'] = os.getuid(); r['env'] = sorted(os.environ)\n"
        "open(os.environ['LOG_DIR'] + '/probe.json', 'w').write(json.dumps(r))\n"
    )
    data = parse_log(claimed.log).data
    assert data is not None
    probe.parent.mkdir()
    probe.write_text(make_log(LogSpec(track="smoke", smi=False, source=probe_code, shards=data["shards"])))
    subprocess.run(
        [sys.executable, "-m", "tools", "reproduce", str(probe), "--sandbox", "docker", "--json"]
        + ["--data", str(claimed.data), "--out", str(tmp_path / "probe_out")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    [found] = list((tmp_path / "probe_out").glob("*/*/probe.json"))
    r = json.loads(found.read_text())
    assert r["net"] == "closed" and r["uid"] != 0
    assert (r["/data/x"], r["/reproduce/x"], r["/x"]) == ("refused", "refused", "refused")
    assert not {k for k in r["env"] if "TOKEN" in k or "SECRET" in k or k.startswith("AWS")}
