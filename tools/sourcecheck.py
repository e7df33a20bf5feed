"""The ``compile-flags`` rule's reading of a run's source: inductor options and torch.compile arguments.

The source is parsed with ``ast`` (which builds a syntax tree and runs nothing). A source that does
not parse (a hand-edited log) is scanned line by line with regular expressions instead, so a broken
file cannot hide a flag. Both report ``(line number, line text)`` evidence.

What is flagged (RULES.md ``compile-flags``): setting any ``torch._inductor.config`` option
(assignment, ``setattr``, ``.patch(...)``, ``.update(...)``), and calling ``torch.compile`` with a
``mode=`` or ``options=`` argument (e.g. ``max-autotune``). ``dynamic=`` and ``fullgraph=`` change
what is compiled, not how hard inductor searches, and stay allowed.
"""

from __future__ import annotations

import ast
import re
import warnings

_INDUCTOR = "torch._inductor.config"
_FORBIDDEN_COMPILE_KWARGS = ("mode", "options")
_REGEX_RULES = (
    (
        re.compile(r"_inductor\.config\.\w+\s*=[^=]|_inductor\.config\.(?:patch|update)\("),
        "sets a torch._inductor.config option",
    ),
    (re.compile(r"torch\.compile\(.*\b(?:mode|options)\s*="), "passes mode/options to torch.compile"),
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


class _AstScan:
    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()
        self.aliases: set[str] = {_INDUCTOR}  # names bound to torch._inductor.config
        self.compile_names: set[str] = {"torch.compile"}
        self.found: list[tuple[int, str]] = []

    def run(self, tree: ast.AST) -> list[tuple[int, str]]:
        nodes = list(ast.walk(tree))
        for node in nodes:  # aliases first: `import torch._inductor.config as config` may come late
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == _INDUCTOR and a.asname:
                        self.aliases.add(a.asname)
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    if node.module == "torch._inductor" and a.name == "config":
                        self.aliases.add(a.asname or "config")
                    if node.module == "torch" and a.name == "compile":
                        self.compile_names.add(a.asname or "compile")
        for node in nodes:
            if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    if isinstance(t, ast.Attribute) and self._is_inductor(t.value):
                        self._flag(node, f"sets {_INDUCTOR} option '{t.attr}'")
            elif isinstance(node, ast.Call):
                self._check_call(node)
        return sorted(set(self.found))

    def _is_inductor(self, node: ast.AST) -> bool:
        name = _dotted(node)
        return name is not None and (name in self.aliases or name.endswith("._inductor.config"))

    def _check_call(self, node: ast.Call) -> None:
        func = _dotted(node.func)
        if func is None:
            return
        if func in self.compile_names:
            for kw in node.keywords:
                if kw.arg in _FORBIDDEN_COMPILE_KWARGS:
                    self._flag(node, f"passes {kw.arg}= to torch.compile")
        elif func == "setattr" and node.args and self._is_inductor(node.args[0]):
            self._flag(node, f"sets a {_INDUCTOR} option with setattr")
        elif isinstance(node.func, ast.Attribute) and node.func.attr in ("patch", "update", "load_config"):
            if self._is_inductor(node.func.value):
                self._flag(node, f"changes {_INDUCTOR} with .{node.func.attr}()")

    def _flag(self, node: ast.AST, what: str) -> None:
        line_no = getattr(node, "lineno", 0)
        text = self.lines[line_no - 1].strip()[:160] if 0 < line_no <= len(self.lines) else ""
        self.found.append((line_no, f"{what}: {text}"))
