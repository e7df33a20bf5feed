"""The ``compile-flags`` rule's reading of a run's code: does it change how inductor compiles?

RULES.md: the code sets no ``torch._inductor.config`` option and passes no extra ``torch.compile``
mode/options. Python lets a program reach any object through a computed name, so the rule reads what
can be read and fails what cannot: a trainer has no reason to compute the names of torch's settings.

The code is parsed with ``ast`` (a syntax tree; nothing runs), with the grammar of the Python version
its log names, and walked once without recursion. Each finding is a ``Finding``: its line, what it is
(with the line's text), and its kind:

- ``FLAG``: the code sets a compiler option by a route this rule reads, which is what the public
  speedrun's rule forbids ("any extra ``torch._inductor.config`` or ``torch.compile`` flags"): an inductor
  config option written (directly, through an alias, ``setattr``, ``config.patch(...)``,
  ``config_patches=``), a ``mode=``, ``options=`` or custom ``backend=`` of ``torch.compile`` (also through
  ``partial``), an inductor environment variable set for this process or a child (removing one, or
  ``del`` of an option, restores a default: not a FLAG). ``option`` names what it sets, so that a caller
  can exempt ``coordinate_descent_tuning`` where a track allows it: the option (``coordinate_descent_tuning``,
  ``triton.cudagraphs``; the one key of a literal ``options=``/``config_patches=``/``patch`` dict), the
  argument with its literal value (``mode=max-autotune``, ``backend=cudagraphs``), or, where the code does
  not name one option, the argument's name (``mode``, ``options``, ``patch``, ``config_patches``); an
  environment variable ``TORCHINDUCTOR_X`` names option ``x`` (inductor's convention), another names itself;
- ``UNREADABLE``: everything else this rule refuses because it cannot show the code complies (code it
  cannot parse or read, dynamic code and reflection, modules nobody reads, inductor's internals used
  other than to set an option, programs started, strings naming a mode or an inductor variable, torch's
  compiler machinery beyond its harmless functions). Setting a ``torch._dynamo`` option is not a FLAG:
  this rule itself allows it by name, so the findings on dynamo's config are about how it is reached.

The findings of one input are kept in the process and on disk (``find_compile_flags``): a tree of records
is read once, not on every verify.

Fails:
- code that does not parse (it is not what ran), code over MAX_CODE_CHARS (its syntax tree would take
  GBs); code that declares an encoding other than UTF-8 (PEP 263's ``# -*- coding: utf-7 -*-``): Python decodes the
  file with it, not as the UTF-8 text of the log that this rule, the diff and every reader see (in UTF-7,
  ``# +AAo-x = 1`` is a comment that Python reads as a second line of code), and the code as Python decodes it is
  judged too, so that an option set there is a FLAG; code of a Python newer than the one judging is read with the judge's grammar (newer grammars
  only add syntax, so code that parses reads the same) and fails only where it uses syntax the judge
  does not know, with a message naming the Python to judge it with;
- ``torch._inductor`` in any form: importing it, reading or setting its config (``import ... as``,
  ``from ... import``, ``cfg = ...``, ``getattr``/``setattr`` with literal names are all followed),
  calling into it (``compile_fx(config_patches=...)``), and any ``config_patches=`` argument;
- ``torch.compile`` (or ``torch.compiler.compile``, or a module's ``.compile(...)``) with ``mode=``,
  ``options=``, a ``backend=`` other than "inductor"/"eager"/"aot_eager" (a custom backend can call
  inductor with settings of its own), or ``**`` arguments that are not a literal dict; ``torch.compile``
  used other than called or as a decorator (assigned, passed, wrapped in ``partial``): the rule could
  not see the arguments it ends up called with;
- the rest of torch's compiler machinery: ``torch._dynamo`` and ``torch.compiler`` but for a short list
  of harmless functions (``reset``, ``mark_dynamic``, ``disable``, ...), their config objects handed
  around or changed through calls (``.patch()``), and setting any attribute of a torch module but the
  options of ``torch.backends`` and of the dynamo/functorch/compiler configs;
- dynamic code and reflection: ``exec``, ``eval``, builtin ``compile``, ``__import__``, ``globals``,
  ``locals``, ``vars``, ``getattr``/``setattr``/``delattr`` used as values, ``setattr``/``delattr`` with a
  computed name, ``getattr`` with a computed name on a module, dunder and frame attributes that reach
  namespaces (``__dict__``, ``__globals__``, ``f_locals``, ...), ``sys.modules``, ``importlib``,
  ``pickle``, ``ctypes``, ``inspect`` and the like (also ``unittest.mock``, ``timeit``, ``pdb``, ``pydoc``,
  ``logging.config``: they run strings of code or reach objects by dotted names), ``sys.path``, star imports, and a module bound by ``import``
  handed around as a value;
- the environment: a name containing ``INDUCTOR`` (``TORCHINDUCTOR_*``; also when built from literal
  pieces) or one of inductor's few unprefixed variables, anywhere but in docstrings; writes to
  ``os.environ`` (``[k] =``, ``.update``, ``.setdefault``, ``putenv``) whose names are not literal; an
  ``env=`` argument whose names are not literal; ``os.environ`` handed to anything that may write it;
  the ``exec*e``/``spawn*e``/``posix_spawn`` calls that set a new process's environment;
- imports of code the log does not carry: a module that is not the standard library, a package of the
  record image (requirements.txt, and triton), Hugging Face's ``kernels`` (which the public rules allow)
  or a file appended to the log (a module the code writes and then imports, ``pynvml``, which the image
  lacks), and relative imports; loading code from files:
  ``torch.hub``, and ``torch.load``/``numpy.load`` but with weights_only=True / allow_pickle=False (the
  defaults): unpickling runs code;
- starting a program (``subprocess``, ``asyncio``, ``pty``) other than nvidia-smi and git, named literally:
  any other runs code of its own the log does not carry (a Python, a shell, ``env``, ``torchrun``, a binary);
- the strings of torch.compile's modes ("max-autotune", "reduce-overhead", ...) anywhere but in docstrings;
- names a reader cannot tell from other names (``_check_characters``): a name holding a character that renders as
  nothing (``ㅤ = 1``: Python takes the Hangul filler for a letter; ``lr`` followed by a variation selector is a name
  of its own that shows as ``lr``), a name spelled with letters that look like ASCII letters that reads as an ASCII
  name or mixes them with Latin letters (``tоrch``, a Cyrillic ``о``); and a bidirectional control anywhere (it
  reorders how the line shows). Names of another script that read as no ASCII name (``σ``, ``α``, a Russian word)
  are fine, and so are invisible characters inside strings and comments, which the code diff shows as escapes.

Allowed: ``torch.compile(fn)``, ``@torch.compile``, ``dynamic=``, ``fullgraph=``, ``disable=``;
``getattr(obj, "weight")`` and ``getattr(args, name)`` on objects that are not modules; reading the
environment; literal-name writes of variables that are not inductor's.

What this cannot see, by design: a module object reached by a path the rule does not know and handed
to a function as an argument, which then sets attributes of its parameter. Re-running the record is
what catches that (and every other edit of a log's text).
"""

from __future__ import annotations

import ast
import codecs
import functools
import gc
import hashlib
import io
import json
import re
import sys
import threading
import tokenize
import unicodedata
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tools.common import text as common_text
from tools.common.cache import Store, salt_of
from tools.common.text import is_hidden, visible

# The longest trainer of the public corpus is ~3,500 lines (~170 KB). Real code has ~0.16 syntax nodes
# per character (train_gpt.py: 15,000 in 91 KB), code written to be costly ~1.2 (`f(1)` lines): the
# characters bound ast.parse (~400 MB, ~1.5 s at the cap), the nodes bound the walk over its tree.
MAX_CODE_CHARS: Final = 512 * 1024
MAX_SYNTAX_NODES: Final = 150_000
MAX_FINDINGS: Final = 50

_COMPILE_FUNCS = frozenset({"torch.compile", "torch.compiler.compile"})
_BACKENDS_OK = frozenset({"inductor", "eager", "aot_eager"})
_COMPILE_MODES = ("max-autotune", "reduce-overhead")  # "max-autotune-no-cudagraphs" contains the first
# Inductor reads these without its TORCHINDUCTOR_ prefix (torch/_inductor/config.py, torch 2.13).
_INDUCTOR_ENV_EXTRA = (
    "ENABLE_PERSISTENT_TMA_MATMUL",
    "ENABLE_TEMPLATE_TMA_STORE",
    "ENABLE_TMA_LOAD_FOR_TEMPLATE_EPILOGUE",
    "CUTLASS_EPILOGUE_FUSION",
    "CUTEDSL_ENABLE_AUTOTUNING",
    "LOG_AUTOTUNE_RESULTS",
)
# A string _check_string may flag contains one of these (a fast test for the many that it does not flag).
_NOTABLE_STRING = re.compile("|".join(re.escape(t) for t in ("INDUCTOR", *_INDUCTOR_ENV_EXTRA, *_COMPILE_MODES)))
# Config objects whose options a record may read and set by literal name: none of them is inductor's.
_SETTABLE_CONFIGS = ("torch._dynamo.config", "torch._functorch.config", "torch.compiler.config")
_SETTABLE_PREFIXES = ("torch.backends.", *(c + "." for c in _SETTABLE_CONFIGS))
_DYNAMO_OK = frozenset(
    "reset mark_dynamic maybe_mark_dynamic mark_static mark_static_address disable allow_in_graph graph_break "
    "is_compiling".split()
)
_COMPILER_OK = frozenset(
    "disable is_compiling is_dynamo_compiling is_exporting allow_in_graph assume_constant_result "
    "cudagraph_mark_step_begin reset nested_compile_region substitute_in_graph".split()
)
# Modules (and their members) that load or run code, or reach objects by computed names.
_BANNED = tuple(
    "importlib imp runpy pkgutil zipimport ctypes _ctypes cffi pickle _pickle cPickle marshal dill "
    "cloudpickle shelve builtins __builtin__ code codeop inspect posix nt _posixsubprocess sys.modules "
    "sys._getframe sys._current_frames sys.meta_path sys.path sys.path_hooks sys.settrace sys.setprofile "
    "sys.addaudithook gc.get_objects gc.get_referrers gc.get_referents types.FunctionType "
    "types.LambdaType types.CodeType operator.attrgetter operator.methodcaller torch.utils.cpp_extension "
    "torch.ops.load_library torch.classes.load_library torch.package torch.hub pandas.read_pickle "
    # ... and the standard library's other ways to run a string of code or reach an object by its dotted
    # name: mock.patch("torch._inductor.config.x", v), timeit.timeit("code"), pdb.run("code"), ...
    "unittest.mock mock timeit pdb bdb profile cProfile trace doctest pydoc logging.config numpy.ctypeslib "
    "torch._utils._import_dotted_name torch.distributed.run torch.distributed.launch".split()
)
_DYNAMIC_BUILTINS = frozenset({"exec", "eval", "compile", "__import__", "globals", "locals", "vars", "breakpoint"})
_ATTR_BUILTINS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
# Attributes that reach namespaces (a module's globals, a frame's locals) or rebuild functions.
_DENIED_ATTRS = frozenset(
    "__dict__ __globals__ __builtins__ __subclasses__ __mro__ __bases__ __base__ __getattribute__ __getattr__ "
    "__setattr__ __delattr__ __code__ __closure__ __import__ __loader__ __spec__ __self__ __func__ __wrapped__ "
    "__defaults__ __kwdefaults__ __reduce__ __reduce_ex__ __setstate__ __objclass__ "
    "f_globals f_locals f_builtins f_back f_code gi_frame gi_code cr_frame cr_code ag_frame tb_frame "
    "co_consts co_names".split()
)
_DENIED_NAMES = frozenset({"__builtins__", "__import__", "__loader__", "__spec__", "__dict__"})
# Roots taken as the modules of that name even without an import (a snippet, or a name from elsewhere).
_KNOWN_ROOTS = frozenset({"torch", "os", "sys"})
_ENV_OBJECTS = ("os.environ", "os.environb")
_ENV_READ_METHODS = frozenset({"get", "copy", "items", "keys", "values", "__contains__", "__getitem__", "__len__"})
_ENV_SPAWN = re.compile(r"os\.(?:exec\w*e|spawn\w*e|posix_spawnp?)$")
# Calls that only read a mapping handed to them.
_READING_BUILTINS = frozenset(
    {"dict", "sorted", "list", "len", "set", "tuple", "str", "repr", "print", "iter", "any", "all", "frozenset"}
)
_INSPECTING_BUILTINS = _READING_BUILTINS | {"hasattr", "isinstance", "issubclass", "type", "id", "callable"}
# Ways to run a command line or another Python, whose settings this log's code does not show.
_SHELL_OR_PYTHON = (
    "os.system",
    "os.popen",
    "sys.executable",
    *(f"os.{f}" for f in "execl execlp execv execvp spawnl spawnlp spawnv spawnvp posix_spawn posix_spawnp".split()),
)
# Modules that other modules import and so re-export as attributes (``posixpath.os``, ``torch.sys``,
# ``collections._sys``): a path through one of them is judged as the module itself.
_REEXPORTED = frozenset(
    "os sys builtins posix nt importlib imp runpy ctypes pickle marshal inspect gc types operator code codeop".split()
)
# What a record's code may import besides the standard library and the files appended to its log: the
# packages of the image records run in (requirements.txt, and what torch requires: triton, sympy, ...; on
# Linux torch's CUDA build also brings cuda-bindings (``cuda``) and the nvidia-* libraries (``nvidia``)).
# Any other module is code this rule never reads, such as a module the code writes and then imports.
_RECORD_PACKAGES = frozenset(
    "torch triton numpy huggingface_hub httpx2 tiktoken regex pyarrow tqdm safetensors scipy pandas matplotlib "
    "yaml jinja2 typing_extensions filelock sympy mpmath networkx fsspec cuda nvidia".split()
)
# Packages outside the image that the public speedrun's rules allow and its records use: Hugging Face's
# ``kernels`` (``get_kernel("org/repo")``, from track_1_short/2025-09-29_PolarExpress on). Not ``pynvml``
# (NVML's bindings, imported by four public medium records to print GPU temperatures): neither requirements.txt
# nor torch 2.13.0's Linux wheel (its Requires-Dist: cuda-toolkit, cuda-bindings, nvidia-*, triton, ...)
# installs nvidia-ml-py, so in the image ``import pynvml`` finds only a pynvml.py the run brings itself;
# nvidia-smi, which a record may start, reads the same.
_PUBLIC_PACKAGES = frozenset({"kernels"})
# Loaders that unpickle (run code from a file the log does not carry) unless a keyword says not to: the
# keyword and the one literal value that keeps them safe (torch.load's default is weights_only=True); past
# their first two arguments (file, map_location / mmap_mode) come pickle_module / allow_pickle.
_UNPICKLERS = {
    "torch.load": ("weights_only", True),
    "torch.serialization.load": ("weights_only", True),
    "numpy.load": ("allow_pickle", False),
}
# Calls that start a program: its first argument (a command list, or a string) must name, as a literal,
# a program that is not a Python, a shell or a launcher, which would run code or settings the log lacks.
_PROCESS_STARTERS = frozenset(
    f"subprocess.{f}" for f in "run call check_call check_output Popen getoutput getstatusoutput".split()
) | {"asyncio.create_subprocess_exec", "asyncio.create_subprocess_shell", "pty.spawn"}
# The programs a record's code may start, to read the machine and the commit it runs: any other program is
# code the log does not carry (a Python, a shell, a launcher such as env or torchrun, a binary it wrote).
_PROGRAMS_OK = frozenset({"nvidia-smi", "git"})
_PROGRAM_DIRS = ("", "/usr/bin/", "/bin/", "/usr/local/bin/")
_MAX_ALIAS_ROUNDS = 16  # `a = torch.x; b = a; c = b ...`: real code needs two or three
_MAX_ALIASES = 32  # module paths one name may stand for


FLAG: Final = "flag"  # sets a compiler option: what the public rule forbids
UNREADABLE: Final = "unreadable"  # code this rule cannot show to comply
KINDS: Final = (FLAG, UNREADABLE)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the rule refuses: its line (0: the whole code), what it is (with the line's text), its kind
    (FLAG or UNREADABLE) and, for a FLAG, the option it sets when the code names it."""

    line: int
    what: str
    kind: str
    option: str | None = None


@dataclass(eq=False)
class _Scope:
    """One Python scope (module, class, function, comprehension) and the names bound in it."""

    parent: _Scope | None  # where a name not bound here is looked up (functions skip class scopes, as Python does)
    is_class: bool = False
    outer: _Scope | None = None  # the scope a function's defaults and decorators are evaluated in
    bound: set[str] = field(default_factory=set)
    alias: dict[str, set[str]] = field(default_factory=dict)  # name -> the dotted module paths it is bound to
    modules: set[str] = field(default_factory=set)  # names bound by `import X` (always a module)
    globals: set[str] = field(default_factory=set)
    nonlocals: set[str] = field(default_factory=set)
    resolved: dict[str, tuple[_Scope | None, set[str]]] = field(default_factory=dict)  # _resolve's answers here

    def lookup_parent(self) -> _Scope | None:
        """The scope a function defined here looks names up in next."""
        s: _Scope | None = self
        while s is not None and s.is_class:
            s = s.parent
        return s


@dataclass
class _Scan:
    lines: list[str]
    module_node: ast.AST
    module: _Scope
    current: _Scope  # the scope of the node being judged
    inner: set[int] = field(default_factory=set)  # ids of nodes judged as part of an enclosing chain
    handled: set[int] = field(default_factory=set)  # ids of dunder attributes already judged
    folded: dict[int, str | None] = field(default_factory=dict)  # _literal_str of BinOp nodes already seen
    found: list[Finding] = field(default_factory=list)
    local_modules: frozenset[str] = frozenset()  # the modules whose code the log carries (appended files)
    too_deep: set[int] = field(default_factory=set)  # ids of the pieces of an expression too deep to fold
    bound_all: bool = False  # every name is bound: _resolve may keep its answers (not while aliases are bound)


def find_compile_flags(
    source: str, python_version: str | None = None, local_modules: Iterable[str] = (), *, cached: bool = True
) -> list[Finding]:
    """Every forbidden or unreadable compile setting in ``source``, sorted by line and text (line 0: the whole
    code). ``python_version`` is what the log names (``3.12.3``); None: the running Python's.
    ``local_modules``: the modules whose code comes with ``source`` (the files appended to the log).

    The answer for one input is kept in this process (the last MEMO_ENTRIES) and in the on-disk cache
    (tools/common/cache.py, namespace ``compile-flags``) under the sha256 of the input, the judging Python and this
    module's source; ``cached=False`` reads and writes neither."""
    if not source.strip():
        return []
    if len(source) > MAX_CODE_CHARS:
        return [
            Finding(
                0,
                f"the code is over {MAX_CODE_CHARS:,} characters, more than this rule reads (a trainer is ~100 KB): "
                "keep the record's code to the training script",
                UNREADABLE,
            )
        ]
    grammar, newer = _grammar(python_version)
    local = frozenset(local_modules)
    if not cached:
        return _find(source, grammar, newer, local)
    key = _input_key(source, grammar, newer, local)
    with _MEMO_LOCK:
        found = _MEMO.get(key)
        if found is not None:
            _MEMO.move_to_end(key)
            return list(found)
    salt = _salt()
    store = Store(CACHE_NAMESPACE, salt) if salt else None  # no salt, no disk: an entry must name its code
    found = _decode(store.read(key, ".json")) if store is not None else None
    if found is None:
        found = tuple(_find(source, grammar, newer, local))
        if store is not None:
            store.write(key, ".json", _encode(found))
    with _MEMO_LOCK:
        _MEMO[key] = found
        _MEMO.move_to_end(key)
        while len(_MEMO) > MEMO_ENTRIES:
            _MEMO.popitem(last=False)
    return list(found)


CACHE_NAMESPACE: Final = "compile-flags"
MEMO_ENTRIES: Final = 256  # inputs whose findings this process keeps (a tree has ~170 distinct ones)
_MEMO: OrderedDict[str, tuple[Finding, ...]] = OrderedDict()
_MEMO_LOCK = threading.Lock()
_SALT: list[str] = []  # the sha256 of this module's source, computed once ("" if it cannot be read)
_ENTRY_VERSION: Final = 2  # 2: string folding bounded by MAX_FOLD_DEPTH
_MAX_ENTRY_BYTES: Final = 1 << 20  # an entry holds at most MAX_FINDINGS + 1 findings of a few hundred bytes


def clear_memo() -> None:
    """Forget the findings kept in this process (the on-disk cache is left as it is)."""
    with _MEMO_LOCK:
        _MEMO.clear()


def _salt() -> str:
    if not _SALT:
        try:
            # and tools/common/text.py: which characters render as nothing (is_hidden) is part of the findings
            _SALT.append(salt_of([Path(__file__), Path(common_text.__file__)]))
        except OSError:
            _SALT.append("")
    return _SALT[0]


def _input_key(source: str, grammar: tuple[int, int], newer: tuple[int, int] | None, local: frozenset[str]) -> str:
    """The sha256 of everything the findings depend on but this module's code (the store's salt): the judging
    Python (its grammar and its standard library's names), the grammar read with, the log's newer Python,
    the local modules and the code."""
    head = json.dumps([_ENTRY_VERSION, sys.version, grammar, newer, sorted(local)])
    h = hashlib.sha256(head.encode())
    h.update(b"\0")
    h.update(source.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _encode(found: Iterable[Finding]) -> bytes:
    return json.dumps(
        {"version": _ENTRY_VERSION, "findings": [[f.line, f.what, f.kind, f.option] for f in found]}
    ).encode()


def _decode(data: bytes | None) -> tuple[Finding, ...] | None:
    """The findings of a cache entry; None (a miss) for one that is absent, too large, or not what _encode writes."""
    if data is None or len(data) > _MAX_ENTRY_BYTES:
        return None
    try:
        entry = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict) or entry.get("version") != _ENTRY_VERSION:
        return None
    items = entry.get("findings")
    if not isinstance(items, list) or len(items) > MAX_FINDINGS + 1:
        return None
    found: list[Finding] = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 4):
            return None
        line, what, kind, option = item
        if not (
            type(line) is int
            and line >= 0
            and isinstance(what, str)
            and kind in KINDS
            and (option is None or (isinstance(option, str) and kind == FLAG))
        ):
            return None
        found.append(Finding(line, what, kind, option))
    return tuple(found)


def _find(source: str, grammar: tuple[int, int], newer: tuple[int, int] | None, local: frozenset[str]) -> list[Finding]:
    """The findings of ``source``, read with ``grammar`` (uncached), with the cyclic garbage collector paused:
    a syntax tree is ~10 objects per node and holds no cycles, yet its allocation set off collections that
    scanned every live object again, a third of the time on the public tree (3.5 of 11.7 s)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        declared = _declared_encoding(source, grammar, newer, local)
        found = _read(source, grammar, newer, local)
        return _merged([*declared, *found]) if declared else found
    finally:
        if collecting:
            gc.enable()


# PEP 263: a comment in the first two lines that names an encoding ("# -*- coding: utf-7 -*-"; in the second line only
# after a blank or comment line) makes Python decode the file's bytes with it. A log holds the file as the UTF-8 text
# the trainer read (its own source, as UTF-8), which is what this rule, the code diff and every reader see: in UTF-7,
# "# note +AAo-x = 1" is a comment and a second line of code. tokenize.detect_encoding is the standard library's
# reading of the cookie, the tokenizer's own rules (the normal names: "utf-8-sig", "UTF8" and "latin-1" variants).
_UTF8 = frozenset({"utf-8", "utf-8-sig"})
_LINE_END = re.compile(r"\r\n|\r|\n")
_COOKIE_RE = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)", re.ASCII)


def _declared_encoding(
    source: str, grammar: tuple[int, int], newer: tuple[int, int] | None, local: frozenset[str]
) -> list[Finding]:
    """An encoding declaration other than UTF-8 (UNREADABLE: the file Python decodes is not the text of the log), and
    the findings of the code as Python decodes it, which may set what the text shown hides; [] for none or UTF-8."""
    first_two = _LINE_END.split(source, 2)[:2]
    if not any("coding" in line for line in first_two):
        return []
    line = 1 if _COOKIE_RE.match(first_two[0].removeprefix("\ufeff")) else 2
    shown = first_two[line - 1].strip()[:160] if line <= len(first_two) else ""
    head = "".join(f"{ln}\n" for ln in first_two).encode("utf-8", "surrogatepass")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(head).readline)
    except SyntaxError as e:  # an encoding Python does not know, or one that contradicts a byte order mark
        return [
            Finding(
                line,
                f"declares an encoding Python refuses ({e.msg}): Python does not run this file, so it is not the code "
                f"that ran: {shown}",
                UNREADABLE,
            )
        ]
    try:
        codec = codecs.lookup(encoding).name  # "UTF8", "u8": Python's utf-8 codec, the log's own reading
        decoded = source.encode("utf-8", "surrogatepass").decode(encoding)
    except Exception as e:  # a codec that is no text encoding (LookupError), bytes it cannot decode (UnicodeError)
        return [
            Finding(
                line,
                f"declares the encoding {encoding}, in which Python cannot decode this file ({type(e).__name__}): "
                f"Python does not run it, so it is not the code that ran: {shown}",
                UNREADABLE,
            )
        ]
    if codec in _UTF8:
        return []
    why = (
        f"declares the encoding {encoding} (PEP 263): Python decodes this file's bytes as {encoding}, not as the UTF-8 "
        "text this log shows; a record's code is UTF-8"
    )
    if decoded == source:
        return [Finding(line, f"{why} (this code reads the same in both: remove the line): {shown}", UNREADABLE)]
    found = [Finding(line, f"{why}: Python runs other code than this rule and every reader see: {shown}", UNREADABLE)]
    if len(decoded) > MAX_CODE_CHARS:  # one byte a character (latin-1): refused above, not read again
        return found
    for f in _read(decoded, grammar, newer, local):
        where = f"its line {f.line}: " if f.line else ""
        found.append(Finding(line, f"in the code as Python decodes it ({encoding}), {where}{f.what}", f.kind, f.option))
    return found


def _read(source: str, grammar: tuple[int, int], newer: tuple[int, int] | None, local: frozenset[str]) -> list[Finding]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old code has invalid escapes ('\s'): not our concern here
            tree = ast.parse(source, feature_version=grammar)
    except SyntaxError as e:
        where = f"Python {grammar[0]}.{grammar[1]}"
        if newer is not None and (around := _read_around(source, grammar, newer, local, e)) is not None:
            return around
        if newer is not None:
            return [
                Finding(
                    e.lineno or 0,
                    f"does not parse as {where} ({e.msg}), the Python judging it; the log names Python "
                    f"{newer[0]}.{newer[1]}, whose newer syntax this judge cannot read: judge it with Python >= "
                    f"{newer[0]}.{newer[1]}",
                    UNREADABLE,
                )
            ]
        return [
            Finding(
                e.lineno or 0,
                f"does not parse as {where} ({e.msg}): code that does not parse is not the code that ran, and "
                "this rule judges only code it can read",
                UNREADABLE,
            )
        ]
    except (ValueError, RecursionError, MemoryError) as e:
        return [
            Finding(
                0, f"cannot be read as Python ({type(e).__name__}): this rule judges only code it can read", UNREADABLE
            )
        ]
    return _judge(tree, source, local)


MAX_LINES_NOT_READ: Final = 20  # lines of newer syntax read around before the whole code is given up


def _read_around(
    source: str, grammar: tuple[int, int], newer: tuple[int, int], local: frozenset[str], first: SyntaxError
) -> list[Finding] | None:
    """The findings of code of a newer Python than the judge's, read around the lines of newer syntax: each such
    line (a PEP 701 f-string, say) is left out, as a statement that does nothing, and is itself an UNREADABLE
    finding; the rest is judged as usual, so an option set elsewhere is still seen. None when the lines cannot be
    left out one by one (a line inside a bracket, more than MAX_LINES_NOT_READ of them)."""
    lines = source.split("\n")
    left_out: list[int] = []
    error: SyntaxError | None = first
    while error is not None:
        n = error.lineno
        if n is None or not 1 <= n <= len(lines) or n in left_out or len(left_out) >= MAX_LINES_NOT_READ:
            return None
        line = lines[n - 1]
        lines[n - 1] = line[: len(line) - len(line.lstrip())] + "..."
        left_out.append(n)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse("\n".join(lines), feature_version=grammar)
        except SyntaxError as e:
            error = e
            continue
        except (ValueError, RecursionError, MemoryError):
            return None
        error = None
    version = f"{newer[0]}.{newer[1]}"
    skipped = [
        Finding(
            n,
            f"does not parse as Python {grammar[0]}.{grammar[1]}, the Python judging it; the log names Python "
            f"{version}, whose newer syntax this judge cannot read: the line is left out and the rest of the code "
            f"judged (judge it with Python >= {version} to read it): {_text_of(source, n)}",
            UNREADABLE,
        )
        for n in sorted(left_out)
    ]
    return skipped + _judge(tree, source, local)


def _text_of(source: str, line: int) -> str:
    text = _LINE_END.split(source, line)[line - 1] if line >= 1 else ""
    return text.strip()[:160]


def _grammar(python_version: str | None) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """(the grammar to parse with, the log's Python version when it is newer than the judge's)."""
    running = (sys.version_info[0], sys.version_info[1])
    m = re.match(r"(\d{1,2})\.(\d{1,3})", python_version or "")
    if m is None:
        return running, None
    named = (int(m.group(1)), int(m.group(2)))
    if named > running:
        return running, named
    return max(named, (3, 7)), None  # ast's lowest feature_version; older code parses with it or fails


_Node = tuple[ast.AST, ast.AST | None, str, _Scope]
_Problem = tuple[str, str, str | None]  # (what, its kind, the option it sets)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
# Node types that bind names or open scopes, and the ones _visit judges: the walk skips the rest cheaply.
_BINDING = frozenset(
    {ast.Name, ast.arg, ast.Import, ast.ImportFrom, ast.Global, ast.Nonlocal, ast.ExceptHandler, ast.MatchAs}
    | {ast.MatchStar, ast.Assign, ast.AnnAssign, ast.NamedExpr, ast.ClassDef, *_FUNCTIONS, *_COMPREHENSIONS}
)
_VISITED = frozenset(
    {ast.Import, ast.ImportFrom, ast.Call, ast.Constant, ast.BinOp, ast.JoinedStr, ast.Attribute, ast.Name}
)
# Fields that never hold a syntax node (identifiers, numbers, a constant's value and kind), and ctx (a load or
# store marker the walk neither follows nor counts); the fields holding operators (leaf nodes).
_LEAF_FIELDS = frozenset(
    {"ctx", "id", "attr", "arg", "asname", "module", "level", "conversion", "is_async", "simple", "kind"}
    | {"type_comment", "tag"}  # not "name": an identifier, but a node in 3.12's TypeAlias
)
_OPERATOR_FIELDS = frozenset({"op", "ops"})


def _judge(tree: ast.AST, source: str, local_modules: frozenset[str] = frozenset()) -> list[Finding]:
    module = _Scope(None)
    # the lines as Python counts them (str.splitlines() also splits at U+2028, \x0c, ...: a finding's line, shown with
    # its text, would be another one)
    scan = _Scan(_LINE_END.split(source), tree, module, module, local_modules=local_modules)
    walked = _walk(tree, module)
    if walked is None:
        return [
            Finding(
                0,
                f"the code has over {MAX_SYNTAX_NODES:,} syntax nodes (a trainer has ~30,000): more than this rule reads",
                UNREADABLE,
            )
        ]
    nodes, assigns, scopes = walked
    _bind_aliases(scan, assigns, scopes)
    scan.bound_all = True  # the bindings are final: resolve each name once per scope
    visitors = _VISITORS
    too_deep = False
    for node, parent, name, scope in nodes:
        scan.current = scope
        try:
            visitors[type(node)](scan, node, parent, name)
        except RecursionError:  # a string built from thousands of nested pieces: that one, not the rest
            too_deep = True
            # its nested pieces would fail again, each at a cost of the recursion limit: they are skipped
            scan.too_deep.update(id(n) for n in ast.walk(node) if type(n) in (ast.BinOp, ast.JoinedStr))
    if too_deep:
        _flag(scan, tree, "nests expressions too deeply to be read: this rule judges only code it can read", UNREADABLE)
    if not source.isascii():
        _check_characters(scan, tree, source)
    return _merged(scan.found)


# --- characters a reader cannot see as Python reads them -----------------------------------------------------------

# Bidirectional controls reorder how a line shows (Trojan Source, CVE-2021-42574): in a comment or a string they make
# the code a reader sees another order of tokens than the one Python reads.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")
# Letters that look like an ASCII letter in the fonts code is read in, but are other letters (Unicode's confusables.txt
# maps each to that ASCII letter): Cyrillic's and Greek's capitals and the Cyrillic lowercase that share Latin's
# glyphs, Greek and Armenian lowercase drawn alike, and Latin's own dotless i and j, script a and g. A name spelled
# with them reads as an ASCII name it is not. The full table (thousands of pairs) is not in the standard library; the
# letters left out are drawn differently enough to be told apart in code (Greek's α, σ, η, Cyrillic's и, л, ж).
_LOOK_ALIKES: Final = {
    **dict(zip("аеорсухѕіјһԁԛԝӏү", "aeopcyxsijhdqwly", strict=True)),  # Cyrillic lowercase
    **dict(zip("АВЕКМНОРСТУХЅІЈԚԜҮӀ", "ABEKMHOPCTYXSIJQWYI", strict=True)),  # Cyrillic capitals
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧονρ", "ABEZHIKMNOPTYXovp", strict=True)),  # Greek
    **dict(zip("օսհոցզ", "ouhngq", strict=True)),  # Armenian
    **dict(zip("ıȷɑɡɩ", "ijagi", strict=True)),  # Latin, but not ASCII
}
# The fields of a syntax node that hold identifiers (a dotted module path is split at its dots).
_IDENTIFIER_FIELDS = ("id", "attr", "arg", "name", "asname", "module", "names", "rest", "kwd_attrs")


def _check_characters(scan: _Scan, tree: ast.AST, source: str) -> None:
    """Names a reader cannot tell from others (UNREADABLE): a name holding a character that renders as nothing (a
    Hangul filler is a letter to Python: ``ㅤ = 1`` binds a name that shows as a blank; ``lr`` and ``lr`` with a
    variation selector are two names that look like one), a name spelled with look-alike letters that reads as an ASCII
    name or mixes them with Latin letters (``tоrch`` with a Cyrillic о); and a bidirectional control anywhere.
    Python reads names after NFKC normalisation, as ``ast`` gives them: fullwidth ``ｘ`` is ``x`` to it, not another
    name. The tree is walked only for code that holds such a character at all (no code of the public tree does)."""
    chars = {c for ch in set(_NON_ASCII.findall(source)) for c in unicodedata.normalize("NFKC", ch)}
    if chars & _BIDI:
        for n, line in enumerate(scan.lines, 1):
            if found := sorted(_BIDI.intersection(line)):
                names = ", ".join(_char_name(c) for c in found)
                what = (
                    f"holds {names}, which reorders how the line shows: a reader sees another order of the code than "
                    "the one Python reads (Trojan Source)"
                )
                scan.found.append(Finding(n, f"{what}: {line.strip()[:160]}", UNREADABLE))
    if not any(is_hidden(c) or c in _LOOK_ALIKES for c in chars):
        return
    for node in ast.walk(tree):
        for name in _identifiers(node):
            if name.isascii():
                continue
            hidden = [c for c in dict.fromkeys(name) if is_hidden(c)]
            if hidden:
                shown = "".join(c for c in name if not is_hidden(c))
                what = (
                    f"the name '{visible(name)}' holds {', '.join(_char_name(c) for c in hidden)}, which renders as "
                    f"nothing: it shows as {repr(shown) + ', a name it is not' if shown else 'nothing'}"
                )
                _flag(scan, node, what, UNREADABLE)
                continue
            alike = [c for c in dict.fromkeys(name) if c in _LOOK_ALIKES]
            if not alike:
                continue
            reads = "".join(_LOOK_ALIKES.get(c, c) for c in name)
            latin = any(c.isascii() and c.isalpha() or unicodedata.name(c, "").startswith("LATIN") for c in name)
            if reads.isascii() or latin:
                what = (
                    f"the name {name!r} is spelled with {', '.join(_char_name(c) for c in alike)}, look-alike "
                    f"letters: it reads as {reads!r}, a name it is not"
                )
                _flag(scan, node, what, UNREADABLE)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _identifiers(node: ast.AST) -> Iterator[str]:
    """The identifiers a node holds: names, attributes, parameters, keywords, imported names and module paths."""
    for field_name in _IDENTIFIER_FIELDS:
        value = getattr(node, field_name, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str):
                yield from item.split(".")


def _char_name(ch: str) -> str:
    return f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}"


def _merged(found: list[Finding]) -> list[Finding]:
    """One finding per (line, what), sorted by them, at most MAX_FINDINGS and a last one that counts the rest.
    Two findings of one text merge into a FLAG if either is one, naming their option if they name the same."""
    kinds: dict[tuple[int, str], tuple[str, str | None]] = {}
    for f in found:
        key = (f.line, f.what)
        seen = kinds.get(key)
        if seen is None or (seen[0] != FLAG and f.kind == FLAG):
            kinds[key] = (f.kind, f.option)
        elif f.kind == FLAG and seen[1] != f.option:
            kinds[key] = (FLAG, None)
    merged = [Finding(line, what, *kinds[(line, what)]) for line, what in sorted(kinds)]
    if len(merged) <= MAX_FINDINGS:
        return merged
    # one is enough to fail; thousands would flood the report. The last one is a FLAG if any it counts is.
    rest = merged[MAX_FINDINGS:]
    options = {f.option for f in rest if f.kind == FLAG}
    summary = f"and {len(rest):,} more findings like these"
    if not options:
        return [*merged[:MAX_FINDINGS], Finding(0, summary, UNREADABLE)]
    return [*merged[:MAX_FINDINGS], Finding(0, summary, FLAG, options.pop() if len(options) == 1 else None)]


def _walk(tree: ast.AST, module: _Scope) -> tuple[list[_Node], list[tuple[_Scope, str, ast.AST]], list[_Scope]] | None:
    """Every node that may be judged, in preorder, with its parent, field and scope, without recursion (a deep
    tree must not exhaust the stack); binds each scope's names on the way. Returns those nodes, the plain
    assignments ``(scope, name, value)`` that may alias a module, and the scopes; None past MAX_SYNTAX_NODES
    (every node counted, operators too, but not the load/store contexts).

    Left out, as _visit finds nothing in them: names being bound (but the denied ones), constants other than
    strings, docstrings, strings that name neither a mode nor an inductor variable, arithmetic but ``+``."""
    nodes: list[_Node] = []
    assigns: list[tuple[_Scope, str, ast.AST]] = []
    scopes = [module]
    stack: list[_Node] = [(tree, None, "", module)]
    plans = _PLANS
    count = 0
    name_type, constant_type, binop_type, add_type, load_type = ast.Name, ast.Constant, ast.BinOp, ast.Add, ast.Load
    expr_type, node_type = ast.Expr, ast.AST
    notable = _NOTABLE_STRING.search
    while stack:
        item = stack.pop()
        node, parent, name, scope = item
        count += 1
        kind = type(node)
        if kind is name_type:  # the commonest node, a leaf: inline
            if type(node.ctx) is load_type:  # type: ignore[attr-defined]
                nodes.append(item)
            else:
                scope.bound.add(node.id)  # type: ignore[attr-defined]
                if node.id in _DENIED_NAMES:  # type: ignore[attr-defined]
                    nodes.append(item)
            continue
        if kind is constant_type:  # a leaf too
            value = node.value  # type: ignore[attr-defined]
            if isinstance(value, str | bytes) and type(parent) is not expr_type:
                if notable(value if isinstance(value, str) else value.decode("latin-1")):
                    nodes.append(item)
            continue
        if count > MAX_SYNTAX_NODES:
            return None
        plan = plans.get(kind)
        if plan is None:
            plan = plans[kind] = _plan(kind)
        visit, binds, child_fields, operator_fields = plan
        if visit and (kind is not binop_type or type(node.op) is add_type):  # type: ignore[attr-defined]
            nodes.append(item)
        inner = None
        if binds:
            inner = _bind(node, scope, assigns)
            if inner is not None:
                scopes.append(inner)
        for child_field in operator_fields:  # operators: leaves without fields, counted but not walked
            value = getattr(node, child_field, None)
            count += len(value) if type(value) is list else value is not None
        child_scope = scope
        for child_field in child_fields:
            value = getattr(node, child_field, None)
            if value is None:
                continue
            if inner is not None or kind is ast.arguments:
                child_scope = _child_scope(node, child_field, scope, inner)
            if type(value) is list:
                stack.extend([(v, node, child_field, child_scope) for v in reversed(value) if isinstance(v, node_type)])
            elif isinstance(value, node_type):
                stack.append((value, node, child_field, child_scope))
    if count > MAX_SYNTAX_NODES:  # past it on the last leaves or operators
        return None
    return nodes, assigns, scopes


_Plan = tuple[bool, bool, tuple[str, ...], tuple[str, ...]]
_PLANS: dict[type, _Plan] = {}  # per node type: judged, binds, its fields that may hold nodes (in reverse), operators


def _plan(kind: type[ast.AST]) -> _Plan:
    fields = [f for f in reversed(kind._fields) if f not in _LEAF_FIELDS]
    return (
        kind in _VISITED,
        kind in _BINDING,
        tuple(f for f in fields if f not in _OPERATOR_FIELDS),
        tuple(f for f in fields if f in _OPERATOR_FIELDS),
    )


def _bind(node: ast.AST, scope: _Scope, assigns: list[tuple[_Scope, str, ast.AST]]) -> _Scope | None:
    """Record the names ``node`` binds in ``scope``; the new scope it opens, if any."""
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
        scope.bound.add(node.id)
    elif isinstance(node, ast.arg):
        scope.bound.add(node.arg)
    elif isinstance(node, ast.Import):
        for a in node.names:
            bound = a.asname or a.name.split(".")[0]
            scope.bound.add(bound)
            scope.alias.setdefault(bound, set()).add(a.name if a.asname else bound)
            scope.modules.add(bound)
    elif isinstance(node, ast.ImportFrom):
        base = "." * node.level + (node.module or "")
        for a in node.names:
            if a.name != "*":
                scope.bound.add(a.asname or a.name)
                scope.alias.setdefault(a.asname or a.name, set()).add(f"{base}.{a.name}" if base else a.name)
    elif isinstance(node, ast.Global):
        scope.globals.update(node.names)
    elif isinstance(node, ast.Nonlocal):
        scope.nonlocals.update(node.names)
    elif isinstance(node, ast.ExceptHandler) and node.name:
        scope.bound.add(node.name)
    elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
        scope.bound.add(node.name)
    elif isinstance(node, ast.Assign | ast.AnnAssign | ast.NamedExpr) and node.value is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            if isinstance(t, ast.Name):
                assigns.append((scope, t.id, node.value))
            elif isinstance(t, ast.Tuple | ast.List) and isinstance(node.value, ast.Tuple | ast.List):
                if len(t.elts) == len(node.value.elts):
                    for e, v in zip(t.elts, node.value.elts, strict=True):
                        if isinstance(e, ast.Name):
                            assigns.append((scope, e.id, v))
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        scope.bound.add(node.name)
    if isinstance(node, _FUNCTIONS) or isinstance(node, _COMPREHENSIONS):
        return _Scope(scope.lookup_parent(), outer=scope)
    if isinstance(node, ast.ClassDef):
        return _Scope(scope, is_class=True, outer=scope)
    return None


def _child_scope(node: ast.AST, child_field: str, scope: _Scope, inner: _Scope | None) -> _Scope:
    """The scope a child of ``node`` is evaluated in: a def's body and parameters in the def's own scope,
    its decorators, defaults, bases and annotations where the def stands."""
    if inner is not None:
        if isinstance(node, _COMPREHENSIONS) or child_field in ("body", "args", "type_params"):
            return inner
        return scope
    if isinstance(node, ast.arguments) and child_field in ("defaults", "kw_defaults") and scope.outer is not None:
        return scope.outer
    return scope


def _binding_scope(scope: _Scope, name: str, module: _Scope) -> _Scope:
    """The scope an assignment to ``name`` in ``scope`` binds it in (``global``/``nonlocal`` move it)."""
    if name in scope.globals:
        return module
    if name in scope.nonlocals and scope.parent is not None:
        s: _Scope | None = scope.parent
        while s is not None and name not in s.bound and s is not module:
            s = s.parent
        return s or module
    return scope


def _resolve(scan: _Scan, name: str) -> tuple[_Scope | None, set[str]]:
    """The scope that binds ``name`` as seen from the current scope (None: a builtin, or unbound) and the
    module paths it is bound to there (empty: a local object)."""
    if not scan.bound_all:
        return _lookup(scan, name)
    found = scan.current.resolved.get(name)
    if found is None:
        found = scan.current.resolved[name] = _lookup(scan, name)
    return found


def _lookup(scan: _Scan, name: str) -> tuple[_Scope | None, set[str]]:
    s: _Scope | None = scan.current
    while s is not None:
        if name in s.globals:
            s = scan.module
        elif name in s.nonlocals:
            s = s.parent
            continue
        if name in s.bound:
            return s, s.alias.get(name, set())
        s = s.parent
    return None, ({name} if name in _KNOWN_ROOTS else set())


def _bind_aliases(scan: _Scan, assigns: list[tuple[_Scope, str, ast.AST]], scopes: list[_Scope]) -> None:
    """Names bound to modules or their members by plain assignment (``F = torch.nn.functional``)."""
    for scope in scopes:
        for name in scope.globals | scope.nonlocals:  # their bindings belong to another scope
            if name in scope.bound:
                scope.bound.discard(name)
                target = _binding_scope(scope, name, scan.module)
                target.bound.add(name)
                for path in scope.alias.pop(name, set()):
                    target.alias.setdefault(name, set()).add(path)
    changed, rounds = True, 0
    while changed:  # `a = torch.x; b = a` binds b in the second round
        changed, rounds = False, rounds + 1
        if rounds > _MAX_ALIAS_ROUNDS:  # `x = x.parent` in a loop grows a path each round
            _flag(scan, scan.module_node, "binds module names through one another too deeply to follow", UNREADABLE)
            return
        for scope, name, value in assigns:
            found = _chain(value)
            if found is None:
                continue
            scan.current = scope
            target = _binding_scope(scope, name, scan.module)
            for path in _canonical(scan, found[0]):
                if path not in target.alias.setdefault(name, set()):
                    if len(target.alias[name]) == _MAX_ALIASES:
                        _flag(
                            scan,
                            scan.module_node,
                            "binds module names through one another too deeply to follow",
                            UNREADABLE,
                        )
                        return
                    target.alias[name].add(path)
                    changed = True
    scan.current = scan.module


def _is_builtin(scan: _Scan, name: str) -> bool:
    """``name`` is not bound by the code, as seen from the current scope: Python's builtin of that name."""
    scope, _ = _resolve(scan, name)
    return scope is None and name not in _KNOWN_ROOTS


def _literal_name(call: ast.Call) -> str | None:
    """The literal attribute name of ``getattr(obj, "name")``-like calls (folded if built from literals)."""
    return _literal_str(call.args[1]) if len(call.args) >= 2 else None


def _is_builtin_call(node: ast.AST, names: frozenset[str] | set[str]) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names


_GETATTR = frozenset({"getattr"})


def _chain(node: ast.AST) -> tuple[list[str], list[ast.AST]] | None:
    """``(["torch", "_inductor", "config"], inner nodes)`` for a chain of names, attributes and
    ``getattr(x, "literal")`` calls; None for any other expression."""
    parts: list[str] = []
    inner: list[ast.AST] = []
    while True:
        if isinstance(node, ast.Name):
            parts.append(node.id)
            return list(reversed(parts)), inner
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif _is_builtin_call(node, _GETATTR) and isinstance(node, ast.Call) and node.args:
            name = _literal_name(node)
            if name is None or node.keywords:
                return None
            parts.append(name)
            inner.append(node.func)
            node = node.args[0]
        else:
            return None
        inner.append(node)


def _canonical(scan: _Scan, parts: list[str]) -> list[str]:
    """The dotted paths a chain names when it starts at a module (through the names imports bound, as seen
    from the current scope); [] for a chain that starts at a local object (``self.x``, ``args.lr``)."""
    _, bases = _resolve(scan, parts[0])
    return sorted(".".join([b, *parts[1:]]) for b in bases)


# Pieces nested deeper than this in one string expression are not folded: the expression is unreadable. A fixed
# bound, not the interpreter's recursion limit, so that the verdict does not depend on who raised that limit (torch's
# compiler does, in the same process).
MAX_FOLD_DEPTH: Final = 400


def _literal_str(node: ast.AST, memo: dict[int, str | None] | None = None, depth: int = 0) -> str | None:
    """The value of a string literal, also one built from literal pieces (``"A" + "B"``, ``f"A{'B'}"``,
    ``"".join(["A", "B"])``); None when any piece is computed. ``memo`` keeps a chain of n pieces O(n)
    when every one of its sub-chains is folded too. RecursionError past MAX_FOLD_DEPTH nested pieces."""
    if depth > MAX_FOLD_DEPTH:
        raise RecursionError(f"a string expression nests more than {MAX_FOLD_DEPTH} pieces")
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        if memo is not None and id(node) in memo:
            return memo[id(node)]
        left, right = _literal_str(node.left, memo, depth + 1), _literal_str(node.right, memo, depth + 1)
        folded = None if left is None or right is None else left + right
        if memo is not None:
            memo[id(node)] = folded
        return folded
    if isinstance(node, ast.JoinedStr):
        pieces = []
        for v in node.values:
            if isinstance(v, ast.FormattedValue):
                if v.format_spec is not None or v.conversion != -1:
                    return None
                v = v.value
            piece = _literal_str(v, None, depth + 1)
            if piece is None:
                return None
            pieces.append(piece)
        return "".join(pieces)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.List | ast.Tuple)
    ):
        sep = _literal_str(node.func.value, None, depth + 1)
        items = [_literal_str(e, None, depth + 1) for e in node.args[0].elts]
        if sep is None or any(i is None for i in items):
            return None
        return sep.join(i for i in items if i is not None)
    return None


def _inductor_env(name: str) -> bool:
    return "INDUCTOR" in name.upper() or any(extra in name for extra in _INDUCTOR_ENV_EXTRA)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


# --- the walk -------------------------------------------------------------------------------


def _flag(scan: _Scan, node: ast.AST, what: str, kind: str, option: str | None = None) -> None:
    line_no = getattr(node, "lineno", 0)
    text = scan.lines[line_no - 1].strip()[:160] if 0 < line_no <= len(scan.lines) else ""
    scan.found.append(Finding(line_no, f"{what}: {text}" if text else what, kind, option if kind == FLAG else None))


def _visit_import(scan: _Scan, node: ast.AST, parent: ast.AST | None, name: str) -> None:
    _check_import(scan, node)  # type: ignore[arg-type]


def _visit_call(scan: _Scan, node: ast.AST, parent: ast.AST | None, name: str) -> None:
    _check_call(scan, node)  # type: ignore[arg-type]
    if id(node) not in scan.inner:
        _visit_chain(scan, node, parent, name)


def _visit_constant(scan: _Scan, node: ast.AST, parent: ast.AST | None, name: str) -> None:
    # the walk passes on strings only, not docstrings nor other string statements (prose)
    if id(node) not in scan.handled:
        value = node.value  # type: ignore[attr-defined]
        _check_string(scan, node, value if isinstance(value, str) else value.decode("latin-1"))


def _visit_folded(scan: _Scan, node: ast.AST, parent: ast.AST | None, name: str) -> None:
    if id(node) in scan.too_deep:
        return
    if (folded := _literal_str(node, scan.folded)) is not None:  # a `+` or an f-string of literal pieces
        _check_string(scan, node, folded)


def _visit_attribute(scan: _Scan, node: ast.AST, parent: ast.AST | None, name: str) -> None:
    attr = node.attr  # type: ignore[attr-defined]
    if attr in _DENIED_ATTRS and id(node) not in scan.handled:
        _flag(scan, node, f"reaches .{attr}, which exposes namespaces or code: the rule cannot follow it", UNREADABLE)
    if id(node) not in scan.inner:
        _visit_chain(scan, node, parent, name)


def _visit_name(scan: _Scan, node: ast.AST, parent: ast.AST | None, name: str) -> None:
    ident = node.id  # type: ignore[attr-defined]
    if ident in _DENIED_NAMES:
        _flag(scan, node, f"uses {ident}, which exposes the builtins or the import machinery", UNREADABLE)
    if type(node.ctx) is ast.Load and id(node) not in scan.inner:  # type: ignore[attr-defined]
        binder, bases = _resolve(scan, ident)
        if bases or binder is None or ident in binder.modules:  # else a local object: nothing to judge
            _check_chain(scan, node, [ident], parent, name)  # a name bound (stored, deleted) is followed where used


def _visit_chain(scan: _Scan, node: ast.AST, parent: ast.AST | None, name: str) -> None:
    found = _chain(node)
    if found is not None:
        parts, inner = found
        scan.inner.update(map(id, inner))
        _check_chain(scan, node, parts, parent, name)


_Visitor = Callable[[_Scan, ast.AST, "ast.AST | None", str], None]
_VISITORS: Final[dict[type, _Visitor]] = {
    ast.Import: _visit_import,
    ast.ImportFrom: _visit_import,
    ast.Call: _visit_call,
    ast.Constant: _visit_constant,
    ast.BinOp: _visit_folded,
    ast.JoinedStr: _visit_folded,
    ast.Attribute: _visit_attribute,
    ast.Name: _visit_name,
}


def _role(node: ast.AST, parent: ast.AST | None, name: str) -> str:
    """How an expression is used: call, store, del, decorator, subscript-load/-store/-del, compare, iter,
    unpack (``**x`` in a dict or call), kwarg:<name>, arg, or value (bound, returned, put in a container)."""
    ctx = getattr(node, "ctx", None)
    if isinstance(ctx, ast.Store):
        return "store"
    if isinstance(ctx, ast.Del):
        return "del"
    if isinstance(parent, ast.Call):
        return "call" if name == "func" else "arg"
    if isinstance(parent, ast.keyword):
        return "unpack" if parent.arg is None else f"kwarg:{parent.arg}"
    if isinstance(parent, ast.Subscript) and name == "value":
        sub_ctx = parent.ctx
        return (
            "subscript-store"
            if isinstance(sub_ctx, ast.Store)
            else "subscript-del"
            if isinstance(sub_ctx, ast.Del)
            else "subscript-load"
        )
    if name == "decorator_list":
        return "decorator"
    if isinstance(parent, ast.Compare):
        return "compare"
    if name == "iter":
        return "iter"
    if isinstance(parent, ast.Dict) and name == "values":
        return (
            "unpack"
            if any(v is node and k is None for k, v in zip(parent.keys, parent.values, strict=True))
            else "value"
        )
    if isinstance(parent, ast.Attribute):  # the receiver of a method whose chain was cut (`f().x`)
        return "subscript-load"
    return "value"


def _check_import(scan: _Scan, node: ast.Import | ast.ImportFrom) -> None:
    if isinstance(node, ast.Import):
        paths = [a.name for a in node.names]
    else:
        base = "." * node.level + (node.module or "")
        if any(a.name == "*" for a in node.names):
            _flag(scan, node, f"imports * from {base}: the rule cannot tell which names that binds", UNREADABLE)
            return
        paths = [f"{base}.{a.name}" if base else a.name for a in node.names]
    for path in paths:
        top = path.split(".")[0]
        if not top or not (
            top in sys.stdlib_module_names
            or top in _RECORD_PACKAGES
            or top in _PUBLIC_PACKAGES
            or top in scan.local_modules
        ):
            _flag(
                scan,
                node,
                f"imports {path}, which is neither the standard library, a package of the record image "
                "(requirements.txt), nor a file appended to the log: this rule cannot read its code",
                UNREADABLE,
            )
            return
        why = _never_allowed(path)
        if why:
            _flag(scan, node, f"imports {path}: {why}", UNREADABLE)


_BANNED_SET = frozenset(_BANNED)


@functools.lru_cache(maxsize=4096)
def _never_allowed(path: str) -> str | None:
    """Why a module path may not be used at all, whatever is done with it."""
    end = path.find(".")
    while True:  # each dotted prefix of the path (`a`, `a.b`, ...): is it a banned module or member?
        if (path if end < 0 else path[:end]) in _BANNED_SET:
            return "it loads or runs code, or reaches objects by computed names, which this rule cannot follow"
        if end < 0:
            break
        end = path.find(".", end + 1)
    if "inductor" in path.lower():  # in a segment: the word has no dot
        return "a record's code may not use inductor's internals (they change how it compiles); use torch.compile"
    if path.startswith("_TorchCompile") or "._TorchCompile" in path:
        return "torch.compile's internal wrappers take a mode and options of their own; use torch.compile"
    return None


def _torch_tail(path: str) -> list[str] | None:
    """The path from its last ``torch`` segment (``torch.compiler.torch._inductor`` -> ``torch._inductor``),
    as torch's modules re-export torch itself; None outside torch."""
    segments = path.split(".")
    if "torch" not in segments:
        return None
    last = len(segments) - 1 - segments[::-1].index("torch")
    return segments[last:]


def _rerooted(path: str) -> list[str]:
    """``path`` and the paths it reaches through a module that another module re-exports, its leading
    underscores dropped: ``posixpath.os.environ`` is also ``os.environ``, ``torch._sys.modules`` ``sys.modules``."""
    segments = path.split(".")
    found = [path]
    for i in range(1, len(segments)):
        name = segments[i].lstrip("_")
        if name in _REEXPORTED:
            found.append(".".join([name, *segments[i + 1 :]]))
    return found


def _check_chain(scan: _Scan, node: ast.AST, parts: list[str], parent: ast.AST | None, name: str) -> None:
    """Judge the chain ``parts`` (``torch._inductor.config.x``) that ``node`` is, in ``parent``'s field ``name``."""
    if len(parts) > 1 and id(node) not in scan.handled:
        for part in parts[1:]:
            if part in _DENIED_ATTRS:  # also a literal name given to getattr
                _flag(
                    scan,
                    node,
                    f"reaches .{part}, which exposes namespaces or code: the rule cannot follow it",
                    UNREADABLE,
                )
    first = parts[0]
    if len(parts) == 1 and type(getattr(node, "ctx", None)) in (ast.Store, ast.Del):
        return  # binding a name (its aliases are followed where it is used)
    binder, bases = _resolve(scan, first)
    if not bases:  # a local object (`self.x`, `args.lr`), a builtin, or an unbound name: no module path
        if len(parts) == 1:
            if binder is None:
                if first in _DYNAMIC_BUILTINS:
                    _flag(scan, node, f"uses {first}(), which runs or reaches code by computed names", UNREADABLE)
                elif first in _ATTR_BUILTINS and _role(node, parent, name) != "call":
                    why = f"uses {first} as a value: the rule cannot tell which names it is given"
                    _flag(scan, node, why, UNREADABLE)
            elif first in binder.modules and _hands_around(_role(node, parent, name), parent):
                _flag_module_handed(scan, node, first)
        return
    role = _role(node, parent, name)
    if len(parts) == 1 and binder is not None and first in binder.modules and _hands_around(role, parent):
        _flag_module_handed(scan, node, first)
    dotted = ".".join(parts)
    rest = parts[1:]
    for path in (p for c in sorted(".".join([b, *rest]) for b in bases) for p in _rerooted(c)):
        problem = _chain_problem(path, role, parent)
        if problem:
            why, kind, option = problem
            _flag(scan, node, why.replace("{path}", dotted if dotted == path else f"{dotted} ({path})"), kind, option)
            return


def _flag_module_handed(scan: _Scan, node: ast.AST, module: str) -> None:
    why = f"hands the module {module} around as a value: the rule cannot follow what is done with it"
    _flag(scan, node, why, UNREADABLE)


def _hands_around(role: str, parent: ast.AST | None) -> bool:
    """The value leaves the expression: bound, passed, returned, put in a container (but not to a reading builtin)."""
    if role == "arg" and isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name):
        return parent.func.id not in _INSPECTING_BUILTINS
    return role in ("value", "arg", "decorator") or role.startswith("kwarg:")


def _chain_problem(path: str, role: str, parent: ast.AST | None) -> _Problem | None:
    """What is wrong with using the module member ``path`` this way, with ``{path}`` for its name, its kind and
    option; None if fine."""
    writes = role in ("store", "del")
    why = _never_allowed(path)
    if why:
        if writes and path.startswith("torch._inductor.config."):
            name = path[len("torch._inductor.config.") :]
            # a del restores the default: no extra flag (the public rule), still not this rule's way to read code
            return f"sets torch._inductor.config option '{name}'", (FLAG if role == "store" else UNREADABLE), name
        sets = _inductor_option_set(path, role, parent)
        return f"uses {{path}}: {why}", (UNREADABLE if sets is None else FLAG), sets
    if any(_under(path, e) for e in _ENV_OBJECTS):
        return _environ_problem(path, role, parent)
    if path in ("os.putenv", "os.unsetenv"):
        if role == "call" and isinstance(parent, ast.Call) and parent.args:
            key = _literal_str(parent.args[0])
            if key is None:
                return _unreadable("sets an environment variable whose name is computed ({path}): name it literally")
            if _inductor_env(key):
                why = f"sets {key}, an environment variable inductor reads its options from ({{path}})"
                return _sets_env(why, key) if path == "os.putenv" else _unreadable(why)
            return None
        return _unreadable("hands {path} around: the rule cannot tell which variables it sets")
    if _ENV_SPAWN.match(path):
        return _unreadable("starts a process with an environment of its own ({path}): the rule cannot read it")
    if path in _SHELL_OR_PYTHON:
        return _unreadable("runs a command line or another Python ({path}), whose settings this code does not show")
    tail = _torch_tail(path)
    if tail is None:
        return None
    torch_path = ".".join(tail)
    if torch_path in _COMPILE_FUNCS:
        if role in ("call", "decorator"):
            return None  # a call's arguments are judged with the call
        as_value = (
            "uses {path} other than calling it: the rule cannot see the arguments it ends up called with; "
            "call torch.compile(fn, ...) or decorate with @torch.compile"
        )
        # handed to a call that gives it a mode, options or a backend (functools.partial): those it reads
        if role == "arg" and isinstance(parent, ast.Call):
            for kw in parent.keywords:
                if kw.arg is not None and (option := _compile_keyword_option(kw.arg, kw.value)) is not None:
                    return as_value, FLAG, option
        return _unreadable(as_value)
    for config in _SETTABLE_CONFIGS:
        if _under(torch_path, config):
            return _config_problem(config, torch_path, role)
    if "_dynamo" in tail:
        i = tail.index("_dynamo")
        if i == 1 and len(tail) > 2 and tail[2] in _DYNAMO_OK:
            return None
        return _unreadable(
            "uses {path}: of torch._dynamo a record may use only "
            + ", ".join(sorted(_DYNAMO_OK))
            + " and its config's options (the rest compiles with settings of its own)"
        )
    if tail[:2] == ["torch", "compiler"] and len(tail) >= 2:
        if len(tail) > 2 and tail[2] in _COMPILER_OK:
            return None
        return _unreadable(
            "uses {path}: of torch.compiler a record may use only compile, config and "
            + ", ".join(sorted(_COMPILER_OK))
        )
    if writes and not any(torch_path.startswith(p) for p in _SETTABLE_PREFIXES):
        return _unreadable(
            "sets {path}: of torch's modules a record may set only torch.backends.* and the options of "
            + ", ".join(_SETTABLE_CONFIGS)
        )
    return None


def _config_problem(config: str, path: str, role: str) -> _Problem | None:
    # Not FLAGs: these configs' options are not inductor's, and this rule lets a record set them by name.
    if path == config:
        return _unreadable(
            f"hands {config} around (as {{path}}): the rule cannot follow what is set through it; set its options by name"
        )
    if role in ("call", "decorator"):
        return _unreadable(f"changes {config} through a call ({{path}}): set its options by name")
    return None


def _environ_problem(path: str, role: str, parent: ast.AST | None) -> _Problem | None:
    environ = next(e for e in _ENV_OBJECTS if _under(path, e))
    if path == environ:
        if role in ("subscript-load", "compare", "iter", "unpack", "kwarg:env"):
            return None
        if role in ("subscript-store", "subscript-del") and isinstance(parent, ast.Subscript):
            return _env_key_problem(parent.slice, role == "subscript-store")
        if role == "arg" and isinstance(parent, ast.Call) and isinstance(parent.func, ast.Name):
            if parent.func.id in _READING_BUILTINS:
                return None
        return _unreadable("hands {path} to code that may write it: the rule cannot tell which variables are set")
    method = path[len(environ) + 1 :]
    if role != "call" or not isinstance(parent, ast.Call):
        return _unreadable("uses {path} other than calling it: the rule cannot tell which variables it sets")
    if method in _ENV_READ_METHODS:
        return None
    if method in ("setdefault", "pop"):
        return _env_key_problem(parent.args[0], method == "setdefault") if parent.args else None
    if method == "update":
        for arg in parent.args:
            if not isinstance(arg, ast.Dict) or any(k is None for k in arg.keys):
                return _unreadable(
                    "updates {path} with a mapping whose names the rule cannot read: write them as a literal dict"
                )
            for key in arg.keys:
                if key is not None and (problem := _env_key_problem(key, True)):
                    return problem
        for kw in parent.keywords:
            if kw.arg is None:
                return _unreadable("updates {path} with ** arguments whose names the rule cannot read")
            if _inductor_env(kw.arg):
                return _sets_env(
                    f"sets {kw.arg}, an environment variable inductor reads its options from ({{path}})", kw.arg
                )
        return None
    return _unreadable("changes the environment through {path}: set variables as os.environ['NAME'] = value")


def _env_key_problem(key: ast.AST, sets: bool) -> _Problem | None:
    """A write of the environment variable ``key`` (``sets``: False for a removal, which adds no flag)."""
    name = _literal_str(key)
    if name is None:
        return _unreadable("writes an environment variable whose name is computed ({path}): name it literally")
    if _inductor_env(name):
        why = f"sets {name}, an environment variable inductor reads its options from ({{path}})"
        return _sets_env(why, name) if sets else _unreadable(why)
    return None


def _check_string(scan: _Scan, node: ast.AST, text: str) -> None:
    if not _NOTABLE_STRING.search(text):
        return
    if "INDUCTOR" in text or any(extra in text for extra in _INDUCTOR_ENV_EXTRA):
        _flag(scan, node, "names an inductor environment variable (TORCHINDUCTOR_*: inductor's options)", UNREADABLE)
    for mode in _COMPILE_MODES:
        if mode in text:
            _flag(scan, node, f"names the torch.compile mode '{mode}'", UNREADABLE)


def _check_call(scan: _Scan, node: ast.Call) -> None:
    for kw in node.keywords:
        if kw.arg == "config_patches":
            option = _dict_option(kw.value) or "config_patches"
            _flag(scan, node, "passes config_patches=: inductor options for one compilation", FLAG, option)
        elif kw.arg == "env" and (problem := _env_argument_problem(scan, kw.value)):
            _flag(scan, node, *problem)
        elif kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and not kw.value.value):
            _flag(scan, node, "runs a shell command line (shell=), whose settings this code does not show", UNREADABLE)
    func = _chain(node.func)
    parts = func[0] if func else []
    canon = _canonical(scan, parts) if parts else []
    is_method_compile = type(node.func) is ast.Attribute and node.func.attr == "compile"
    if not canon:  # a local object's method, a builtin, or no chain: only a `.compile(...)` is judged here
        if is_method_compile:
            _check_compile_arguments(scan, node)
    else:
        _check_module_call(scan, node, canon, is_method_compile)
    if isinstance(node.func, ast.Attribute) and node.func.attr in ("__setattr__", "__delattr__"):
        scan.handled.add(id(node.func))
        receiver = node.func.value
        unbound = isinstance(receiver, ast.Name) and receiver.id in ("object", "type")  # target is the 1st argument
        if unbound and node.args:
            _check_setattr(scan, node, node.args[0], node.args[1] if len(node.args) > 1 else None)
        else:
            _check_setattr(scan, node, receiver, node.args[0] if node.args else None)
        return
    if not parts:
        return
    builtin = len(parts) == 1 and _is_builtin(scan, parts[0])
    if builtin and parts[0] in ("setattr", "delattr") and node.args:
        _check_setattr(scan, node, node.args[0], node.args[1] if len(node.args) > 1 else None)
    elif builtin and parts[0] in ("getattr", "hasattr") and node.args:
        if _literal_name(node) is None:
            target = _chain(node.args[0])
            if target is not None and _canonical(scan, target[0]):
                _flag(
                    scan,
                    node,
                    f"{parts[0]} with a computed name on a module: the rule cannot tell what it reaches",
                    UNREADABLE,
                )


def _check_module_call(scan: _Scan, node: ast.Call, canon: list[str], is_method_compile: bool) -> None:
    """The checks of a call of a module member, named by its dotted paths ``canon``."""
    torch_paths = {".".join(t) for c in canon if (t := _torch_tail(c))}
    if torch_paths & _COMPILE_FUNCS or (
        is_method_compile and not any(c.split(".")[0] in ("re", "regex") for c in canon)
    ):
        _check_compile_arguments(scan, node)
    elif torch_paths and (options := [kw.value for kw in node.keywords if kw.arg == "options"]):
        option = _dict_option(options[0]) or "options"
        _flag(scan, node, "passes options= to a torch function: compile options", FLAG, option)
    if {p for c in canon for p in _rerooted(c)} & _PROCESS_STARTERS and (why := _program_problem(node)):
        _flag(scan, node, why, UNREADABLE)
    for path in {p for c in canon for p in (c, ".".join(_torch_tail(c) or []))} & _UNPICKLERS.keys():
        keyword, safe = _UNPICKLERS[path]
        unsafe = len(node.args) > 2 or any(isinstance(a, ast.Starred) for a in node.args)
        unsafe = unsafe or any(
            kw.arg is None
            or (kw.arg == keyword and not (isinstance(kw.value, ast.Constant) and kw.value.value is safe))
            for kw in node.keywords
        )
        if unsafe:
            _flag(
                scan,
                node,
                f"calls {path} with {keyword}= other than {safe} (or with more than 2 positional or with ** arguments): "
                "it unpickles, running code from a file the log does not carry",
                UNREADABLE,
            )


def _program_problem(node: ast.Call) -> str | None:
    """Why the program a process-starting call runs cannot be judged; None for a literal, harmless one."""
    if not node.args:
        if any(kw.arg in ("args", None) for kw in node.keywords):
            return "starts a program named by a keyword argument: pass the command list as the first argument"
        return None
    first = node.args[0]
    if isinstance(first, ast.List | ast.Tuple):
        head = first.elts[0] if first.elts else None
        program = _literal_str(head) if head is not None and not isinstance(head, ast.Starred) else None
    else:
        text = _literal_str(first)
        program = text.split()[0] if text and text.split() else None
    if program is None:
        return "starts a program whose name is computed: the rule cannot tell what it runs"
    folder, _, name = program.replace("\\", "/").rpartition("/")
    if name not in _PROGRAMS_OK or (folder + "/" if folder else "") not in _PROGRAM_DIRS:
        return (
            f"starts {program!r}: a record's code may start only " + " and ".join(sorted(_PROGRAMS_OK)) + ", by name; "
            "another program runs code or settings this log does not carry (a Python, a shell, a launcher, a binary)"
        )
    return None


def _check_setattr(scan: _Scan, node: ast.Call, target: ast.AST, name_node: ast.AST | None) -> None:
    name = _literal_str(name_node) if name_node is not None else None
    if name is None:
        if not (isinstance(target, ast.Name) and target.id == "self"):
            _flag(scan, node, "sets an attribute whose name is computed: the rule cannot tell what it sets", UNREADABLE)
        return
    if name in _DENIED_ATTRS:
        _flag(scan, node, f"sets .{name}, which exposes namespaces or code", UNREADABLE)
    found = _chain(target)
    if found is not None:
        parts = [*found[0], name]
        for path in _canonical(scan, parts):
            problem = _chain_problem(path, "store", None)
            if problem:
                why, kind, option = problem
                _flag(scan, node, why.replace("{path}", ".".join(parts)), kind, option)
                return


def _check_compile_arguments(scan: _Scan, node: ast.Call) -> None:
    for kw in node.keywords:
        if kw.arg is None:  # **something: only a dict literal can be read
            if not isinstance(kw.value, ast.Dict) or any(_literal_str(k) is None for k in kw.value.keys if k):
                _flag(
                    scan, node, "passes ** arguments to torch.compile that cannot be read (mode/options?)", UNREADABLE
                )
                continue
            for k, v in zip(kw.value.keys, kw.value.values, strict=True):
                if k is None:
                    _flag(
                        scan,
                        node,
                        "passes ** arguments to torch.compile that cannot be read (mode/options?)",
                        UNREADABLE,
                    )
                else:
                    _check_compile_keyword(scan, node, _literal_str(k) or "", v)
        else:
            _check_compile_keyword(scan, node, kw.arg, kw.value)


def _check_compile_keyword(scan: _Scan, node: ast.Call, name: str, value: ast.AST) -> None:
    option = _compile_keyword_option(name, value)
    if option is None:
        return
    if name in ("mode", "options"):
        _flag(scan, node, f"passes {name}= to torch.compile", FLAG, option)
        scan.handled.add(id(value))  # its string is this finding, not another one
    else:
        _flag(
            scan,
            node,
            "passes a backend= other than 'inductor', 'eager' or 'aot_eager' to torch.compile: a custom backend "
            "can compile with settings of its own",
            FLAG,
            option,
        )


def _compile_keyword_option(name: str, value: ast.AST) -> str | None:
    """The option a keyword argument of torch.compile sets (``mode=max-autotune``, an ``options=`` dict's one
    key, ``backend=cudagraphs``; the keyword's name where its value is computed); None for a harmless one."""
    if name == "mode":
        mode = _literal_str(value)
        return "mode" if mode is None else f"mode={mode}"
    if name == "options":
        return _dict_option(value) or "options"
    if name == "backend":
        backend = _literal_str(value)
        if backend in _BACKENDS_OK:
            return None
        return "backend" if backend is None else f"backend={backend}"
    return None


def _dict_option(value: ast.AST) -> str | None:
    """The one key of a literal dict of options (``{"max_autotune": True}``); None for anything else."""
    if isinstance(value, ast.Dict) and len(value.keys) == 1 and value.keys[0] is not None:
        return _literal_str(value.keys[0])
    return None


def _inductor_option_set(path: str, role: str, parent: ast.AST | None) -> str | None:
    """The inductor option that writing (or ``.patch()``-ing) the inductor member ``path`` sets: the path past
    a config module under inductor (``torch._functorch.partitioners.inductor_config.max_autotune``,
    ``torch._inductor.compile_fx.config.x``); None where it sets none."""
    segments = path.split(".")
    first = next((i for i, s in enumerate(segments) if "inductor" in s.lower()), None)
    if first is None:
        return None
    config = next((i for i in range(first, len(segments)) if "config" in segments[i].lower()), None)
    if config is None or config == len(segments) - 1:
        return None
    if role == "store":
        return ".".join(segments[config + 1 :])
    if role == "call" and segments[-1] == "patch" and config == len(segments) - 2 and isinstance(parent, ast.Call):
        return _patch_option(parent)
    return None


def _patch_option(call: ast.Call) -> str:
    """The option ``config.patch(...)`` sets: ``patch(name=v)``, ``patch("name", v)``, ``patch({"name": v})``;
    "patch" where it sets several or computed ones."""
    if len(call.args) + len(call.keywords) == 1:
        if call.keywords and call.keywords[0].arg is not None:
            return call.keywords[0].arg
        if call.args:
            return _dict_option(call.args[0]) or "patch"
    if len(call.args) == 2 and not call.keywords and (name := _literal_str(call.args[0])) is not None:
        return name
    return "patch"


def _unreadable(what: str) -> _Problem:
    return what, UNREADABLE, None


def _sets_env(what: str, name: str) -> _Problem:
    """A FLAG setting the inductor variable ``name``: TORCHINDUCTOR_X is inductor's option x (its convention)."""
    prefix = "TORCHINDUCTOR_"
    return what, FLAG, name[len(prefix) :].lower() if name.startswith(prefix) and len(name) > len(prefix) else name


def _env_argument_problem(scan: _Scan, value: ast.AST) -> _Problem | None:
    """What is wrong with ``env=value`` (a child process's environment): its names must be readable."""
    if isinstance(value, ast.Constant) and value.value is None:
        return None
    found = _chain(value)
    if found is not None and any(c in _ENV_OBJECTS for c in _canonical(scan, found[0])):
        return None
    if isinstance(value, ast.Dict):
        for k, v in zip(value.keys, value.values, strict=True):
            if k is None:
                if inner := _env_argument_problem(scan, v):
                    return "passes env= with ** entries whose names cannot be read", inner[1], inner[2]
                continue
            name = _literal_str(k)
            if name is None:
                return _unreadable("passes env= with a computed variable name: name it literally")
            if _inductor_env(name):
                return _sets_env(
                    f"passes env= that sets {name}, an environment variable inductor reads its options from", name
                )
        return None
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "dict":
        for arg in value.args:
            if inner := _env_argument_problem(scan, arg):
                return "passes env= built from a mapping whose names cannot be read", inner[1], inner[2]
        for kw in value.keywords:
            if kw.arg is None:
                return _unreadable("passes env= that may set an inductor environment variable")
            if _inductor_env(kw.arg):
                return _sets_env("passes env= that may set an inductor environment variable", kw.arg)
        return None
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "copy":
        return _env_argument_problem(scan, value.func.value)
    return _unreadable("passes env= whose variable names the rule cannot read: pass a literal dict (or os.environ)")
