"""What a reproduction really did: the probe's report (tools/reproduce/probe.py), read and judged by the rules.

The probe of each trainer process writes records to one FIFO; ``Channel`` holds its reading end in a thread of the
runner for the whole run. ``parse_stream`` takes the bytes apart: each process first announces a key (``SRH1``),
then writes records (``SRP1``) that carry a keyed BLAKE2 MAC; a record without a valid MAC, a second announcement
for one process, a message with parts missing or bytes between the records were not written by the probe, so the
report is incomplete. ``judge_report`` compares what the probe saw with the settings of an untouched process in the
same sandbox (``probe.py reference``) and the rules of the record's date (tools/judge/rulebook.py):

- ``compile-flags``: an option of ``torch._inductor.config`` that differs from the reference in any snapshot (a
  ``torch.compile`` call, inductor loading the code it generated, the end), whatever route set it (the track's
  allowed options excepted: ``coordinate_descent_tuning`` on the medium track); ``mode=``, ``options=`` or a custom
  ``backend=`` given to ``torch.compile``; a compile-related environment variable set by the record's code or
  changed behind ``os.environ``'s back; a function or class of torch replaced; a file of the image opened for
  writing; a module executed from a file outside the standard library and the image; a program the record's code
  started other than ``nvidia-smi`` and a plain ``git``;
- ``data``: a file of the data folder opened or mapped that the log's data line does not list;
- ``probe``: anything that reaches the probe or the interpreter's memory (``gc``'s object walks, other threads'
  frames, trace or profile functions, ``ctypes`` from the record's code, ``/proc/*/mem``, the probe's channel, a
  Python signal handler of the record's);
- incomplete: a rank that never announced itself, a process without its final record, bytes not written by the
  probe, a probe that could not read torch's settings (its table replaced) or said it failed.

``torch._dynamo.config`` differences are shown, never judged: the rules let a record set them by name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import select
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.judge.rulebook import Rulebook

INDUCTOR = "torch._inductor.config"
DYNAMO = "torch._dynamo.config"
# Keys inductor patches itself inside a compilation (torch/_inductor/compile_fx.py, torch 2.13: padding on CPU,
# graph partition with the C++ wrapper, cudagraphs by annotation): ignored only in the snapshots taken while it
# loads the code it generated, never at a torch.compile call or at the end.
INDUCTOR_INTERNAL = frozenset({"comprehensive_padding", "graph_partition", "triton.cudagraphs"})
BACKENDS_OK = frozenset({"inductor", "eager", "aot_eager"})
ALLOWED_PROGRAMS = frozenset({"nvidia-smi", "git"})
# git options that make it run another program (an alias starting with "!", a pager, an editor, a hook path).
_GIT_RUNS_PROGRAMS = re.compile(r"^(-c|--config-env|--exec-path|-C)$|alias\.|^!|core\.|pager|editor|hooksPath")
MAX_REPORT_BYTES = 256 * 1024 * 1024
_HELLO_RE = re.compile(rb"SRH1 (\d{1,10}) (\S{1,12}) ([0-9a-f]{64})\n")
_RECORD_RE = re.compile(rb"SRP1 ((\d{1,10}) (\d{1,12}) (\d{1,9})/(\d{1,9}) ([A-Za-z0-9+/=]{0,8192})) ([0-9a-f]{64})\n")
COMPILE_FLAGS, DATA, PROBE = "compile-flags", "data", "probe"


# --- the channel -------------------------------------------------------------------------------------


class Channel:
    """A FIFO in ``folder`` the probes write to; a thread reads it while the run writes (so no write blocks)."""

    def __init__(self, folder: Path, others_may_write: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "probe.fifo"
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        os.mkfifo(self.path, 0o600)
        if others_may_write:  # the sandbox's uid 65534 (a root caller's sandbox) opens it for writing
            os.chmod(self.path, 0o622)
        self._read_fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        # Our own writing end: the reader never sees end-of-file between one process's end and the next's start.
        self._write_fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._data = bytearray()
        self.overflow = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="probe-channel", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            stopping = self._stop.is_set()
            ready, _, _ = select.select([self._read_fd], [], [], 0.2)
            got = False
            if ready:
                try:
                    chunk = os.read(self._read_fd, 1 << 20)
                except BlockingIOError:
                    chunk = b""
                if chunk:
                    got = True
                    room = MAX_REPORT_BYTES - len(self._data)
                    self._data += chunk[: max(room, 0)]
                    self.overflow += max(len(chunk) - max(room, 0), 0)
            if stopping and not got:
                return

    def finish(self) -> bytes:
        """Everything written, once the run is over (what is still in the FIFO included)."""
        self._stop.set()
        self._thread.join(timeout=30)
        for fd in (self._write_fd, self._read_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()  # the folder was made for the FIFO alone
        except OSError:
            pass
        return bytes(self._data)


def is_fifo(path: Path) -> bool:
    try:
        return stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        return False


# --- the stream ---------------------------------------------------------------------------------------


@dataclass
class Message:
    pid: int
    rank: str | None  # the rank of the announced process whose key signed it
    kind: str
    body: dict[str, Any]


@dataclass
class Stream:
    hellos: dict[int, tuple[str, bytes]] = field(default_factory=dict)  # pid -> (rank, key)
    messages: list[Message] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why the report is incomplete


def parse_stream(raw: bytes, overflow: int = 0) -> Stream:
    """The probe's records in ``raw``: announced keys, authenticated messages (reassembled), and problems."""
    out = Stream()
    covered = bytearray(len(raw))
    for m in _HELLO_RE.finditer(raw):
        pid, rank, secret = int(m.group(1)), m.group(2).decode("ascii", "replace"), bytes.fromhex(m.group(3).decode())
        covered[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
        if pid in out.hellos:
            out.problems.append(f"process {pid} announced itself twice: something else wrote an announcement")
            continue
        out.hellos[pid] = (rank, secret)
    parts: dict[tuple[int, int], dict[int, bytes]] = {}
    totals: dict[tuple[int, int], int] = {}
    signer: dict[tuple[int, int], str | None] = {}
    bad = 0
    for m in _RECORD_RE.finditer(raw):
        text, pid, msg, part, total = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5))
        rank = _verify(out.hellos, pid, text, m.group(7))
        if rank is _BAD or not 1 <= part <= total:
            bad += 1
            continue
        covered[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
        key = (pid, msg)
        parts.setdefault(key, {})[part] = base64.b64decode(m.group(6))
        totals[key] = total
        signer[key] = rank if isinstance(rank, str) else None
    foreign = sum(1 for i, c in enumerate(covered) if not c and raw[i : i + 1] != b"\n")
    if bad:
        out.problems.append(f"{bad} record(s) on the probe's channel carry no valid MAC: written by something else")
    if foreign:
        out.problems.append(f"{foreign} byte(s) on the probe's channel are not the probe's records")
    if overflow:
        out.problems.append(f"the probe's channel carried more than {MAX_REPORT_BYTES:,} bytes; the rest was dropped")
    for key in sorted(parts, key=lambda k: (k[0], k[1])):
        got = parts[key]
        if sorted(got) != list(range(1, totals[key] + 1)):
            out.problems.append(f"a message of process {key[0]} lacks part(s) of {totals[key]}")
            continue
        try:
            body = json.loads(b"".join(got[i] for i in sorted(got)))
        except ValueError:
            out.problems.append(f"a message of process {key[0]} is not JSON")
            continue
        if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
            out.problems.append(f"a message of process {key[0]} has no kind")
            continue
        out.messages.append(Message(key[0], signer[key], body["kind"], body))
    return out


_BAD = object()


def _verify(hellos: dict[int, tuple[str, bytes]], pid: int, text: bytes, mac: bytes) -> Any:
    """The rank whose key signed ``text`` (the process's own, else another announced one: a fork shares its
    parent's key), or _BAD."""
    order = [pid] + [p for p in hellos if p != pid] if pid in hellos else list(hellos)
    for p in order:
        rank, key = hellos[p]
        if hashlib.blake2b(text, key=key, digest_size=32).hexdigest().encode() == mac:
            return rank
    return _BAD


# --- the judgement --------------------------------------------------------------------------------------


@dataclass
class ProbeFinding:
    rule: str  # COMPILE_FLAGS, DATA or PROBE
    message: str
    option: str | None = None  # the compile option, for the verdict's short form


@dataclass
class ProbeVerdict:
    findings: list[ProbeFinding] = field(default_factory=list)  # rules broken at run time
    incomplete: list[str] = field(default_factory=list)  # why the report cannot be trusted whole
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.findings and not self.incomplete

    def to_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "findings": [{"rule": f.rule, "message": f.message, "option": f.option} for f in self.findings],
            "incomplete": self.incomplete,
            "notes": self.notes,
            "facts": self.facts,
        }


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _where(body: dict[str, Any]) -> str:
    """Where the record's code caused it: `` (train_gpt.py:27)``; empty for a library."""
    if body.get("by") == "record" and body.get("at"):
        return f" ({Path(str(body['at'])).name}:{body.get('line', 0)})"
    return ""


def judge_report(
    stream: Stream,
    reference: dict[str, Any],
    rulebook: Rulebook,
    nproc: int,
    shards: dict[str, tuple[str, str]],
) -> ProbeVerdict:
    """Judge what the probe saw. ``reference``: ``probe.py reference``'s output; ``shards``: the log's data line,
    name -> (split, sha256)."""
    v = ProbeVerdict(incomplete=list(stream.problems))
    ranks = sorted(r for r, _ in stream.hellos.values())
    if sorted(ranks) != sorted(str(i) for i in range(nproc)):
        v.incomplete.append(f"the probe announced ranks {ranks or 'none'}, the run has {nproc} process(es)")
    ended = {m.pid for m in stream.messages if m.kind == "end"}
    for pid, (rank, _) in sorted(stream.hellos.items()):
        if pid not in ended:
            v.incomplete.append(
                f"rank {rank} (process {pid}) sent no final record: the process was killed, or its probe silenced"
            )
    allowed = {"coordinate_descent_tuning"} if rulebook.coordinate_descent_allowed else set()
    ref_configs = reference.get("configs", {}) if isinstance(reference.get("configs"), dict) else {}
    tables: dict[tuple[int, str], dict[str, Any]] = {}
    seen_diffs: set[tuple[str, str, str]] = set()
    facts: dict[str, Any] = {
        "compile_calls": 0,
        "generated_code_loads": 0,
        "snapshots": 0,
        "data_files": {},
        "programs": [],
        "modules_outside": [],
        "sys_path_outside": [],
        "dynamo_settings_changed": {},
        "ranks": ranks,
    }
    env_ref = reference.get("env", {}) if isinstance(reference.get("env"), dict) else {}
    library_env: set[str] = set()
    for m in stream.messages:
        b = m.body
        if m.kind == "env":
            name = str(b.get("name"))
            if b.get("by") == "record":
                v.findings.append(
                    ProbeFinding(
                        COMPILE_FLAGS,
                        f"the record's code set {name}={_short(b.get('value'))}{_where(b)}: an environment variable "
                        "torch's compiler reads",
                        name,
                    )
                )
            else:
                library_env.add(name)
        elif m.kind == "snapshot":
            facts["snapshots"] += 1
            when = str(b.get("when"))
            facts["compile_calls"] += when == "compile"
            if when == "generated":
                facts["generated_code_loads"] = max(facts["generated_code_loads"], int(b.get("count", 0) or 0))
            for problem in b.get("problems", []):
                v.incomplete.append(f"rank {m.rank}: the probe could not read torch's settings: {problem}")
            _judge_snapshot(v, m, tables, ref_configs, allowed, seen_diffs, facts)
            env = _as_dict(b.get("env"))
            for name in sorted(set(env) | set(env_ref)):
                if (
                    env.get(name) != env_ref.get(name)
                    and name not in library_env
                    and (when, name, "") not in seen_diffs
                ):
                    seen_diffs.add((when, name, ""))
                    v.findings.append(
                        ProbeFinding(
                            COMPILE_FLAGS,
                            f"{name} is {_short(env.get(name))} at the {when} snapshot of rank {m.rank}, "
                            f"{_short(env_ref.get(name))} in an untouched process: an environment variable torch's "
                            "compiler reads, changed at run time",
                            name,
                        )
                    )
            for f in b.get("foreign_functions", []) or []:
                v.findings.append(
                    ProbeFinding(
                        COMPILE_FLAGS,
                        f"torch's {f.get('name')} is a function from {f.get('file')}: torch's code was replaced at "
                        "run time",
                    )
                )
            for h in b.get("signal_handlers", []) or []:
                v.findings.append(
                    ProbeFinding(
                        PROBE,
                        f"the code installed a Python handler for signal {h.get('signal')} ({h.get('file')}): Python "
                        "hands it the frame it interrupts, which can be the probe's",
                    )
                )
            if when == "compile":
                _judge_compile_arguments(v, b)
        elif m.kind == "patch":
            v.findings.append(
                ProbeFinding(COMPILE_FLAGS, f"the record's code changed {b.get('target')}{_where(b)}: torch's code")
            )
        elif m.kind == "image-write":
            v.findings.append(
                ProbeFinding(
                    COMPILE_FLAGS,
                    f"{b.get('path')} was opened for writing{_where(b)}: a file of the image (the standard library, "
                    "torch, the packages)",
                )
            )
        elif m.kind == "module":
            facts["modules_outside"].append(b.get("file"))
            v.findings.append(
                ProbeFinding(
                    COMPILE_FLAGS,
                    f"the run executed the module {b.get('file')}{_where(b)}, from outside the standard library and "
                    "the image: code the log does not carry",
                )
            )
        elif m.kind == "sys.path":
            facts["sys_path_outside"].append(b.get("entry"))
        elif m.kind == "program":
            _judge_program(v, b, facts)
        elif m.kind == "data":
            name = str(b.get("file"))
            entry = facts["data_files"].setdefault(name, {"modes": [], "split": None, "sha256": None})
            entry["modes"] = sorted(set(entry["modes"]) | {str(b.get("mode"))})
            if name in shards:
                entry["split"], entry["sha256"] = shards[name]
            elif not any(f.rule == DATA and name in f.message for f in v.findings):
                v.findings.append(
                    ProbeFinding(
                        DATA,
                        f"the run read {name} from the data folder, which the log's data line does not list",
                    )
                )
        elif m.kind == "tamper":
            by = _where(b) or f" (in {b.get('at')})"
            v.findings.append(
                ProbeFinding(
                    PROBE, f"the run {b.get('what')}{by}: a way to reach the probe or the interpreter's memory"
                )
            )
        elif m.kind == "probe-error":
            v.incomplete.append(f"rank {m.rank}: the probe failed on a {b.get('event')} event ({b.get('error')})")
    unread = sorted(set(shards) - set(facts["data_files"]))
    if unread and facts["data_files"]:
        v.notes.append(f"the run never opened {len(unread)} shard(s) the log lists (first: {unread[0]})")
    if facts["dynamo_settings_changed"]:
        shown = ", ".join(f"{k}={_short(x)}" for k, x in sorted(facts["dynamo_settings_changed"].items())[:5])
        v.notes.append(f"torch._dynamo.config set at run time (allowed by the rules): {shown}")
    v.facts = facts
    return v


def _judge_snapshot(
    v: ProbeVerdict,
    m: Message,
    tables: dict[tuple[int, str], dict[str, Any]],
    ref_configs: dict[str, Any],
    allowed: set[str],
    seen: set[tuple[str, str, str]],
    facts: dict[str, Any],
) -> None:
    b = m.body
    when = str(b.get("when"))
    configs = _as_dict(b.get("configs"))
    for module, delta in configs.items():
        if not isinstance(delta, dict):
            continue
        table = dict(delta["full"]) if isinstance(delta.get("full"), dict) else dict(tables.get((m.pid, module), {}))
        if "full" not in delta:
            table.update(delta.get("changed", {}) if isinstance(delta.get("changed"), dict) else {})
            for k in delta.get("gone", []) or []:
                table.pop(k, None)
        tables[(m.pid, module)] = table
    for module in (INDUCTOR, DYNAMO):
        known = tables.get((m.pid, module))
        ref = ref_configs.get(module)
        if known is None or not isinstance(ref, dict):
            continue
        table = known
        for key in sorted(set(table) | set(ref)):
            if table.get(key, "(absent)") == ref.get(key, "(absent)"):
                continue
            if module == DYNAMO:
                facts["dynamo_settings_changed"][key] = table.get(key)
                continue
            if key in allowed or (when == "generated" and key in INDUCTOR_INTERNAL):
                continue
            if ("", key, _short(table.get(key))) in seen:  # each value of an option once: where it was first seen
                continue
            seen.add(("", key, _short(table.get(key))))
            v.findings.append(
                ProbeFinding(
                    COMPILE_FLAGS,
                    f"torch._inductor.config.{key} was {_short(table.get(key, '(absent)'))} at "
                    f"{_WHEN.get(when, when)} of rank {m.rank}{_where(b)}; an untouched process has "
                    f"{_short(ref.get(key, '(absent)'))}",
                    key,
                )
            )


_WHEN = {
    "start": "the start",
    "compile": "a torch.compile call",
    "generated": "a compilation (inductor loading the code it generated)",
    "exit": "the end",
}


def _judge_compile_arguments(v: ProbeVerdict, body: dict[str, Any]) -> None:
    args = _as_dict(body.get("arguments"))
    for name in ("mode", "options", "config_patches"):
        value = args.get(name)
        if value is None or (name == "mode" and value == "default"):
            continue
        if name != "mode" and isinstance(value, dict) and not value.get("items"):
            continue
        v.findings.append(
            ProbeFinding(
                COMPILE_FLAGS,
                f"torch.compile was given {name}={_short(value)}{_where(body)}",
                f"{name}={_short(value)}",
            )
        )
    backend = args.get("backend")
    if backend is not None and not (isinstance(backend, str) and backend in BACKENDS_OK):
        v.findings.append(
            ProbeFinding(
                COMPILE_FLAGS,
                f"torch.compile was given backend={_short(backend)}{_where(body)}: a custom backend can compile with "
                "settings of its own",
                "backend",
            )
        )
    if args.get("positional"):
        v.findings.append(
            ProbeFinding(
                COMPILE_FLAGS, f"torch.compile was given arguments by position ({_short(args['positional'])})", None
            )
        )


def _judge_program(v: ProbeVerdict, body: dict[str, Any], facts: dict[str, Any]) -> None:
    argv = [a if isinstance(a, str) else _short(a) for a in body.get("argv", [])]
    event = str(body.get("event"))
    facts["programs"].append({"argv": argv[:8], "event": event, "by": body.get("by")})
    if body.get("by") != "record" or event in ("os.fork", "os.forkpty"):
        return
    name = Path(argv[0]).name if argv else "?"
    if name not in ALLOWED_PROGRAMS:
        v.findings.append(
            ProbeFinding(
                COMPILE_FLAGS,
                f"the record's code started {_short(argv[:6])}{_where(body)}: a program other than nvidia-smi or git "
                "runs code the log does not carry",
            )
        )
    elif name == "git" and any(_GIT_RUNS_PROGRAMS.search(a) for a in argv[1:]):
        v.findings.append(
            ProbeFinding(
                COMPILE_FLAGS,
                f"the record's code started git with {_short(argv[1:6])}{_where(body)}: options that make git run a "
                "program of its own (an alias, a pager, an editor, a hook)",
            )
        )


def verdict_options(v: ProbeVerdict) -> list[str]:
    """The short names of what was broken, for the verdict line: compile options first, then rules."""
    out: list[str] = []
    for f in v.findings:
        name = f.option or f.rule
        if name not in out:
            out.append(name)
    return out
