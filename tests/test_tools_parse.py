"""The log parser: every public log against a reading by hand, every older form, this repo's own form."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT
from helpers.logfactory import HOST_ID, SEP, LogSpec, config_for, fake_gpu_uuids, make_log, nvidia_smi
from tools.cli import main
from tools.judge import parse as parse_module
from tools.judge import sourcecheck
from tools.judge.parse import CodeFile, ParsedLog, parse_bytes, parse_log

PUBLIC = REPO_ROOT / "tests" / "fixtures" / "public-speedrun" / "records"
KERNEL_LOG = PUBLIC / "track_1_short/2026-02-02_KernelTuning/25afb73a-332f-4d69-b9ab-f6261497f2d8.txt"
LOG_2024 = PUBLIC / "track_1_short/2024-11-19_FlexAttention/8384493d-dba9-4991-b16b-8696953f5e6d.txt"
LOG_2025 = PUBLIC / "track_1_short/2025-05-24_FasterReduce/23f40b75-06fb-4c3f-87a8-743524769a35.txt"
DASHES = "-" * 40


def _facts_by_hand(raw: bytes) -> tuple[object, ...]:
    """What a log says, read with plain string operations: the slow, obvious reference the parser is checked
    against on every public log (the code section's sha256, the last val line, the count of val lines and of
    nvidia-smi's GPU rows)."""
    text = raw.decode("utf-8")
    sep = "=" * 100
    cuts = [i for i, line in enumerate(text.split("\n")) if line.rstrip("\r") == sep]
    lines = text.split("\n")
    code_lines = lines[cuts[0] + 1 : cuts[1]] if cuts[0] == 0 else lines[: cuts[0]]
    code = "\n".join(code_lines) + "\n"
    val = [ln for ln in lines if ln.startswith("step:") and " val_loss:" in ln]
    last = val[-1].split()
    step, total = (int(x) for x in last[0][len("step:") :].split("/"))
    loss = float(last[1][len("val_loss:") :])
    time_field = last[2][len("train_time:") :]
    time_ms = float(time_field[:-2]) if time_field.endswith("ms") else float(time_field[:-1]) * 1000
    env = "\n".join(lines[cuts[0] + 1 : cuts[-1]]) if cuts[0] != 0 else "\n".join(lines[cuts[0] + 1 :])
    processes = env.find("Processes:")
    gpu_rows = {
        ln.split()[1]
        for ln in (env[:processes] if processes >= 0 else env).split("\n")
        if re.match(r"^\|\s+\d+\s+NVIDIA", ln)
    }
    return code, step, total, loss, time_ms, len(val), len(gpu_rows)


def test_every_public_log_agrees_with_a_reading_by_hand(public_records: Path) -> None:
    """Every timed log of the public tree (its three forms: 2024's leading separator, 2025's, 2026's appended
    files): the parser's facts equal a plain string reading's, and no log has a structure issue."""
    paths = sorted(p for t in ("track_1_short", "track_2_medium") for p in (public_records / t).rglob("*.txt"))
    assert len(paths) > 800
    mismatches = []
    for path in paths:
        raw = path.read_bytes()
        log = parse_log(path)
        code = "".join(f.text for f in log.code_files[:1])
        got = (code, log.final_step, log.total_steps, log.final_val_loss, log.train_time_ms)
        got += (len(log.val_curve), log.num_gpus)
        want = _facts_by_hand(raw)
        if log.metrics_form != "speedrun" or got[1:] != want[1:] or log.structure_issues or log.malformed_count:
            mismatches.append((path, got[1:], want[1:], log.structure_issues))
        elif len(log.code_files) == 1 and got[0].rstrip("\n") != str(want[0]).rstrip("\n"):
            mismatches.append((path, "the code differs from the section read by hand"))  # one file: the section
    assert not mismatches, mismatches[:5]


def test_2024_log_with_empty_source_and_code_in_the_next_section() -> None:
    log = parse_log(LOG_2024)
    assert log.source_sha256 == hashlib.sha256(b"").hexdigest()
    assert "import torch" in log.extra_code  # the code sits between the first two separators
    assert log.code_sha256 != log.source_sha256
    assert log.torch_version == "2.6.0.dev20241119+cu124"
    assert log.metrics_form == "speedrun"


def test_run_date_from_the_nvidia_smi_timestamp() -> None:
    """nvidia-smi's first line dates the run: every public log since October 2024 has one."""
    assert parse_log(LOG_2024).run_date == "2024-11-20"
    assert parse_bytes(make_log(LogSpec(smi_time="Mon Jan  5 01:02:03 2026")).encode()).run_date == "2026-01-05"
    for odd in ("Mon Feb 30 01:02:03 2026", "Mon Foo 10 01:02:03 2026"):  # no such date: no date
        assert parse_bytes(make_log(LogSpec(smi_time=odd)).encode()).run_date is None
    assert parse_bytes(make_log(LogSpec(smi=False)).encode()).run_date is None


def _log(
    metrics: str, source: str = "print('hi')\n", env: str = "Running PyTorch 2.5.0 compiled for CUDA 12.4"
) -> bytes:
    return (source + SEP + "\n" + env + "\n" + nvidia_smi(8) + "\n" + SEP + "\n" + metrics).encode()


def test_seconds_instead_of_milliseconds() -> None:
    log = parse_bytes(
        _log(
            "step:0/2 val_loss:10.5 train_time:0.000s step_avg:nans\n"
            "step:2/2 val_loss:3.2500 train_time:12.345s step_avg:6.17s\n"
        )
    )
    assert log.train_time_ms == pytest.approx(12345.0)
    assert log.metrics.step_avg_ms[-1] == pytest.approx(6170.0)
    assert log.val_curve[-1].val_loss == 3.25


def test_file_that_starts_with_the_separator_has_an_empty_source() -> None:
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms step_avg:5.00ms\n", source=""))
    assert log.source_sha256 == hashlib.sha256(b"").hexdigest() and log.source_lines == 0
    assert log.final_step == 1


def test_llmc_main_log_lines() -> None:
    log = parse_bytes(b"s:0 tel:10.9800\ns:0 trl:10.9900\ns:1 trl:9.5000\ns:250 tel:4.1234\ns:250 eval:0.2512\n")
    assert log.metrics_form == "llm.c"
    assert [(p.step, p.val_loss, p.train_time_ms) for p in log.val_curve] == [(0, 10.98, None), (250, 4.1234, None)]
    assert log.metrics.loss.tolist()[1:3] == [10.99, 9.5]
    assert "no separator" in " ".join(log.structure_issues)  # parsed, though it is not a record log


# The first lines of records/track_1_short/2024-10-13_llmc/main.log of the public speedrun, verbatim: llm.c's
# train lines carry the learning rate and the gradient norm after the loss.
LLMC_MAIN_LOG = """s:0 tel:11.0092
s:0 trl:11.0091 lr:0.000001 norm:15.37
s:1 trl:10.9598 lr:0.000002 norm:15.24
s:2 trl:10.4142 lr:0.000003 norm:13.12
s:250 tel:6.1302
s:250 trl:6.1556 lr:0.000251 norm:0.93
"""


def test_llmc_train_lines_with_learning_rate_and_norm(tmp_path: Path) -> None:
    path = tmp_path / "main.log"  # llm.c's name: parse_log reads any file it is given
    path.write_text(LLMC_MAIN_LOG)
    log = parse_log(path)
    assert log.metrics_form == "llm.c" and len(log.metrics) == 6 and log.malformed_count == 0
    m = log.metrics
    assert m.step.tolist() == [0, 0, 1, 2, 250, 250] and m.is_val.tolist() == [True, False, False, False, True, False]
    assert m.loss.tolist() == [11.0092, 11.0091, 10.9598, 10.4142, 6.1302, 6.1556]
    assert m.lr.tolist()[1:4] == [0.000001, 0.000002, 0.000003] and m.grad_norm.tolist()[5] == 0.93
    assert math.isnan(m.lr[0]) and math.isnan(m.grad_norm[4])  # tel lines carry neither
    assert [(p.step, p.val_loss) for p in log.val_curve] == [(0, 11.0092), (250, 6.1302)]
    assert m.describe(1) == "step:0 train_loss:11.0091 lr:0.000001 norm:15.37"
    # the older form, loss only (records/track_1_short/2024-06-06_AdamW/*.log), and the speedrun form's columns
    old = parse_bytes(b"s:0 tel:10.968871\ns:0 trl:10.965596\n").metrics
    assert old.loss.tolist() == [10.968871, 10.965596] and np.isnan(old.lr).all() and np.isnan(old.grad_norm).all()
    speedrun = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms\n")).metrics
    assert len(speedrun.lr) == len(speedrun.grad_norm) == 1 and np.isnan(speedrun.lr).all()
    # a field that is not a number: the line is not read
    assert len(parse_bytes(b"s:1 trl:3.1 lr:fast norm:1.0\ns:2 tel:3.0\n").metrics) == 1


def test_omitted_source_line_gives_the_source_hash() -> None:
    hexdigest = "ab" * 32
    raw = f"# training source omitted from this copy: sha256={hexdigest} lines=612\n".encode() + _log(
        "step:1/1 val_loss:3.2 train_time:5ms step_avg:5.00ms\n", source=""
    )
    log = parse_bytes(raw)
    assert (log.source_sha256, log.source_lines, log.source_omitted) == (hexdigest, 612, True)


def test_crlf_line_endings() -> None:
    raw = _log(
        "step:0/1 val_loss:10.0 train_time:0ms step_avg:0.00ms\nstep:1/1 val_loss:3.1 train_time:9ms step_avg:9.00ms\n"
    )
    log = parse_bytes(raw.replace(b"\n", b"\r\n"))
    assert log.final_val_loss == 3.1 and log.num_gpus == 8 and not log.structure_issues


def test_harness_log_config_data_and_source_hash() -> None:
    spec = LogSpec(seed=7)
    text = make_log(spec)
    log = parse_bytes(text.encode(), "x.txt")
    assert log.config == config_for(spec)
    assert log.data is not None and log.data["shards"][0]["name"] == "fineweb_val_000000.bin"
    source = text.split(SEP)[0]
    assert log.source_sha256 == hashlib.sha256(source.encode()).hexdigest()  # == sha256sum train_gpt.py
    assert log.num_gpus == 8 and log.gpu_name == "NVIDIA H100 80GB HBM3"
    assert log.final_step == log.total_steps == 100
    assert log.uses_harness_format


def test_host_line_gives_the_host_id_and_gpu_uuids() -> None:
    log = parse_bytes(make_log(LogSpec()).encode())
    assert (log.host_id, log.gpu_uuids, log.host_error) == (HOST_ID, fake_gpu_uuids(8), None)
    two_nodes = fake_gpu_uuids(8) + fake_gpu_uuids(8, node=1)
    log = parse_bytes(make_log(LogSpec(num_gpus=16, gpu_uuids=two_nodes, host_id="0" * 16)).encode())
    assert (log.host_id, log.gpu_uuids) == ("0" * 16, two_nodes)
    cpu = parse_bytes(make_log(LogSpec(smi=False)).encode())
    assert (cpu.host_id, cpu.gpu_uuids) == (HOST_ID, [])
    old = parse_bytes(make_log(LogSpec(include_host=False)).encode())  # logs from before the line: nothing, no error
    assert (old.host_id, old.gpu_uuids, old.host_error) == (None, [], None)


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("host: {not json", "not valid JSON"),
        ('host: ["a"]', "JSON but not an object"),
        ('host: {"host_id": "HOST", "gpu_uuids": []}', "is not 16 lowercase hex digits"),
        ('host: {"gpu_uuids": []}', "host_id 'None' is not 16"),
        ('host: {"host_id": "0123456789abcdef", "gpu_uuids": "GPU-1"}', "gpu_uuids is not a list"),
        (
            'host: {"host_id": "0123456789abcdef", "gpu_uuids": ["GPU-5d0c4c7e-8b1a-4f5e-9c3d-2a1b0c9d8e7f", 7]}',
            "holds '7', not a GPU UUID",
        ),
        ('host: {"host_id": "0123456789abcdef", "gpu_uuids": ["GPU-1"]}', "holds 'GPU-1', not a GPU UUID"),
        ('host: {"host_id": "0123456789abcdef", "gpu_uuids": ["../etc"]}', "holds '../etc', not a GPU UUID"),
    ],
)
def test_a_broken_host_line_is_an_error_not_a_value(line: str, error: str) -> None:
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms\n", env=line))
    assert (log.host_id, log.gpu_uuids) == (None, []) and error in (log.host_error or ""), log.host_error


def test_only_the_first_host_line_counts() -> None:
    first = 'host: {"host_id": "0123456789abcdef", "gpu_uuids": ["GPU-5d0c4c7e-8b1a-4f5e-9c3d-2a1b0c9d8e7f"]}'
    second = 'host: {"host_id": "fedcba9876543210", "gpu_uuids": []}'
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms\n", env=first + "\n" + second))
    assert (log.host_id, log.gpu_uuids) == ("0123456789abcdef", ["GPU-5d0c4c7e-8b1a-4f5e-9c3d-2a1b0c9d8e7f"])
    assert log.host_error == "more than one 'host:' line; the first one is used"


def test_a_source_with_an_appended_file_is_one_code_identity_of_two_files() -> None:
    """train_scale.py logs itself, then a line of 40 '-', '# train_gpt.py' and train_gpt.py: one hash for the
    whole section, and two Python files for the compile-flags rule (the '-' line is not Python)."""
    own = "import train_gpt\n\nprint('scale')\n"
    other = '"""The record file."""\n\nfrom __future__ import annotations\n\nprint("record")\n'
    source = own + "-" * 40 + "\n# train_gpt.py\n" + other
    log = parse_bytes(make_log(LogSpec(track="scale", source=source)).encode())
    assert log.source_sha256 == log.code_sha256 == hashlib.sha256(source.encode()).hexdigest()
    assert log.source_text == own and log.extra_code == "# train_gpt.py\n" + other
    assert log.appended_files == ["train_gpt.py"] and log.source_lines == source.count("\n")
    assert log.code_files == [CodeFile("", own, 1), CodeFile("train_gpt.py", other, own.count("\n") + 3)]
    assert not [i for i in log.structure_issues]
    alone = parse_bytes(make_log(LogSpec(source=own)).encode())
    assert (alone.source_text, alone.extra_code, alone.appended_files) == (own, "", [])
    assert alone.code_files == [CodeFile("", own, 1)]


def _log_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")


def _parses_or_is_newer_python(code: CodeFile, log: ParsedLog) -> None:
    """The file parses with ast, unless the log names a newer Python than this one (whose syntax may be newer)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escapes ('\s') in old code
            ast.parse(code.text)
    except SyntaxError:
        version = tuple(int(x) for x in (log.python_version or "0.0").split(".")[:2])
        if version <= sys.version_info[:2]:
            raise


def test_public_2026_log_appends_its_kernel_file_between_two_dashes_lines() -> None:
    """The public trainer writes code + "\\n\\n" + '-'*40 + "\\n# triton_kernels.py\\n" + '-'*40 + "\\n\\n" + the file."""
    log = parse_log(KERNEL_LOG)
    lines = _log_lines(KERNEL_LOG)
    trainer, kernels = log.code_files
    assert (trainer.name, trainer.line, kernels.name) == ("", 1, "triton_kernels.py")
    assert lines[kernels.line - 5 : kernels.line - 1] == [DASHES, "# triton_kernels.py", DASHES, ""]
    assert kernels.text.startswith("import torch\n") and lines[kernels.line - 1] == "import torch"
    last = trainer.text.splitlines()[-1]
    assert last == "dist.destroy_process_group()" and lines[trainer.text.count("\n") - 1] == last
    assert trainer.text.endswith("dist.destroy_process_group()\n")  # the blank lines before the '-' line dropped
    for code in (trainer, kernels):
        assert DASHES not in code.text.splitlines()
        _parses_or_is_newer_python(code, log)
    assert log.source_text == trainer.text and log.appended_files == ["triton_kernels.py"]
    assert log.extra_code == "# triton_kernels.py\n" + kernels.text and DASHES not in log.extra_code.splitlines()
    # the code identity is still the whole section, bytes before the separator line: unchanged by the split
    raw = KERNEL_LOG.read_bytes()
    section = raw[: raw.index(b"\n" + parse_module.SEPARATOR.encode()) + 1]
    assert log.source_sha256 == log.code_sha256 == hashlib.sha256(section).hexdigest()
    # the files and the separators between them are the section, byte for byte
    joined = trainer.text + "\n\n" + DASHES + "\n# triton_kernels.py\n" + DASHES + "\n\n" + kernels.text
    assert joined.encode() == section and not log.structure_issues


def test_public_2025_log_is_one_file() -> None:
    log = parse_log(LOG_2025)
    (trainer,) = log.code_files
    raw = LOG_2025.read_bytes()
    assert trainer.name == "" and trainer.line == 1 and trainer.text == log.source_text
    assert trainer.text.encode() == raw[: raw.index(b"\n" + parse_module.SEPARATOR.encode()) + 1]
    _parses_or_is_newer_python(trainer, log)


def test_2024_log_code_sits_between_the_first_two_separators() -> None:
    """f.write('='*100 + '\\n'); f.write(code); f.write('='*100 + '\\n'): the second section is the file."""
    log = parse_log(LOG_2024)
    raw = LOG_2024.read_bytes()
    sep = parse_module.SEPARATOR.encode() + b"\n"
    assert raw.startswith(sep)
    (code,) = log.code_files
    assert (code.name, code.line) == ("", 2)
    assert code.text.encode() == raw[len(sep) : raw.index(b"\n" + sep) + 1]  # exactly the file, last newline kept
    assert code.text.startswith("import os\n") and code.text.endswith("dist.destroy_process_group()\n")
    _parses_or_is_newer_python(code, log)
    # the existing fields keep their meaning and the code identity its value
    assert log.source_text == "" and log.source_sha256 == hashlib.sha256(b"").hexdigest()
    assert log.extra_code == code.text.strip("\n") and log.appended_files == []
    assert log.code_sha256 == hashlib.sha256(("\n" + log.extra_code).encode()).hexdigest()


def test_no_code_files_without_code() -> None:
    omitted = f"# training source omitted from this copy: sha256={'ab' * 32} lines=612\n".encode() + _log(
        "step:1/1 val_loss:3.2 train_time:5ms step_avg:5.00ms\n", source=""
    )
    assert parse_bytes(omitted).code_files == []
    assert parse_bytes(b"s:0 tel:10.98\n").code_files == []
    empty = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms\n", source=""))
    assert empty.code_files == [] and empty.source_text == ""


@pytest.mark.parametrize(
    "inside",
    [
        f'"""Notes.\n{DASHES}\n# Heading\n"""\n',  # not a file name
        f'"""Notes.\n{DASHES}\n# ../etc/passwd.py\n"""\n',  # not a plain file name
        f'"""Notes.\n{DASHES}\n# kernels\n{DASHES}\n"""\n',  # no extension
        f'"""Notes.\n{"-" * 41}\n# kernels.py\n"""\n',  # 41 '-'
        f"# {DASHES}\n# kernels.py\n",  # a comment line of '-'
        f"x = 1\n {DASHES}\n# kernels.py\n",  # not at the start of a line
    ],
)
def test_a_line_of_code_is_never_a_separator(inside: str) -> None:
    source = "import os\n" + inside + "print(os.sep)\n"
    log = parse_bytes(make_log(LogSpec(source=source)).encode())
    assert log.code_files == [CodeFile("", source, 1)] and log.appended_files == [] and log.extra_code == ""


def test_public_form_with_crlf_and_several_files() -> None:
    def block(name: str) -> str:
        return f"\n\n{DASHES}\n# {name}\n{DASHES}\n\n"

    code = "import a\n" + block("a.py") + "x = 1\n" + block("b.cu") + "y = 2\n"
    raw = _log("step:1/1 val_loss:3.2 train_time:5ms\n", source=code).replace(b"\n", b"\r\n")
    log = parse_bytes(raw)
    assert [(f.name, f.text, f.line) for f in log.code_files] == [
        ("", "import a\r\n", 1),
        ("a.py", "x = 1\r\n", 8),
        ("b.cu", "y = 2\r\n", 15),
    ]
    assert log.extra_code == "# a.py\nx = 1\r\n# b.cu\ny = 2\r\n"


def test_too_many_appended_files_is_a_structure_issue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse_module, "MAX_APPENDED_FILES", 2)
    code = "import a\n" + "".join(f"{DASHES}\n# f{i}.py\nx = {i}\n" for i in range(4))
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms\n", source=code))
    assert [f.name for f in log.code_files] == ["", "f0.py", "f1.py"]
    assert log.code_files[-1].text.startswith("x = 1\n" + DASHES + "\n# f2.py\n")
    assert any("over 2 appended files" in issue for issue in log.structure_issues)


def test_malformed_metric_lines_are_counted_not_fatal() -> None:
    log = parse_bytes(
        _log(
            "step:1/2 val_loss:abc train_time:5ms step_avg:5.00ms\nstep:2/2 val_loss:3.2 train_time:9ms step_avg:4.50ms\n"
        )
    )
    assert log.malformed_count == 1 and log.malformed_lines[0].startswith("step:1/2 val_loss:abc")
    assert log.final_val_loss == 3.2


def test_config_line_that_is_not_json() -> None:
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms step_avg:5.00ms\n", env="config: {not json"))
    assert log.config is None and "not valid JSON" in (log.config_error or "")


def test_a_json_line_with_a_key_written_twice_is_refused() -> None:
    """`"seed": 1, "seed": 2`: json.loads took the last, a reader of the text could take the first."""
    env = 'config: {"seed": 1, "run": {"a": 1, "a": 2}, "seed": 2}\ndata: {"shards": [], "shards": []}'
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms step_avg:5.00ms\n", env=env))
    assert log.config is None and "the key 'a' appears more than once" in (log.config_error or "")
    assert log.data is None and "the key 'shards' appears more than once" in (log.data_error or "")


def test_parse_cli_json_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.txt"
    path.write_text(make_log(LogSpec()))
    assert main(["parse", "--json", str(path)]) == 0
    obj = json.loads(capsys.readouterr().out.splitlines()[0])
    for key in (
        "path",
        "source_sha256",
        "final_step",
        "total_steps",
        "final_val_loss",
        "train_time_ms",
        "num_gpus",
        "gpu_name",
        "val_curve",
    ):
        assert key in obj
    assert obj["val_curve"][0][0] == 0 and len(obj["val_curve"][-1]) == 3
    assert obj["final_step"] == 100 and math.isclose(obj["val_curve"][-1][1], obj["final_val_loss"])


def test_parse_cli_table_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.txt"
    path.write_text(make_log(LogSpec()))
    assert main(["parse", str(path)]) == 0
    assert "100/100" in capsys.readouterr().out
    assert main(["parse", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err
    assert "nope.txt" in err and "no such file" in err


def test_config_with_nan_is_not_json() -> None:
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms step_avg:5.00ms\n", env='config: {"lr": NaN}'))
    assert log.config is None and "NaN is not JSON" in (log.config_error or "")


def test_limits_past_which_a_log_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each bound (tools/judge/parse.py) is far above a real log; past it the log fails `structure` with the number,
    instead of costing GBs (tests/adversarial/test_bounds.py measures the full-size cases)."""
    monkeypatch.setattr(parse_module, "MAX_METRIC_LINES", 3)
    log = parse_bytes(_log("step:1/4 train_time:1ms\n" * 4))
    assert len(log.metrics) == 0 and "4 metric lines, over the 3 a log may have" in " ".join(log.structure_issues)
    monkeypatch.setattr(parse_module, "MAX_ENV_FACT_LINES", 5)
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms\n"))  # nvidia_smi(8): more than 5 such lines
    assert any("over 5 lines of nvidia-smi" in issue for issue in log.structure_issues)
    monkeypatch.setattr(parse_module, "MAX_JSON_LINE_CHARS", 10)
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms\n", env='config: {"a": [1, 2, 3]}'))
    assert log.config is None and "16 characters, over the 10 it may have" in (log.config_error or "")


def test_a_log_with_no_separator_reads_its_first_line() -> None:
    """Metric lines are matched with the newline before them (fast); the file's first line has none."""
    log = parse_bytes(b"step:x\nstep:1/2 train_time:1ms\nstep:2/2 val_loss:3.0 train_time:2ms\n")
    assert (len(log.metrics), log.malformed_count, log.malformed_lines) == (2, 1, ["step:x"])
    assert [(p.step, p.val_loss) for p in log.val_curve] == [(2, 3.0)]
    assert parse_bytes(b"step:1/1 val_loss:3.5 train_time:1ms\n").final_val_loss == 3.5


def test_nvidia_smi_rows_read_without_backtracking() -> None:
    """The GPU name sits between the index and the persistence mode; a row of spaces once took minutes."""
    spaces = "|   0  " + " " * 200_000 + "\n"
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms\n", env="Running PyTorch 2.5.0\n" + spaces))
    assert log.gpu_names == ["NVIDIA H100 80GB HBM3"] * 8  # the rows of nvidia_smi(8) that follow
    row = parse_bytes(_log("", env="|   0  NVIDIA  H100  | x Off  |   00000000:18:00.0 Off |")).gpu_names
    assert row[0] == "NVIDIA H100 | x"  # as the one-regex reading had it: the name runs to the first On/Off


def test_mig_instances_are_gpu_uuids_in_both_driver_forms() -> None:
    """nvidia-smi -L names a MIG instance MIG-<uuid>, or MIG-GPU-<uuid>/<gi>/<ci> in older drivers."""
    uuid = "5d0c4c7e-8b1a-4f5e-9c3d-2a1b0c9d8e7f"
    uuids = [f"MIG-{uuid}", f"MIG-GPU-{uuid}/1/0"]
    line = 'host: {"host_id": "0123456789abcdef", "gpu_uuids": ' + json.dumps(uuids) + "}"
    log = parse_bytes(_log("step:1/1 val_loss:3.2 train_time:5ms\n", env=line))
    assert (log.gpu_uuids, log.host_error) == (uuids, None)


# --- the fast reading of metric lines against a slow, obviously correct one ----------------------------------------

# The metric line grammar as it was first written (tools/judge/parse.py, 2026-11): plain groups, no possessive repeats.
_REFERENCE_NUM = r"[-+]?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?(?:[eE][-+]?[0-9]{1,3})?|nan|inf)"
_REFERENCE_RE = re.compile(
    r"^step:([0-9]{1,12})/([0-9]{1,12})"
    rf"(?: (val_loss|train_loss):({_REFERENCE_NUM}))?"
    r" train_time:([0-9]{1,15}(?:\.[0-9]{0,9})?)(ms|s)"
    rf"(?: step_avg:({_REFERENCE_NUM})(ms|s))?[ \t\r]*$",
    re.M,
)


def _reference_columns(text: str) -> list[list[float]]:
    """step, total, train_time_ms, step_avg_ms, loss, is_val of every metric line: one regex match and one float()
    per value."""
    out: list[list[float]] = [[], [], [], [], [], []]
    for m in _REFERENCE_RE.finditer(text):
        step, total, kind, loss, tt, ttu, sa, sau = m.groups(default="")
        row = [
            int(step),
            int(total),
            float(tt) * (1000.0 if ttu == "s" else 1.0),
            float(sa or "nan") * (1000.0 if sau == "s" else 1.0),
            float(loss or "nan"),
            kind == "val_loss",
        ]
        for column, value in zip(out, row, strict=True):
            column.append(value)
    return out


_numbers = st.one_of(
    st.floats(0, 1e6, allow_nan=False).map(lambda x: f"{x:.4f}"),
    st.floats(0, 1e6, allow_nan=False).map(lambda x: f"{x:.2f}"),
    st.integers(0, 10**15).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.sampled_from(["nan", "-nan", "+nan", "inf", "-inf", "1.", "0012.50", "1e5", "2.5E-3", "-0.00", "+1.5", "0.0"]),
    st.sampled_from(["9" * 16, "9" * 20, "1" * 15 + ".5", "0." + "1" * 20, "9007199254740993", "12.345678901234567"]),
)


@st.composite
def _metric_lines(draw: st.DrawFn) -> str:
    lines = []
    for _ in range(draw(st.integers(1, 40))):
        step, total = draw(st.integers(0, 10**6)), draw(st.sampled_from([1390, 1390, 7, 10**12 - 1]))
        kind = draw(st.sampled_from(["", "", " val_loss:", " train_loss:"]))
        loss = kind + draw(_numbers) if kind else ""
        tt = draw(st.one_of(st.integers(0, 10**15).map(str), st.sampled_from(["12.5", "0.000", "3."])))
        unit = draw(st.sampled_from(["ms", "ms", "s"]))
        avg = draw(st.one_of(st.just(""), _numbers.map(lambda x: " step_avg:" + x)))
        avg_unit = draw(st.sampled_from(["ms", "ms", "s"])) if avg else ""
        tail = draw(st.sampled_from(["", "", " ", "\r", " junk"]))
        lines.append(f"step:{step}/{total}{loss} train_time:{tt}{unit}{avg}{avg_unit}{tail}")
    return "\n".join(lines) + "\n"


@settings(max_examples=300, deadline=None)
@given(_metric_lines())
def test_metric_columns_equal_one_float_per_value(lines: str) -> None:
    """The fast path (possessive regex, columns read as joined strings, decimals as integers) gives the same bits
    as one regex match and one float() per value, "-nan", "-0.00", 16-digit and exponent forms included."""
    m = parse_bytes(_log(lines)).metrics
    want = _reference_columns(lines)
    got = [m.step, m.total, m.train_time_ms, m.step_avg_ms, m.loss, m.is_val]
    dtypes = [np.int64, np.int64, np.float64, np.float64, np.float64, bool]
    for column, values, dtype in zip(got, want, dtypes, strict=True):
        assert column.tobytes() == np.array(values, dtype=dtype).tobytes(), (column, values)


def _same_as_float(column: list[str]) -> None:
    got = parse_module._floats(column)
    assert got.tobytes() == np.array([float(x or "nan") for x in column], dtype=np.float64).tobytes(), column


@pytest.mark.parametrize(
    "column",
    [
        ["-0.00"],  # the sign of zero: an integer read drops it
        ["1.50", "-0.00"],
        ["-nan", "1.00"],  # numpy reads "-nan" without its sign
        ["9" * 16],  # past 2**53: not an exact double as an integer
        ["9007199254740993", "1"],
        ["36498274426030.284"],  # 17 digits: the integer is rounded, then the quotient again, to another double
        ["3691056350289.4308", "1.0000"],
        ["1" * 15 + ".5"],
        ["12.5", "1.25"],  # different places after the point
        ["0." + "1" * 20],
        ["1.", "2.", "30."],
        ["nan", "", "3.2810", "nan"],
        ["1e5", "2.50"],
        ["+1.5"],
        ["0012.50", "0.01"],
        [],
    ],
)
def test_floats_of_edge_columns_are_float_of_each_string(column: list[str]) -> None:
    _same_as_float(column)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_numbers, st.just("")), max_size=30))
def test_floats_of_a_column_are_float_of_each_string(column: list[str]) -> None:
    _same_as_float(column)


# --- the public speedrun's whole tree (a clone of ../shared/public-speedrun's bundle; skipped without it) ----------


@pytest.fixture(scope="module")
def public_logs(public_records: Path) -> list[Path]:
    return sorted(p for p in public_records.rglob("*") if p.suffix in (".txt", ".log") and p.is_file())


def test_no_code_of_the_public_tree_fails_to_parse_for_a_separator_line(public_logs: list[Path]) -> None:
    """Every file of every log's code parses with ast, or it has syntax of the newer Python its log names (which
    the compile-flags rule reports so), and none holds a line of 40 '-': no separator is left in any code."""
    assert len(public_logs) > 800
    seen: set[str] = set()
    forms: dict[int, int] = {}
    for path in public_logs:
        log = parse_log(path)
        forms[len(log.code_files)] = forms.get(len(log.code_files), 0) + 1
        for code in log.code_files:
            key = hashlib.sha256(code.text.encode()).hexdigest()
            if key in seen:
                continue
            seen.add(key)
            assert DASHES not in code.text.splitlines(), (path, code.name)
            if _parses_now(code.text):
                continue
            version = tuple(int(x) for x in (log.python_version or "0.0").split(".")[:2])
            findings = sourcecheck.find_compile_flags(code.text, log.python_version)
            assert version > sys.version_info[:2], (path, code.name, findings)
            assert findings and "newer syntax" in findings[0].what, (path, findings)
    # the forms: no code (llm.c), one file (2024, 2025), a trainer and its kernel file (2026)
    assert set(forms) == {0, 1, 2} and forms[2] >= 190 and forms[0] == 3, forms


def _parses_now(text: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(text)
    except SyntaxError:
        return False
    return True
