"""The log parser: every community log against manifest.csv, every older form, this repo's own form."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import pytest

from logfactory import HOST_ID, SEP, LogSpec, config_for, fake_gpu_uuids, make_log, nvidia_smi
from tools import parse as parse_module
from tools.cli import main
from tools.parse import parse_bytes, parse_log


def test_every_anchor_log_matches_the_manifest(anchors_dir: Path) -> None:
    rows = list(csv.DictReader((anchors_dir / "manifest.csv").open()))
    assert len(rows) > 700
    mismatches = []
    for row in rows:
        log = parse_log(anchors_dir / row["path"])
        got = (
            log.source_sha256,
            log.source_lines,
            log.final_step,
            log.total_steps,
            log.final_val_loss,
            log.train_time_ms,
            len(log.val_curve),
            log.num_gpus,
            log.gpu_name,
        )
        want = (
            row["source_sha256"],
            int(row["source_lines"]),
            int(row["final_step"]),
            int(row["total_steps"]),
            float(row["final_val_loss"]),
            float(row["train_time_ms"]),
            int(row["num_val_lines"]),
            int(row["num_gpus"]),
            row["gpu_name"],
        )
        if got != want or log.structure_issues or log.malformed_count:
            mismatches.append((row["path"], got, want, log.structure_issues))
    assert not mismatches, mismatches[:5]


def test_2024_log_with_empty_source_and_code_in_the_next_section(anchors_dir: Path) -> None:
    log = parse_log(anchors_dir / "track_1_short/2024-10-14_ModernArch/dabaaddd-237c-4ec9-939d-6608a9ed5e27.txt")
    assert log.source_sha256 == hashlib.sha256(b"").hexdigest()
    assert "import torch" in log.extra_code  # the code sits between the first two separators
    assert log.code_sha256 != log.source_sha256
    assert log.torch_version == "2.4.1+cu121"
    assert log.metrics_form == "speedrun"


def test_run_date_from_the_nvidia_smi_timestamp(anchors_dir: Path) -> None:
    """nvidia-smi's first line dates the run: every anchor log has one."""
    log = parse_log(anchors_dir / "track_1_short/2024-10-14_ModernArch/dabaaddd-237c-4ec9-939d-6608a9ed5e27.txt")
    assert log.run_date == "2024-10-14"
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
    assert not [i for i in log.structure_issues]
    alone = parse_bytes(make_log(LogSpec(source=own)).encode())
    assert (alone.source_text, alone.extra_code, alone.appended_files) == (own, "", [])


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
    """Each bound (tools/parse.py) is far above a real log; past it the log fails `structure` with the number,
    instead of costing GBs (tests/test_tools_bounds.py measures the full-size cases)."""
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
