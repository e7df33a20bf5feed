"""Property-based fuzzing: mutated real logs never crash the parser or the verifier.

Whatever hypothesis does to a log (truncate it, splice in bytes, NULs or invalid UTF-8, edit or
shuffle lines, blow it up past the size limit), parsing returns facts and judging returns a
verdict whose failures name a known rule and carry evidence; the JSON output stays strict JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PUBLIC_FIXTURE
from helpers.logfactory import LogSpec, make_log
from tools.cli import main
from tools.judge.parse import parse_bytes
from tools.judge.records import Record
from tools.judge.rules import RULE_IDS
from tools.judge.tracks import TRACKS
from tools.judge.verify import judge, rank

# Real logs of three eras (2024's leading separator, 2025's, 2026's appended kernel file: the public fixtures),
# plus our own form.
_PUBLIC_SAMPLES = (
    "track_1_short/2024-11-19_FlexAttention/8384493d-dba9-4991-b16b-8696953f5e6d.txt",
    "track_1_short/2025-05-24_FasterReduce/23f40b75-06fb-4c3f-87a8-743524769a35.txt",
    "track_1_short/2026-02-02_KernelTuning/25afb73a-332f-4d69-b9ab-f6261497f2d8.txt",
)


def _bases() -> list[bytes]:
    bases = [make_log(LogSpec(total_steps=60, val_every=20)).encode(), make_log(LogSpec(k=10, seed=3)).encode()]
    bases.extend((PUBLIC_FIXTURE / "records" / rel).read_bytes() for rel in _PUBLIC_SAMPLES)
    return bases


BASES = _bases()
SMALL_LIMIT = 256 * 1024  # run some examples under a small size limit to exercise the "huge" path


@st.composite
def mutated_logs(draw: st.DrawFn) -> bytes:
    data = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(
                ["truncate", "insert", "replace_line", "delete_lines", "duplicate", "flip", "edit_number", "empty"]
            )
        )
        n = len(data)
        if op == "truncate":
            data = data[: draw(st.integers(0, n))]
        elif op == "insert":
            at = draw(st.integers(0, n))
            blob = draw(
                st.one_of(st.binary(max_size=64), st.just(b"\x00"), st.just(b"\xff\xfe"), st.just(b"=" * 100 + b"\n"))
            )
            data = data[:at] + blob + data[at:]
        elif op in ("replace_line", "delete_lines", "duplicate", "edit_number"):
            lines = data.split(b"\n")
            i = draw(st.integers(0, max(len(lines) - 1, 0)))
            if op == "replace_line":
                lines[i] = draw(st.text(max_size=80)).encode("utf-8", "surrogatepass")
            elif op == "delete_lines":
                del lines[i : i + draw(st.integers(1, 200))]
            elif op == "duplicate":
                lines[i:i] = lines[i : i + draw(st.integers(1, 50))]
            else:
                lines[i] = (
                    lines[i]
                    .replace(b"ms", draw(st.sampled_from([b"s", b"", b"nanms", b"9" * 40])))
                    .replace(b":3.", draw(st.sampled_from([b":nan", b":-3.", b":inf", b":3e999", b":"])))
                )
            data = b"\n".join(lines)
        elif op == "flip" and n:
            at = draw(st.integers(0, n - 1))
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        elif op == "empty":
            data = draw(st.sampled_from([b"", b"\n\n", b" "]))
    return data


def _check(raw: bytes, track: str, limit: int) -> None:
    log = parse_bytes(raw, "fuzzed.txt", max_bytes=limit)
    json.dumps(log.to_json(), allow_nan=False)  # strict JSON, whatever the input
    rec = Record(
        path=Path("fuzzed.txt"), name="fuzzed.txt", track=TRACKS[track], logs=[Path("fuzzed.txt")], layout="log"
    )
    v = judge(rec, {Path("fuzzed.txt"): log}, {})
    rank([v])
    out = v.to_json()
    json.dumps(out, allow_nan=False)
    for f in out["failures"]:
        assert f["rule"] in RULE_IDS and f["evidence"].strip() and f["file"]
    if not raw.strip() or b"\x00" in raw or len(raw) > limit:
        assert not v.valid and any(f.rule == "structure" for f in v.failures)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(raw=mutated_logs(), track=st.sampled_from(["track_1_short", "smoke"]), small=st.booleans())
def test_mutated_logs_get_a_verdict_never_a_crash(raw: bytes, track: str, small: bool) -> None:
    _check(raw, track, SMALL_LIMIT if small else 64 * 1024 * 1024)


def test_huge_and_odd_files_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as f:  # sparse: 70 MB of NULs that cost no disk
        f.truncate(70 * 1024 * 1024)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(make_log(LogSpec()).encode().replace(b"training", "tr\xe4ining".encode("latin-1")))
    for path in (huge, latin):
        assert main(["verify", "--json", "--track", "track_1_short", str(path)]) == 1
        obj = json.loads(capsys.readouterr().out)
        assert obj["valid"] is False
        evidence = " ".join(f["evidence"] for f in obj["failures"] if f["rule"] == "structure")
        assert ("over the" in evidence) if path is huge else ("not UTF-8" in evidence), evidence
