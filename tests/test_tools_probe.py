"""The run-time probe (tools/reproduce/probe.py) and the judgement of its report (tools/reproduce/report.py), in parts.

Fast: no training run. The probe is run for real on small scripts in a subprocess (torch imported, no sandbox: the
scripts only read and set torch's settings in their own process), its channel is read as the runner reads it, and
the judgement is checked on hand-made reports. tests/adversarial/test_reproduce_hostile.py runs hostile records end to end.
"""

from __future__ import annotations

import base64
import dis
import hashlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO_ROOT
from tools.judge.rulebook import rulebook_for
from tools.reproduce import probe, report

PROBE = REPO_ROOT / "tools" / "reproduce" / "probe.py"
SMOKE = rulebook_for("smoke", None, harness=True)
MEDIUM = rulebook_for("track_2_medium", None, harness=True)


# --- the probe holds out against the code it watches ------------------------------------------------


def _hook_code() -> list[types.CodeType]:
    """The code objects of everything the audit hook runs: the functions made inside the factories (not the
    comprehensions the factories run themselves, at install time, before the record)."""
    out: list[types.CodeType] = []
    for factory in (probe._install, probe._make_describe, probe._make_json, probe._make_config_reader):
        stack = [
            c for c in factory.__code__.co_consts if isinstance(c, types.CodeType) and not c.co_name.startswith("<")
        ]
        while stack:
            code = stack.pop()
            out.append(code)
            stack += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return out


def test_the_hook_resolves_no_global_or_builtin_name() -> None:
    """A record that rebinds a builtin (builtins.str = ...) or a name of the probe's module must not reach the hook:
    every name the hook uses is bound when it is made."""
    codes = _hook_code()
    assert {"hook", "send", "snapshot", "origin", "on_open", "describe", "dump", "read"} <= {c.co_name for c in codes}
    leaks = {
        c.co_name: sorted({i.argval for i in dis.get_instructions(c) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")})
        for c in codes
    }
    assert {name: names for name, names in leaks.items() if names} == {}


class _Trap:
    """An object whose every hook into Python's protocols records that it was called."""

    called: list[str] = []

    def __repr__(self) -> str:
        _Trap.called.append("repr")
        return "trap"

    def __eq__(self, other: object) -> bool:
        _Trap.called.append("eq")
        return False

    __hash__ = object.__hash__

    def __getattribute__(self, name: str) -> Any:
        _Trap.called.append(f"getattr {name}")
        return object.__getattribute__(self, name)


class _Meta(type):
    def __getattribute__(cls, name: str) -> Any:
        _Trap.called.append(f"metaclass getattr {name}")
        return super().__getattribute__(name)


class _Classy(metaclass=_Meta):
    pass


def test_describe_calls_no_method_of_the_values_it_reads() -> None:
    describe = probe._make_describe()
    _Trap.called = []
    out = describe({"a": [_Trap(), {_Trap()}], "b": _Classy, "c": _Classy(), "d": float("nan"), "e": b"x"})
    assert _Trap.called == []
    assert json.loads(probe._make_json()(out))["items"][0] == [
        "a",
        {
            "type": "builtins.list",
            "items": [
                {"object": f"{__name__}._Trap"},
                {"type": "builtins.set", "items": [{"object": f"{__name__}._Trap"}]},
            ],
        },
    ]
    assert describe(_Classy) == {"class": f"{__name__}._Classy"}  # the real name, not the metaclass's
    assert describe(float("inf")) == "inf" and describe(True) is True and describe(None) is None


def test_launch_refuses_what_is_not_a_limit() -> None:
    for argv in (
        ["--nproc", "10"],
        ["--nproc", "x", "--", "true"],
        ["--bogus", "1", "--", "true"],
        ["--uid", "0", "--gid", "0", "--", "true"],
    ):
        assert probe.main(["launch", *argv]) == 2
    assert probe.main(["nonsense"]) == 2


# --- the probe for real, on small scripts ---------------------------------------------------------------


# Some of torch's defaults depend on the working folder (debug folders): the reference and the probed runs share one.
WORKDIR = REPO_ROOT / "tools"


def run_probed(tmp_path: Path, code: str, env: dict[str, str] | None = None) -> report.Stream:
    """Run ``code`` under the probe as the runner does (its own process, the FIFO read by a Channel)."""
    script = tmp_path / "record.py"
    script.write_text(code)
    channel = report.Channel(tmp_path / "channel", others_may_write=False)
    run_env = {
        k: v for k, v in os.environ.items() if not k.startswith("TORCHINDUCTOR_") or k == "TORCHINDUCTOR_CACHE_DIR"
    }
    run_env.update(env or {}, RANK="0")
    try:
        out = subprocess.run(
            [sys.executable, str(PROBE), "run", "--report", str(channel.path), str(script)],
            env=run_env,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=WORKDIR,
        )
    finally:
        raw = channel.finish()
    assert out.returncode == 0, out.stderr[-3000:]
    return report.parse_stream(raw)


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(PROBE), "reference"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=WORKDIR,
        env={
            k: v for k, v in os.environ.items() if not k.startswith("TORCHINDUCTOR_") or k == "TORCHINDUCTOR_CACHE_DIR"
        },
    )
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout.splitlines()[-1])
    assert len(data["configs"][report.INDUCTOR]) > 300 and data["configs"][report.INDUCTOR]["max_autotune"] is False
    return dict(data)


@pytest.fixture(scope="module")
def probed_script(tmp_path_factory: pytest.TempPathFactory) -> report.Stream:
    """One probed process that does a bit of everything the probe records, honestly and not."""
    return run_probed(
        tmp_path_factory.mktemp("probed"),
        "import os, sys, subprocess, gc\n"
        "import torch\n"
        "import torch._inductor.config as c\n"
        "with c.patch(max_autotune=True):\n"
        "    torch.compile(lambda x: x, mode='max-autotune')\n"
        "c.coordinate_descent_tuning = True\n"
        "os.environ['TORCHINDUCTOR_' + 'FX_GRAPH_CACHE'] = '0'\n"
        "subprocess.run(['true'])\n"
        "gc.get_referrers(c)\n"
        "open(os.path.join(os.path.dirname(c.__file__), 'not-there', 'x'), 'a') if False else None\n"
        "print(sys.argv[0].endswith('record.py'), __name__)\n"
        "os._exit(0)\n",
    )


def test_the_probe_announces_itself_and_ends(probed_script: report.Stream) -> None:
    stream = probed_script
    assert stream.problems == []
    [(pid, (rank, key))] = stream.hellos.items()
    assert rank == "0" and len(key) == 32
    kinds = [m.kind for m in stream.messages]
    assert (
        kinds[0] == "start"
        and kinds[-1] == "end"
        and [m.body["when"] for m in stream.messages if m.kind == "snapshot"][-1] == "exit"
    )


def test_the_probe_sees_settings_changed_by_the_code(probed_script: report.Stream, reference: dict[str, Any]) -> None:
    v = report.judge_report(probed_script, reference, SMOKE, 1, {})
    messages = [f.message for f in v.findings]
    options = report.verdict_options(v)
    # on only while torch.compile was called: seen at that call; mode= as an argument
    assert "max_autotune" in options and 'mode="max-autotune"' in options
    assert any("max_autotune was true at a torch.compile call" in m for m in messages)
    assert "coordinate_descent_tuning" in options  # not allowed on the smoke track
    assert "TORCHINDUCTOR_FX_GRAPH_CACHE" in options  # set by the record's code, its name built at run time
    assert any(
        f.rule == report.PROBE and "the run used gc.get_referrers (record.py:9)" in f.message for f in v.findings
    )
    assert any('started ["true"]' in m for m in messages)  # a program other than nvidia-smi and git
    assert v.incomplete == []
    # on the medium track the public rules allow coordinate_descent_tuning: the same run, that option not judged
    medium = report.judge_report(probed_script, reference, MEDIUM, 1, {})
    assert "coordinate_descent_tuning" not in report.verdict_options(
        medium
    ) and "max_autotune" in report.verdict_options(medium)


# --- the channel: only the probe's records count -------------------------------------------------------


def record(pid: int, msg: int, body: dict[str, Any], key: bytes, part: int = 1, parts: int = 1) -> bytes:
    """One record as probe.py writes it."""
    text = b"%d %d %d/%d %s" % (pid, msg, part, parts, base64.b64encode(json.dumps(body).encode()))
    return b"SRP1 " + text + b" " + hashlib.blake2b(text, key=key, digest_size=32).hexdigest().encode() + b"\n"


def hello(pid: int, rank: int, key: bytes) -> bytes:
    return b"SRH1 %d %d %s\n" % (pid, rank, key.hex().encode())


KEY = bytes(range(32))


def test_records_without_the_key_or_between_the_records_are_foreign() -> None:
    good = hello(7, 0, KEY) + record(7, 0, {"kind": "start", "pid": 7}, KEY) + record(7, 1, {"kind": "end"}, KEY)
    assert report.parse_stream(good).problems == []
    forged = record(7, 2, {"kind": "end"}, b"\0" * 32)
    s = report.parse_stream(good + forged)
    assert [m.kind for m in s.messages] == ["start", "end"] and "carry no valid MAC" in s.problems[0]
    # bytes glued before a real record do not hide it
    s = report.parse_stream(hello(7, 0, KEY) + b'{"half a line' + record(7, 0, {"kind": "start"}, KEY))
    assert [m.kind for m in s.messages] == ["start"] and any("not the probe's records" in p for p in s.problems)
    s = report.parse_stream(good + hello(7, 0, bytes(32)))
    assert any("announced itself twice" in p for p in s.problems)


def test_a_message_with_a_part_missing_is_not_read() -> None:
    s = report.parse_stream(hello(7, 0, KEY) + record(7, 0, {"kind": "start"}, KEY, part=1, parts=2))
    assert s.messages == [] and "lacks part(s)" in s.problems[0]


def stream_of(*bodies: dict[str, Any], ranks: int = 1, end: bool = True) -> report.Stream:
    raw = b"".join(hello(100 + r, r, KEY) for r in range(ranks))
    for i, b in enumerate(bodies):
        raw += record(100, i, {"pid": 100, **b}, KEY)
    if end:
        raw += b"".join(record(100 + r, 999, {"kind": "end", "status": 0}, KEY) for r in range(ranks))
    return report.parse_stream(raw)


REF = {
    "configs": {report.INDUCTOR: {"max_autotune": False, "comprehensive_padding": True}, report.DYNAMO: {"x": 1}},
    "env": {"TORCHINDUCTOR_CACHE_DIR": "/tmp/ti"},
}


def snap(when: str, inductor: dict[str, Any] | None = None, full: bool = True, **extra: Any) -> dict[str, Any]:
    configs = {}
    if inductor is not None:
        configs[report.INDUCTOR] = (
            {"full": {**REF["configs"][report.INDUCTOR], **inductor}} if full else {"changed": inductor}
        )
    return {"kind": "snapshot", "when": when, "configs": configs, "problems": [], "env": REF["env"], **extra}


def test_inductors_own_patches_count_only_inside_a_compilation() -> None:
    inside = report.judge_report(stream_of(snap("generated", {"comprehensive_padding": False})), REF, SMOKE, 1, {})
    assert inside.clean
    outside = report.judge_report(stream_of(snap("exit", {"comprehensive_padding": False})), REF, SMOKE, 1, {})
    assert report.verdict_options(outside) == ["comprehensive_padding"]


def test_deltas_are_applied_in_order_and_a_reset_still_counts() -> None:
    s = stream_of(
        snap("start", {}),
        snap("generated", {"max_autotune": True}, full=False),
        snap("exit", {"max_autotune": False}, full=False),
    )
    v = report.judge_report(s, REF, SMOKE, 1, {})
    assert (
        report.verdict_options(v) == ["max_autotune"]
        and "inductor loading the code it generated" in v.findings[0].message
    )


def test_what_makes_a_report_incomplete() -> None:
    v = report.judge_report(stream_of(snap("start", {}), end=False), REF, SMOKE, 1, {})
    assert any("sent no final record" in x for x in v.incomplete)
    v = report.judge_report(stream_of(snap("start", {}), ranks=1), REF, SMOKE, 2, {})
    assert any("the run has 2 process(es)" in x for x in v.incomplete)
    v = report.judge_report(
        stream_of(snap("exit", {}, problems=["torch._inductor.config: its table of options was replaced"])),
        REF,
        SMOKE,
        1,
        {},
    )
    assert any("could not read torch's settings" in x for x in v.incomplete)


@pytest.mark.parametrize(
    "body, rule, words",
    [
        (
            {"kind": "program", "event": "subprocess.Popen", "argv": ["git", "-c", "alias.x=!sh", "x"], "by": "record"},
            report.COMPILE_FLAGS,
            "git run a program",
        ),
        ({"kind": "program", "event": "subprocess.Popen", "argv": ["/usr/bin/nvidia-smi"], "by": "record"}, None, ""),
        ({"kind": "program", "event": "subprocess.Popen", "argv": ["g++", "x.cpp"], "by": "library"}, None, ""),
        (
            {"kind": "module", "file": "/tmp/wave.py", "by": "record"},
            report.COMPILE_FLAGS,
            "from outside the standard library",
        ),
        ({"kind": "data", "file": "other.bin", "mode": "r"}, report.DATA, "does not list"),
        ({"kind": "data", "file": "synthetic_val_000000.bin", "mode": "mmap"}, None, ""),
        ({"kind": "env", "name": "TORCHINDUCTOR_CACHE_DIR", "value": "/x", "by": "library"}, None, ""),
        (
            {"kind": "image-write", "path": "/usr/lib/python3/torch/_inductor/config.py", "mode": "a", "by": "record"},
            report.COMPILE_FLAGS,
            "a file of the image",
        ),
        (
            {"kind": "tamper", "what": "opened the probe's channel (/probe/report)", "by": "record", "at": "/r/t.py"},
            report.PROBE,
            "the run opened the probe's channel (/probe/report) (t.py:0): a way to reach the probe",
        ),
        (
            {"kind": "patch", "target": "torch._inductor.utils:use_max_autotune", "by": "record"},
            report.COMPILE_FLAGS,
            "torch's code",
        ),
        (
            snap("compile", {}, arguments={"backend": {"function": "x.f", "file": "/r.py"}}),
            report.COMPILE_FLAGS,
            "custom backend",
        ),
        (snap("compile", {}, arguments={"backend": "inductor", "fullgraph": True, "dynamic": False}), None, ""),
        (
            snap("exit", {}, signal_handlers=[{"signal": 10, "file": "/reproduce/train_gpt.py"}]),
            report.PROBE,
            "signal 10",
        ),
        (
            snap("exit", {}, foreign_functions=[{"name": "torch._inductor.utils.f", "file": "/tmp/x.py"}]),
            report.COMPILE_FLAGS,
            "replaced at run time",
        ),
    ],
)
def test_each_kind_of_record_is_judged_by_its_rule(body: dict[str, Any], rule: str | None, words: str) -> None:
    v = report.judge_report(stream_of(body), REF, SMOKE, 1, {"synthetic_val_000000.bin": ("val", "ab" * 32)})
    assert [f.rule for f in v.findings] == ([rule] if rule else []), v.to_json()
    assert not rule or words in v.findings[0].message
    assert v.incomplete == []
