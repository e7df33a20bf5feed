"""The ``compile-flags`` rule's reading of a run's source: inductor options and torch.compile arguments.

The source is parsed with ``ast`` (which builds a syntax tree and runs nothing). A source that does
not parse (a hand-edited log) is scanned line by line with regular expressions instead, so a broken
file cannot hide a flag. Both report ``(line number, line text)`` evidence.

What is flagged (RULES.md ``compile-flags``):
- setting any ``torch._inductor.config`` option (assignment, also to a nested option such as
  ``config.triton.cudagraphs``; ``setattr``; ``.patch(...)``, ``.update(...)``, ``.load_config(...)``),
  whatever name the config or the ``torch._inductor`` module is reached by: ``import ... as``,
  ``from ... import``, or a plain assignment (``cfg = torch._inductor.config``);
- calling ``torch.compile`` (or a name bound to it: ``c = torch.compile``, ``functools.partial``) or a
  module's ``.compile(...)`` method (``nn.Module.compile`` passes its arguments to torch.compile) with a
  ``mode=`` or ``options=`` argument (e.g. ``max-autotune``), or with ``**`` arguments that are not a
  dict literal without those keys (what they hold cannot be read);
- any string that names a ``TORCHINDUCTOR_*`` environment variable: inductor reads its options from
  them, so ``os.environ["TORCHINDUCTOR_MAX_AUTOTUNE"] = "1"`` is the same as setting the option.
  Docstrings are prose and are not read.
``dynamic=`` and ``fullgraph=`` change what is compiled, not how hard inductor searches, and stay allowed.
"""

from __future__ import annotations

import ast
import re
import warnings

_INDUCTOR = "torch._inductor.config"
_INDUCTOR_MODULE = "torch._inductor"
_FORBIDDEN_COMPILE_KWARGS = ("mode", "options")
_ENV_PREFIX = "TORCHINDUCTOR_"
_REGEX_RULES = (
    (
        re.compile(r"_inductor\.config(?:\.\w+)+\s*=[^=]|_inductor\.config\.(?:patch|update|load_config)\("),
        "sets a torch._inductor.config option",
    ),
    (re.compile(r"=\s*torch\._inductor(?:\.config)?\s*$"), "binds torch._inductor to a name"),
    (re.compile(r"\bcompile\(.*(?:\b(?:mode|options)\s*=|\*\*)"), "passes mode/options to torch.compile"),
    (re.compile(r"=\s*torch\.compile\s*$"), "binds torch.compile to a name"),
    (re.compile(_ENV_PREFIX), "sets an inductor option through a TORCHINDUCTOR_ environment variable"),
)


def find_compile_flags(source: str) -> list[tuple[int, str]]:
    """``(line number, what)`` for every forbidden compile setting in ``source``."""
    if not source.strip():
        return []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # old code has invalid escapes ('\\s'): not our concern here
            tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return _regex_scan(source)
    return _AstScan(source).run(tree)


def _regex_scan(source: str) -> list[tuple[int, str]]:
    found = []
    for i, line in enumerate(source.splitlines(), 1):
        code = line.split("#", 1)[0]
        for pattern, what in _REGEX_RULES:
            if pattern.search(code):
                found.append((i, f"{what}: {line.strip()[:160]}"))
    return found


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are bare expression statements (docstrings, prose)."""
    return {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    }


class _AstScan:
    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()
        self.aliases: set[str] = {_INDUCTOR}  # names bound to torch._inductor.config (or an option group of it)
        self.modules: set[str] = {_INDUCTOR_MODULE}  # names bound to the torch._inductor module
        self.compile_names: set[str] = {"torch.compile"}
        self.found: list[tuple[int, str]] = []

    def run(self, tree: ast.AST) -> list[tuple[int, str]]:
        nodes = list(ast.walk(tree))
        # Aliases first (`import torch._inductor.config as config` may come late), repeated until no new
        # name appears: `a = torch._inductor.config; b = a` binds b in the second round.
        while self._collect_aliases(nodes):
            pass
        prose = _docstrings(tree)
        for node in nodes:
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Attribute) and self._is_inductor(t.value):
                        self._flag(node, f"sets {_INDUCTOR} option '{t.attr}'")
            elif isinstance(node, ast.Call):
                self._check_call(node)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
                if _ENV_PREFIX in node.value:
                    self._flag(node, f"names a {_ENV_PREFIX}* environment variable (an inductor option)")
        return sorted(set(self.found))

    def _collect_aliases(self, nodes: list[ast.AST]) -> bool:
        """Add the names the code binds to inductor's config or module, or to torch.compile; True if any was new."""
        before = len(self.aliases) + len(self.modules) + len(self.compile_names)
        for node in nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == _INDUCTOR and a.asname:
                        self.aliases.add(a.asname)
                    elif a.name == _INDUCTOR_MODULE and a.asname:
                        self.modules.add(a.asname)
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if node.module == _INDUCTOR_MODULE and a.name == "config":
                        self.aliases.add(a.asname or "config")
                    elif node.module == "torch" and a.name == "_inductor":
                        self.modules.add(a.asname or "_inductor")
                    elif node.module == "torch" and a.name == "compile":
                        self.compile_names.add(a.asname or "compile")
            elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if self._is_inductor(node.value):
                    self.aliases.update(names)
                elif _dotted(node.value) in self.modules:
                    self.modules.update(names)
                elif _dotted(node.value) in self.compile_names:
                    self.compile_names.update(names)
        return len(self.aliases) + len(self.modules) + len(self.compile_names) > before

    def _is_inductor(self, node: ast.AST) -> bool:
        """``node`` is inductor's config or an option group inside it (``config.triton``)."""
        name = _dotted(node)
        if name is None:
            return False
        roots = self.aliases | {f"{m}.config" for m in self.modules}
        return (
            "._inductor.config." in f".{name}." or name in roots or any(name.startswith(root + ".") for root in roots)
        )

    def _check_call(self, node: ast.Call) -> None:
        func = _dotted(node.func)
        is_method = isinstance(node.func, ast.Attribute) and node.func.attr == "compile"
        if func in self.compile_names or (is_method and func not in ("re.compile", "regex.compile")):
            self._check_compile_arguments(node, node.keywords)
        elif func in ("partial", "functools.partial") and node.args and _dotted(node.args[0]) in self.compile_names:
            self._check_compile_arguments(node, node.keywords)
        elif func == "setattr" and node.args and self._is_inductor(node.args[0]):
            self._flag(node, f"sets a {_INDUCTOR} option with setattr")
        elif isinstance(node.func, ast.Attribute) and node.func.attr in ("patch", "update", "load_config"):
            if self._is_inductor(node.func.value):
                self._flag(node, f"changes {_INDUCTOR} with .{node.func.attr}()")

    def _check_compile_arguments(self, node: ast.Call, keywords: list[ast.keyword]) -> None:
        for kw in keywords:
            if kw.arg in _FORBIDDEN_COMPILE_KWARGS:
                self._flag(node, f"passes {kw.arg}= to torch.compile")
            elif kw.arg is None:  # **something: only a dict literal can be read
                keys = kw.value.keys if isinstance(kw.value, ast.Dict) else None
                readable = keys is not None and all(isinstance(k, ast.Constant) for k in keys)
                if not readable:
                    self._flag(node, "passes ** arguments to torch.compile that cannot be read (mode/options?)")
                elif any(isinstance(k, ast.Constant) and k.value in _FORBIDDEN_COMPILE_KWARGS for k in keys or []):
                    self._flag(node, "passes mode/options to torch.compile through **{...}")

    def _flag(self, node: ast.AST, what: str) -> None:
        line_no = getattr(node, "lineno", 0)
        text = self.lines[line_no - 1].strip()[:160] if 0 < line_no <= len(self.lines) else ""
        self.found.append((line_no, f"{what}: {text}"))
