"""`python -m tools reproduce LOG --extract FILE` on every log form that carries its code."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import warnings
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from helpers.logfactory import LogSpec, make_log
from tools.cli import main
from tools.judge.parse import SEPARATOR, ParsedLog, parse_bytes
from tools.reproduce import runner as reproduce

PUBLIC = REPO_ROOT / "tests" / "fixtures" / "public-speedrun" / "records"
KERNEL_LOG = PUBLIC / "track_1_short/2026-02-02_KernelTuning/25afb73a-332f-4d69-b9ab-f6261497f2d8.txt"
LOG_2024 = PUBLIC / "track_1_short/2024-11-19_FlexAttention/8384493d-dba9-4991-b16b-8696953f5e6d.txt"
LLMC_LOG = PUBLIC / "track_2_medium/2025-01-18/main.log"
DASHES = "-" * 40


def _parses(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes ('\s') in old code
        ast.parse(data)


def test_extract_a_2024_log_writes_the_code_between_the_first_two_separators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "train_gpt2.py"
    assert main(["reproduce", str(LOG_2024), "--extract", str(dest)]) == 0
    raw = LOG_2024.read_bytes()
    sep = SEPARATOR.encode() + b"\n"
    assert dest.read_bytes() == raw[len(sep) : raw.index(b"\n" + sep) + 1]  # the file the 2024 trainer wrote
    _parses(dest.read_bytes())
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]
    out = capsys.readouterr().out
    assert (
        f"wrote the code of {LOG_2024} to {dest} (sha256 {hashlib.sha256(dest.read_bytes()).hexdigest()[:16]}…)" in out
    )
    assert "as the log says" not in out  # its source sha256 is the empty section's
    assert "put back between the log's separator lines, the files written are the log byte for byte" in out


def test_extract_an_appended_file_log_writes_each_file_beside_the_trainer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "train_gpt.py"
    assert main(["reproduce", str(KERNEL_LOG.parent), "--extract", str(dest)]) == 0  # a record folder: its first log
    kernels = tmp_path / "triton_kernels.py"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_gpt.py", "triton_kernels.py"]
    trainer, appended = dest.read_bytes(), kernels.read_bytes()
    assert trainer.endswith(b"dist.destroy_process_group()\n") and appended.startswith(b"import torch\n")
    for data in (trainer, appended):
        assert DASHES.encode() not in data.splitlines()
        _parses(data)
    # put back together as the public trainer wrote them, they are the log's source section
    raw = KERNEL_LOG.read_bytes()
    section = raw[: raw.index(b"\n" + SEPARATOR.encode()) + 1]
    block = f"\n\n{DASHES}\n# triton_kernels.py\n{DASHES}\n\n".encode()
    assert trainer + block + appended == section
    out = capsys.readouterr().out
    assert f"to {dest} (sha256 {hashlib.sha256(trainer).hexdigest()[:16]}" in out
    assert f"wrote triton_kernels.py, the file its trainer appended to its code, to {kernels}" in out
    assert out.endswith("put back between the log's separator lines, the files written are the log byte for byte\n")


def test_extract_overwrites_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "triton_kernels.py").write_text("mine\n")
    dest = tmp_path / "train_gpt.py"
    assert main(["reproduce", str(KERNEL_LOG), "--extract", str(dest)]) == 2
    assert "triton_kernels.py: already exists" in capsys.readouterr().err
    assert not dest.exists() and (tmp_path / "triton_kernels.py").read_text() == "mine\n"  # nothing written at all
    # the appended file's own name is refused as FILE: two files of the code would go to one name
    assert main(["reproduce", str(KERNEL_LOG), "--extract", str(tmp_path / "sub" / "triton_kernels.py")]) == 2
    assert "two files of its code would be written to one name" in capsys.readouterr().err


def test_extract_of_this_harness_logs_is_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One file: FILE is the source section, whose sha256 is the log's source sha256 (`sha256sum train_gpt.py`)."""
    source = "import os\n\nprint(os.sep)\n"
    log = tmp_path / "run.txt"
    log.write_text(make_log(LogSpec(source=source)))
    dest = tmp_path / "out.py"
    assert main(["reproduce", str(log), "--extract", str(dest)]) == 0
    assert dest.read_text() == source
    digest = hashlib.sha256(dest.read_bytes()).hexdigest()
    assert digest == parse_bytes(log.read_bytes()).source_sha256
    assert capsys.readouterr().out == f"wrote the code of {log} to {dest} (sha256 {digest[:16]}…, as the log says)\n"
    # train_scale.py's form: its own code, then train_gpt.py appended after '-'*40 and '# train_gpt.py'
    scale = "import train_gpt\n"
    log.unlink()
    log.write_text(make_log(LogSpec(track="scale", source=scale + DASHES + "\n# train_gpt.py\n" + source)))
    (tmp_path / "scale").mkdir()
    dest = tmp_path / "scale" / "train_scale.py"
    assert main(["reproduce", str(log), "--extract", str(dest)]) == 0
    assert dest.read_text() == scale and (tmp_path / "scale" / "train_gpt.py").read_text() == source


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (LLMC_LOG.read_bytes(), "no code in this log"),
        (
            f"# training source omitted from this copy: sha256={'ab' * 32} lines=612\n".encode()
            + make_log(LogSpec(source="")).encode(),
            "no code in this log",
        ),
        (make_log(LogSpec(source="x = 'caf\udce9'\n")).encode("utf-8", "surrogateescape"), "not valid UTF-8"),
    ],
)
def test_extract_refuses_a_log_without_code_it_can_give_back(
    raw: bytes, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "run.txt"
    log.write_bytes(raw)
    dest = tmp_path / "out.py"
    assert main(["reproduce", str(log), "--extract", str(dest)]) == 2
    assert why in capsys.readouterr().err and not dest.exists()


@pytest.mark.parametrize("name", ["../evil.py", "a/b.py", "..", ".bashrc", "-rf.py", "/etc/x.py", "a\\b.py", ""])
def test_extract_refuses_a_name_that_is_not_a_plain_file_name(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parser reads only plain names from a log; the extraction checks again before writing anything."""
    real = reproduce.parse_bytes

    def renamed(raw: bytes, path: str = "<bytes>", size: int | None = None) -> ParsedLog:
        log = real(raw, path, size=size)
        log.code_files[1] = dataclasses.replace(log.code_files[1], name=name)
        return log

    monkeypatch.setattr(reproduce, "parse_bytes", renamed)
    (tmp_path / "out").mkdir()
    dest = tmp_path / "out" / "train_gpt.py"
    with pytest.raises(ValueError, match="is not a plain file name"):
        reproduce.extract_code(KERNEL_LOG, dest)
    assert list(tmp_path.rglob("*")) == [tmp_path / "out"]


def test_extract_removes_what_it_wrote_when_the_disk_gives_other_bytes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Path.read_bytes

    def flipped(self: Path) -> bytes:
        data = real(self)
        return data[:-1] + b"#" if self.name == "triton_kernels.py" else data

    monkeypatch.setattr(Path, "read_bytes", flipped)
    with pytest.raises(ValueError, match="not the log's code byte for byte"):
        reproduce.extract_code(KERNEL_LOG, tmp_path / "train_gpt.py")
    assert list(tmp_path.iterdir()) == []
