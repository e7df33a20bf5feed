"""The run-time probe: what a reproduction really did, recorded from inside each trainer process.

``python -m tools reproduce`` starts every process of a log's code through this file (standard library only, so that
the sandbox can bind it alone, read-only): ``torchrun ... probe.py run --report FIFO train_gpt.py`` makes each rank
run this file, which installs the probe and then runs the trainer as ``__main__`` with its own argv and ``__file__``.
The probe reads and never sets a value, so the trainer computes what it computes unprobed. It records:

- torch's compile settings: every option of ``torch._inductor.config`` and ``torch._dynamo.config`` as torch reads it
  (environment force, the thread's override, environment default, default), at every ``torch.compile`` call (with
  its arguments), each time inductor loads code it generated (inside every compilation, whatever route set the
  option) and at the end; with the compile-related environment;
- modules executed from files outside the standard library and the image, ``sys.path`` entries outside it, functions
  in torch's module namespaces whose code comes from elsewhere, torch classes and functions changed by the record's
  code, Python signal handlers the record installed;
- the data folder's files opened or memory-mapped, the programs started (and who started them: the record's code or
  a library), compile-related environment variables set, files of the image opened for writing;
- the primitives that reach the probe or the interpreter's memory: ``gc``'s object walks, other threads' frames,
  trace and profile functions, ``ctypes`` used by the record's code, ``/proc/*/mem``, the probe's own channel.

How it stands up to the code it watches (docs/reproduce.md says what it can and cannot guarantee):

- it runs first: torch is imported, the settings read and the hook installed before any line of the record runs;
- its state (the channel's descriptor, a random key, the counters) lives only in the closures of one audit hook
  (``sys.addaudithook``: Python has no way to remove one); the wrappers it installs reach it only through
  ``sys.audit``. The hook and everything it calls resolve no global or builtin name at run time (every builtin and
  C function is bound when the hook is made; tests/test_tools_probe.py checks the bytecode), and call no method
  of a value they read: values are described by their exact builtin types, attributes are read with
  ``object.__getattribute__`` after an identity check of the type. It never raises into the run;
- each record goes out at once, in one ``write`` of at most ``PIPE_BUF`` bytes, to a FIFO whose reading end only the
  runner holds: what was written cannot be taken back. Each record carries a keyed BLAKE2 MAC under a key
  announced before the record's code runs, so bytes written by anything else are told apart (the runner fails a
  run whose channel holds any), and the channel's identity is checked before each write: a probe that lost it kills
  its process (the run then lacks its final record, and fails).

Modes: ``run`` (above), ``reference`` (print what an untouched process reads: what every snapshot is compared
with), ``launch`` (set resource limits, then exec a command: the sandbox's first process).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

MAGIC = b"SRP1"  # an authenticated record
HELLO = b"SRH1"  # a process announcing its key, before the record's code runs
CHUNK = 2400  # payload bytes per record before base64: a record stays well under PIPE_BUF (4096)
EVENT_PREFIX = "speedrun.probe."
# Environment variables that can change how torch compiles (the runner judges those the record's code set).
COMPILE_ENV_PREFIXES = ("TORCHINDUCTOR_", "TORCHDYNAMO_", "TORCH_COMPILE", "INDUCTOR_", "TORCH_LOGS")
CONFIG_MODULES = ("torch._inductor.config", "torch._dynamo.config")
MAX_DEPTH = 4  # of a described value
MAX_ITEMS = 64  # of a described container
PATCH_SCAN_EVERY = 16  # snapshots at generated code scan torch's namespaces for foreign functions this often


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    mode = args[0] if args else ""
    if mode == "launch":
        return _launch(args[1:])
    if mode == "reference":
        return _reference()
    if mode == "run" and len(args) >= 4 and args[1] == "--report":
        return _run(args[2], args[3], args[4:])
    print(
        "usage: probe.py run --report FIFO CODE [ARGS...] | probe.py reference | "
        "probe.py launch [--nproc N] [--as BYTES] [--fsize BYTES] [--uid N --gid N] [--result-fd FD --out DIR] "
        "-- COMMAND...",
        file=sys.stderr,
    )
    return 2


# --- launch: resource limits, then the command ---------------------------------------------------


def _launch(args: list[str]) -> int:
    """Set the limits (and, when given, become the uid and gid: a root caller's sandbox), then run the command.

    Run inside the sandbox, so that RLIMIT_NPROC counts the sandbox's processes: set in the caller's user namespace
    before bubblewrap makes its own, it would count every process of the caller's user. With ``--result-fd FD --out
    DIR`` the output folder the command sees (DIR) is a tmpfs of bounded size, and the real one is only a descriptor
    of this process (made unreadable to the command: not dumpable, not inherited); when the command ends, every
    other process of the sandbox is killed and DIR's regular files and folders are copied there (links never
    followed, nothing overwritten)."""
    import resource

    limits = {"--nproc": resource.RLIMIT_NPROC, "--as": resource.RLIMIT_AS, "--fsize": resource.RLIMIT_FSIZE}
    numbers = ("--uid", "--gid", "--result-fd")
    if "--" not in args:
        print("probe.py launch: give the command after --", file=sys.stderr)
        return 2
    split = args.index("--")
    options, command = args[:split], args[split + 1 :]
    if len(options) % 2 or not command:
        print("probe.py launch: give OPTION VALUE pairs, then -- COMMAND", file=sys.stderr)
        return 2
    given: dict[str, str] = {}
    for name, value in zip(options[::2], options[1::2], strict=True):
        if name == "--out" and value.startswith("/"):
            given[name] = value
        elif (name in limits or name in numbers) and value.isdigit():
            given[name] = value
        else:
            print(f"probe.py launch: {name} {value}: not a limit, id, descriptor or folder", file=sys.stderr)
            return 2
    if ("--result-fd" in given) != ("--out" in given):
        print("probe.py launch: give --result-fd and --out together", file=sys.stderr)
        return 2
    for name, rlimit in limits.items():
        if name in given:
            resource.setrlimit(rlimit, (int(given[name]), int(given[name])))
    if "--uid" in given or "--gid" in given:
        uid, gid = int(given.get("--uid", "0")), int(given.get("--gid", "0"))
        if uid == 0 or gid == 0:
            print("probe.py launch: give a uid and a gid other than root's", file=sys.stderr)
            return 2
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # every capability goes with root's uid
        if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
            print("probe.py launch: could not drop root's rights", file=sys.stderr)
            return 2
    if "--result-fd" not in given:
        os.execvp(command[0], command)
    result_fd = int(given["--result-fd"])
    os.set_inheritable(result_fd, False)
    _not_dumpable()  # the command runs as the same uid: /proc/<this>/fd and ptrace would reach the descriptor
    child = os.fork()
    if child == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    import signal

    try:
        os.kill(-1, signal.SIGKILL)  # every process of the sandbox but this one: nothing writes while it is copied
    except ProcessLookupError:
        pass
    _copy_out(given["--out"], result_fd, 0)
    return status if status >= 0 else 128 - status


def _not_dumpable() -> None:
    import ctypes

    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _copy_out(source: str, target_fd: int, depth: int) -> None:
    """Copy the regular files and folders under ``source`` into the folder open as ``target_fd``."""
    import stat

    if depth > 32:
        return
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        try:
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(entry.name, 0o755, dir_fd=target_fd)
                sub = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=target_fd)
                try:
                    _copy_out(entry.path, sub, depth + 1)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(st.st_mode):
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                out = os.open(entry.name, flags, 0o644, dir_fd=target_fd)
                with open(entry.path, "rb") as src, os.fdopen(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
        except OSError as e:
            print(f"probe.py launch: {entry.path} not copied out ({e.strerror})", file=sys.stderr)


# --- describing values without running any code of theirs ----------------------------------------


def _make_describe() -> Callable[[Any], Any]:
    """A function from any value to plain data (str, int, float, bool, None, and lists and dicts of those) that calls
    no method of the value: exact builtin types are read as they are; functions, classes and other objects are
    named through C descriptors bound now, whatever their classes or metaclasses define."""
    import types

    _type, _repr, _str, _sorted, _enumerate, _Exception = type, repr, str, sorted, enumerate, Exception
    _getattribute = object.__getattribute__
    qualname_of = type.__dict__["__qualname__"].__get__
    module_of = type.__dict__["__module__"].__get__
    mro_of = type.__dict__["__mro__"].__get__
    _NoneType, _bytes, _float, _int, _bool, _list, _tuple = type(None), bytes, float, int, bool, list, tuple
    _set, _frozenset, _dict, _type_type = set, frozenset, dict, type
    function, builtin, method, code_type = (
        types.FunctionType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.CodeType,
    )
    inf, max_depth, max_items = float("inf"), MAX_DEPTH, MAX_ITEMS
    described_fields = ("torch.", "enum.", "functools.", "dataclasses.")

    def name_of_type(t: Any) -> str:
        try:
            mod, qual = module_of(t), qualname_of(t)
        except _Exception:
            return "?"
        return (mod if _type(mod) is _str else "?") + "." + (qual if _type(qual) is _str else "?")

    def is_class(value: Any) -> bool:
        for c in mro_of(_type(value)):
            if c is _type_type:
                return True
        return False

    def text(value: Any) -> str:
        return value if _type(value) is _str else "?"

    def describe(value: Any, depth: int = 0) -> Any:
        t = _type(value)
        if t is _NoneType or t is _bool or t is _int or t is _str:
            return value
        if t is _float:
            return value if value == value and value != inf and value != -inf else _repr(value)
        if t is _bytes:
            return "bytes:" + _repr(value)[:200]
        if depth >= max_depth:
            return "<" + name_of_type(t) + ">"
        if t is _list or t is _tuple or t is _set or t is _frozenset:
            items = [describe(v, depth + 1) for i, v in _enumerate(value) if i < max_items]
            if t is _set or t is _frozenset:
                items = _sorted(items, key=_str)
            return {"type": name_of_type(t), "items": items}
        if t is _dict:
            pairs = [
                [describe(k, depth + 1), describe(v, depth + 1)]
                for i, (k, v) in _enumerate(value.items())
                if i < max_items
            ]
            return {"type": "dict", "items": _sorted(pairs, key=_str)}
        if t is function:
            code = _getattribute(value, "__code__")
            where = code.co_filename if _type(code) is code_type else "?"
            qual = text(_getattribute(value, "__module__")) + "." + text(_getattribute(value, "__qualname__"))
            return {"function": qual, "file": text(where)}
        if t is builtin:
            return {"builtin": text(_getattribute(value, "__qualname__"))}
        if t is method:
            return {"method": describe(_getattribute(value, "__func__"), depth + 1)}
        if is_class(value):
            return {"class": name_of_type(value)}
        # Another object: its type, and the fields of its instance dict when the type is torch's or the standard
        # library's (an enum member, a small dataclass); objects of other types are named by their type only.
        owner = name_of_type(t)
        out: dict[str, Any] = {"object": owner}
        if owner.startswith(described_fields):
            try:
                fields = _getattribute(value, "__dict__")
            except _Exception:
                fields = None
            if _type(fields) is _dict:
                out["fields"] = describe(fields, depth + 1)
        return out

    return describe


def _make_json() -> Callable[[Any], bytes]:
    """JSON of plain data (what describe returns), written with C functions only."""
    from _json import encode_basestring_ascii as quote

    _type, _repr, _int_repr, _float_repr, _str = type, repr, int.__repr__, float.__repr__, str
    _bool, _int, _float, _list, _tuple, _dict = bool, int, float, list, tuple, dict

    def dump(value: Any) -> str:
        t = _type(value)
        if t is _str:
            return quote(value)
        if value is None:
            return "null"
        if t is _bool:
            return "true" if value else "false"
        if t is _int:
            return _int_repr(value)
        if t is _float:
            return _float_repr(value)
        if t is _list or t is _tuple:
            return "[" + ",".join([dump(v) for v in value]) + "]"
        if t is _dict:
            return (
                "{"
                + ",".join([quote(k if _type(k) is _str else _repr(k)) + ":" + dump(v) for k, v in value.items()])
                + "}"
            )
        return quote("<unserialisable>")

    def to_bytes(value: Any) -> bytes:
        return dump(value).encode("ascii")

    return to_bytes


# --- the settings: a torch config module read as torch reads it -----------------------------------


def _make_config_reader(describe: Callable[[Any], Any]) -> Callable[[Any], dict[str, Any] | str]:
    """A function from a config module to {option: described value}, or a string saying why it cannot be read (its
    table or an entry is not what torch made, or not what the probe first read). Bound to torch's classes now, so a
    record that replaces them is seen, not obeyed."""
    import contextvars

    import torch.utils._config_module as cm

    getattribute, _type, _len, _id, _dict, _str, _AttributeError, _LookupError = (
        object.__getattribute__,
        type,
        len,
        id,
        dict,
        str,
        AttributeError,
        LookupError,
    )
    mro_of = type.__dict__["__mro__"].__get__
    entry_type, module_base, unset = cm._ConfigEntry, cm.ConfigModule, cm._UNSET_SENTINEL
    contextvar, cv_get = contextvars.ContextVar, contextvars.ContextVar.get
    seen: dict[int, tuple[Any, dict[str, Any], list[tuple[str, Any]]]] = {}

    def field(entry: Any, name: str) -> Any:
        try:
            return getattribute(entry, name)
        except _AttributeError:
            return unset

    def is_config_module(module: Any) -> bool:
        for c in mro_of(_type(module)):
            if c is module_base:
                return True
        return False

    def read(module: Any) -> dict[str, Any] | str:
        if not is_config_module(module):
            return "it is not a torch config module (replaced by another object)"
        table = getattribute(module, "_config")
        if _type(table) is not _dict:
            return "its table of options is not a dict"
        known = seen.get(_id(module))
        if known is None:
            seen[_id(module)] = known = (module, table, [(k, v) for k, v in table.items()])
        module_then, table_then, entries = known
        if module_then is not module or table_then is not table or _len(table) != _len(entries):
            return "its table of options was replaced or changed since the probe first read it"
        out: dict[str, Any] = {}
        for name, entry in entries:
            if _type(entry) is not entry_type or table.get(name) is not entry:
                return "the entry of option " + (name if _type(name) is _str else "?") + " was replaced"
            alias = field(entry, "alias")
            if alias is not None and alias is not unset:  # the value lives in the option it names
                out[name] = {"alias": describe(alias)}
                continue
            value = field(entry, "env_value_force")
            if value is unset:
                value = field(entry, "user_override")
                if _type(value) is contextvar:  # torch >= 2.10: thread-local overrides
                    try:
                        value = cv_get(value)
                    except _LookupError:
                        value = unset
            if value is unset:
                value = field(entry, "env_value_default")
            if value is unset:
                value = field(entry, "default")
            out[name] = describe(value)
        return out

    return read


def _compile_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(COMPILE_ENV_PREFIXES) and not k.startswith("_")}


# --- reference: the settings of a process that ran no record --------------------------------------


def _reference() -> int:
    """Print {"configs": {module: {option: value}}, "env": {...}} as read in a fresh process (one JSON line)."""
    import importlib

    import torch  # noqa: F401  (the config modules need it)

    describe = _make_describe()
    read = _make_config_reader(describe)
    configs: dict[str, Any] = {}
    for name in CONFIG_MODULES:
        table = read(importlib.import_module(name))
        configs[name] = table if isinstance(table, dict) else {"__unreadable__": table}
    sys.stdout.write(_make_json()({"configs": configs, "env": _compile_env(dict(os.environ))}).decode("ascii") + "\n")
    sys.stdout.flush()
    return 0


# --- run: install the probe, then the trainer -------------------------------------------------------


def _run(report: str, code: str, trainer_args: list[str]) -> int:
    import runpy

    code = os.path.abspath(code)
    _install(report, code)
    # From here on this frame holds nothing of the probe: the record's code can walk the stack up to it.
    sys.argv = [code, *trainer_args]
    sys.path[0] = os.path.dirname(code)
    status: object = 0
    try:
        runpy.run_path(code, run_name="__main__")
    except SystemExit as e:
        status = e.code
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    code_out = status if isinstance(status, int) else (0 if status is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.audit(EVENT_PREFIX + "exit", code_out)
    return code_out


def _install(report: str, code: str) -> None:
    """Open the channel, announce the key, import torch, read the settings, wrap torch.compile and os._exit, and
    add the audit hook. Everything the hook needs is a local of this function: nothing is left anywhere else."""
    import _blake2
    import _signal
    import binascii
    import itertools
    import stat
    import sysconfig
    import types

    describe = _make_describe()
    to_json = _make_json()
    fd = os.open(report, os.O_WRONLY | os.O_CLOEXEC)
    fifo = os.fstat(fd)
    key = os.urandom(32)
    pid = os.getpid()
    rank = os.environ.get("RANK", "0")
    os.write(fd, HELLO + b" %d %s %s\n" % (pid, rank.encode("ascii", "replace")[:12], binascii.hexlify(key)))

    env0 = dict(os.environ)
    cache_dirs = tuple(
        os.path.join(os.path.realpath(p), "")
        for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
        if (p := env0.get(k))
    )
    probe_file = os.path.realpath(__file__)
    code_dir = os.path.dirname(code)
    paths = sysconfig.get_paths()
    roots = {
        os.path.join(os.path.realpath(p), "")
        for p in [*sys.path[1:], *paths.values(), sys.prefix, sys.base_prefix, sys.exec_prefix]
        if p and os.path.isdir(p) and os.path.realpath(p) != os.path.dirname(probe_file)
    }
    trusted = tuple(sorted(roots))
    stdlib = tuple(os.path.join(os.path.realpath(paths[k]), "") for k in ("stdlib", "platstdlib"))
    # Third-party packages: under the standard library's folder in most installs, yet libraries, not the stdlib.
    site_dirs = tuple(
        r for r in trusted if not any(r == s for s in stdlib) and (r.startswith(stdlib) or "-packages/" in r)
    )
    data_files: dict[tuple[int, int], str] = {}
    data_dir = env0.get("DATA_PATH")
    if data_dir and os.path.isdir(data_dir):
        for name in sorted(os.listdir(data_dir)):
            try:
                st = os.stat(os.path.join(data_dir, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                data_files[(st.st_dev, st.st_ino)] = name
    proc_dev = os.stat("/proc/self").st_dev if os.path.isdir("/proc/self") else -1

    import torch  # trusted: imported before any line of the record runs

    torch_dir = os.path.join(os.path.dirname(os.path.realpath(torch.__file__)), "")
    read_config = _make_config_reader(describe)
    modules = sys.modules
    env_type = type(os.environ)
    os_module = modules["os"]
    signals = tuple(range(1, int(getattr(_signal, "NSIG", 65))))

    # Bound now: the hook resolves no global or builtin name when it runs.
    _type, _len, _str, _list, _range, _enumerate, _sorted = type, len, str, list, range, enumerate, sorted
    _bytes, _int, _dict, _tuple = bytes, int, dict, tuple
    _Exception, _OSError, _ValueError = Exception, OSError, ValueError
    _getattribute = object.__getattribute__
    mro_of = type.__dict__["__mro__"].__get__
    module_of = type.__dict__["__module__"].__get__
    _write, _fstat, _stat, _kill, _getframe, _readlink = (
        os.write,
        os.fstat,
        os.stat,
        os.kill,
        sys._getframe,
        os.readlink,
    )
    _getsignal = _signal.getsignal
    _mac, _b64 = _blake2.blake2b, binascii.b2a_base64
    _next, counter = next, itertools.count()
    module_type, function_type, code_type = types.ModuleType, types.FunctionType, types.CodeType
    fifo_dev, fifo_ino = fifo.st_dev, fifo.st_ino
    magic, chunk, prefix = MAGIC, CHUNK, EVENT_PREFIX
    config_modules, env_prefixes, scan_every = CONFIG_MODULES, COMPILE_ENV_PREFIXES, PATCH_SCAN_EVERY
    last_tables: dict[str, dict[str, Any]] = {}
    seen_modules: set[str] = set()
    seen_paths: set[str] = set()
    seen_patched: set[tuple[str, str]] = set()
    seen_handlers: set[tuple[int, str]] = set()
    seen_data: set[tuple[str, Any]] = set()
    generated = [0]

    def send(kind: str, body: dict[str, Any]) -> None:
        st = _fstat(fd)
        if st.st_dev != fifo_dev or st.st_ino != fifo_ino:
            _kill(pid, 9)  # the channel was closed or replaced: fail closed (the run lacks its final record)
        body["kind"] = kind
        body["pid"] = pid
        payload = to_json(body)
        parts = [payload[i : i + chunk] for i in _range(0, _len(payload), chunk)] or [b""]
        msg = _next(counter)
        for i, part in _enumerate(parts):
            text = b"%d %d %d/%d %s" % (pid, msg, i + 1, _len(parts), _b64(part, newline=False))
            mac = _mac(text, key=key, digest_size=32).hexdigest().encode("ascii")
            try:
                _write(fd, magic + b" " + text + b" " + mac + b"\n")
            except _OSError:
                _kill(pid, 9)

    def origin() -> dict[str, Any]:
        """Who caused the event: the innermost frame outside the standard library, this file and code made from
        strings; "library" when that frame is the image's (torch, triton, numpy...), else "record"."""
        f = _getframe(1)
        while f is not None:
            co = _getattribute(f, "f_code")
            name = co.co_filename if _type(co) is code_type else ""
            if _type(name) is _str and name.startswith("/") and name != probe_file:
                library = name.startswith(site_dirs) or name.startswith(torch_dir)
                if library or not name.startswith(stdlib):
                    line = _getattribute(f, "f_lineno")
                    who = "library" if library or name.startswith(trusted) else "record"
                    return {"by": who, "at": name, "line": line if _type(line) is _int else 0}
            f = _getattribute(f, "f_back")
        return {"by": "library", "at": "(the standard library)", "line": 0}

    def foreign_functions() -> list[dict[str, Any]]:
        """Functions in the namespaces of torch's and triton's modules whose code is not from a file of the image."""
        found = []
        for mname, module in _list(modules.items()):
            if (
                _type(mname) is not _str
                or not mname.startswith(("torch", "triton"))
                or _type(module) is not module_type
            ):
                continue
            space = _getattribute(module, "__dict__")
            if _type(space) is not _dict:
                continue
            for attr, value in _list(space.items()):
                if _type(value) is not function_type:
                    continue
                co = _getattribute(value, "__code__")
                file = co.co_filename if _type(co) is code_type else "?"
                if _type(file) is not _str:
                    file = "?"
                if (
                    file == probe_file
                    or file.startswith(trusted)
                    or file.startswith(torch_dir)
                    or file.startswith("<frozen ")
                ):
                    continue
                if cache_dirs and file.startswith(cache_dirs):
                    continue
                if (mname, file) in seen_patched:
                    continue
                seen_patched.add((mname, file))
                found.append({"name": mname + "." + (attr if _type(attr) is _str else "?"), "file": file})
        return found

    def foreign_handlers() -> list[dict[str, Any]]:
        found = []
        for signum in signals:
            try:
                handler = _getsignal(signum)
            except _ValueError:
                continue
            if _type(handler) is not function_type:
                continue
            co = _getattribute(handler, "__code__")
            file = co.co_filename if _type(co) is code_type else "?"
            if _type(file) is _str and not file.startswith(trusted) and not file.startswith(torch_dir):
                if (signum, file) not in seen_handlers:
                    seen_handlers.add((signum, file))
                    found.append({"signal": signum, "file": file})
        return found

    def snapshot(when: str, extra: dict[str, Any]) -> None:
        body: dict[str, Any] = {"when": when, "configs": {}, "problems": []}
        body.update(extra)
        for name in config_modules:
            module = modules.get(name)
            if module is None:
                continue
            table: Any = read_config(module)
            if _type(table) is _str:
                body["problems"].append(name + ": " + table)
                continue
            before = last_tables.get(name)
            if before is None:
                body["configs"][name] = {"full": table}
            else:
                changed = {k: v for k, v in table.items() if k not in before or before[k] != v}
                gone = [k for k in before if k not in table]
                if changed or gone:
                    body["configs"][name] = {"changed": changed, "gone": gone}
            last_tables[name] = table
        environ = _getattribute(os_module, "__dict__").get("environ")
        env: dict[str, str] = {}
        if _type(environ) is not env_type:
            body["problems"].append("os.environ was replaced by another object")
        else:
            data = _getattribute(environ, "_data")
            if _type(data) is _dict:
                for k, v in data.items():
                    if _type(k) is _bytes and _type(v) is _bytes:
                        ks = k.decode("utf-8", "replace")
                        if ks.startswith(env_prefixes) and not ks.startswith("_"):
                            env[ks] = v.decode("utf-8", "replace")
        body["env"] = env
        if when != "generated" or generated[0] % scan_every == 1:
            body["foreign_functions"] = foreign_functions()
            body["signal_handlers"] = foreign_handlers()
        send("snapshot", body)

    def resolve(path: str) -> str:
        """The path with its symbolic links followed, by C calls only (to see /proc/self/mem behind a link)."""
        for _ in _range(40):
            try:
                target = _readlink(path)
            except (_OSError, _ValueError):
                return path
            if _type(target) is not _str:
                return path
            path = target if target.startswith("/") else path.rsplit("/", 1)[0] + "/" + target
        return path

    def on_open(args: tuple[Any, ...]) -> None:
        path: Any = args[0] if args else None
        mode: Any = args[1] if _len(args) > 1 else None
        if _type(path) is _bytes:
            path = path.decode("utf-8", "surrogateescape")
        if _type(path) is not _str:
            return
        try:
            st = _stat(path)
        except (_OSError, _ValueError):
            return
        if st.st_dev == fifo_dev and st.st_ino == fifo_ino:
            send("tamper", {"what": "opened the probe's channel (" + path + ")", **origin()})
            return
        if st.st_dev == proc_dev and resolve(path).rsplit("/", 1)[-1] in ("mem", "environ", "pagemap"):
            send("tamper", {"what": "opened a process's memory (" + path + ")", **origin()})
            return
        m = mode if _type(mode) is _str else ("r" if mode is None else "flags")
        name = data_files.get((st.st_dev, st.st_ino))
        if name is not None and (name, m) not in seen_data:
            seen_data.add((name, m))
            send("data", {"file": name, "mode": m})
        writes = _type(mode) is _str and ("w" in mode or "a" in mode or "+" in mode or "x" in mode)
        if writes and path.startswith("/") and (path.startswith(trusted) or path.startswith(torch_dir)):
            send("image-write", {"path": path, "mode": m, **origin()})

    def on_exec(args: tuple[Any, ...]) -> None:
        co: Any = args[0] if args else None
        if _type(co) is not code_type:
            return
        file = co.co_filename
        if _type(file) is not _str or not file.startswith("/"):
            return
        if cache_dirs and file.startswith(cache_dirs):
            generated[0] += 1
            snapshot("generated", {"file": file, "count": generated[0]})
            return
        if co.co_name != "<module>" or file == code or file.startswith(trusted) or file.startswith(torch_dir):
            return
        if file not in seen_modules:
            seen_modules.add(file)
            send("module", {"file": file, **origin()})

    def on_import(args: tuple[Any, ...]) -> None:
        path: Any = args[2] if _len(args) > 2 else None
        if _type(path) is not _list:
            return
        for entry in path:
            if _type(entry) is not _str or not entry or entry in seen_paths:
                continue
            seen_paths.add(entry)
            if entry != code_dir and not (entry.rstrip("/") + "/").startswith(trusted):
                send("sys.path", {"entry": entry})

    def on_program(event: str, args: tuple[Any, ...]) -> None:
        argv: list[Any] = []
        if event == "subprocess.Popen" and _len(args) > 1:
            given = args[1]
            argv = [describe(x) for x in (given if _type(given) in (_list, _tuple) else [given])][:40]
            if args[0] is not None and (not argv or args[0] != argv[0]):
                argv.insert(0, describe(args[0]))
        elif event == "os.system" and args:
            argv = ["sh", "-c", describe(args[0])]
        elif event in ("os.exec", "os.posix_spawn") and _len(args) > 1:
            given = args[1]
            argv = [describe(x) for x in (given if _type(given) in (_list, _tuple) else [given])][:40]
        elif event == "os.spawn" and _len(args) > 2:
            given = args[2]
            argv = [describe(x) for x in (given if _type(given) in (_list, _tuple) else [given])][:40]
        send("program", {"event": event, "argv": argv, **origin()})

    def on_setattr(args: tuple[Any, ...]) -> None:
        obj = args[0] if args else None
        t = _type(obj)
        owner: Any = None
        if t is function_type:
            owner = _getattribute(obj, "__module__")
        else:
            for c in mro_of(t):
                if c is _type:
                    owner = module_of(obj)
                    break
        if _type(owner) is _str and owner.startswith(("torch", "triton")):
            where = origin()
            if where["by"] == "record":
                attr = args[1] if _len(args) > 1 and _type(args[1]) is _str else "?"
                send("patch", {"target": owner + ":" + attr, **where})

    program_events = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty")
    tamper_events = (
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "sys._current_frames",
        "sys.settrace",
        "sys.setprofile",
        "sys.addaudithook",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.addressof",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "ctypes.cdata",
        "ctypes.cdata/buffer",
    )
    env_events = ("os.putenv", "os.unsetenv")
    watched = frozenset(
        ("open", "exec", "import", "mmap.__new__", "object.__setattr__", *program_events, *tamper_events, *env_events)
    )

    def on_event(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            on_open(args)
        elif event == "exec":
            on_exec(args)
        elif event == "import":
            on_import(args)
        elif event == "mmap.__new__":
            fileno = args[0] if args else -1
            if _type(fileno) is _int and fileno >= 0:
                st = _fstat(fileno)
                name = data_files.get((st.st_dev, st.st_ino))
                if name is not None and (name, "mmap") not in seen_data:
                    seen_data.add((name, "mmap"))
                    send("data", {"file": name, "mode": "mmap"})
        elif event == "object.__setattr__":
            on_setattr(args)
        elif event in program_events:
            on_program(event, args)
        elif event in tamper_events:
            where = origin()
            if where["by"] == "record" or not event.startswith("ctypes."):  # torch loads its kernels with ctypes
                send("tamper", {"what": "used " + event, **where})
        elif event in env_events:
            var: Any = args[0] if args else None
            if _type(var) is _bytes:
                var = var.decode("utf-8", "replace")
            if _type(var) is _str and var.startswith(env_prefixes):
                value: Any = args[1] if _len(args) > 1 else None
                if _type(value) is _bytes:
                    value = value.decode("utf-8", "replace")
                send("env", {"event": event, "name": var, "value": describe(value), **origin()})
        elif event == prefix + "compile":
            arguments = args[0] if args and _type(args[0]) is _dict else {}
            snapshot("compile", {"arguments": arguments, **origin()})
        elif event == prefix + "exit":
            status = args[0] if args and _type(args[0]) is _int else -1
            snapshot("exit", {"status": status, "generated": generated[0]})
            send("end", {"status": status})

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event not in watched and not event.startswith(prefix):
            return
        try:
            on_event(event, args)
        except _Exception as e:  # the probe never breaks the run: it says what it could not record
            try:
                send("probe-error", {"event": event, "error": _str(_type(e).__name__)})
            except _Exception:
                _kill(pid, 9)

    # Dynamo would trace the hook when an audited event fires inside a compiled frame: it skips this code.
    _skip_in_dynamo([hook, describe, to_json, read_config])
    _wrap_compile(torch, sys.audit, describe)
    _wrap_exit(sys.audit)
    send("start", {"rank": rank, "code": code, "data_files": sorted(data_files.values()), "env": _compile_env(env0)})
    snapshot("start", {})
    sys.addaudithook(hook)


def _skip_in_dynamo(functions: list[Callable[..., Any]]) -> None:
    """Mark the code of ``functions`` (and every function they call) as never traced by torch's dynamo."""
    import types

    try:
        from torch._C._dynamo import eval_frame
    except ImportError:
        return
    setter = getattr(eval_frame, "set_code_exec_strategy", None)
    if setter is None:  # torch < 2.6: no per-code strategy
        return
    skip = eval_frame._FrameExecStrategy(eval_frame._FrameAction.SKIP, eval_frame._FrameAction.SKIP)
    stack: list[Any] = list(functions)
    done: set[int] = set()
    while stack:
        item = stack.pop()
        if id(item) in done:
            continue
        done.add(id(item))
        if isinstance(item, types.CodeType):
            setter(item, skip)
            stack += [c for c in item.co_consts if isinstance(c, types.CodeType)]
        elif isinstance(item, types.FunctionType):
            stack.append(item.__code__)
            stack += [cell.cell_contents for cell in item.__closure__ or () if _filled(cell)]


def _filled(cell: Any) -> bool:
    try:
        return cell.cell_contents is not None
    except ValueError:
        return False


def _wrap_compile(torch: Any, audit: Callable[..., None], describe: Callable[[Any], Any]) -> None:
    """torch.compile (and through it Module.compile and torch.compiler.compile) reports its arguments first."""
    import functools

    original, event = torch.compile, EVENT_PREFIX + "compile"
    _len, _dict = len, dict

    @functools.wraps(original)
    def compile(*args: Any, **kwargs: Any) -> Any:
        named = {k: describe(v) for k, v in kwargs.items() if k != "model"}
        if _len(args) > 1:
            named["positional"] = [describe(a) for a in args[1:]]
        audit(event, _dict(named))
        return original(*args, **kwargs)

    torch.compile = compile
    _skip_in_dynamo([compile])


def _wrap_exit(audit: Callable[..., None]) -> None:
    """os._exit (how train_gpt.py leaves) takes the final snapshot first."""
    original, event = os._exit, EVENT_PREFIX + "exit"

    def _exit(status: int) -> None:
        audit(event, status)
        original(status)

    os._exit = _exit  # type: ignore[assignment]


if __name__ == "__main__":
    sys.exit(main())
