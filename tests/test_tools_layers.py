"""tools/ is four rooms and a shared floor, and each imports only downward (issue 21).

common (text, progress, cache) imports no other module of the tools; the judge (parse, rules, verify, ...)
imports common only, so it never imports the runner that executes a log's code, nor the site; the site and the
reproduce room import the judge and common; ``use`` stands on its own. Every import statement counts, also one
inside a function (the commands import heavy modules lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO_ROOT

TOOLS = REPO_ROOT / "tools"
ALLOWED = {
    "common": {"common"},
    "judge": {"common", "judge"},
    "site": {"common", "judge", "site"},
    "reproduce": {"common", "judge", "reproduce"},
    "use": {"common", "use"},
}


def imported_rooms(path: Path) -> set[tuple[str, int]]:
    """(room, line) of every ``tools.<room>`` a module imports; ``tools.<module>`` at the top counts as "top"."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "tools" else [f"tools.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "tools" and len(parts) > 1:
                found.add((parts[1] if parts[1] in ALLOWED else "top", node.lineno))
    return found


def test_every_module_lives_in_a_room() -> None:
    loose = sorted(p.name for p in TOOLS.glob("*.py") if p.name not in ("__init__.py", "__main__.py", "cli.py"))
    assert loose == [], f"modules outside the rooms {sorted(ALLOWED)}: {loose}"
    assert {p.name for p in TOOLS.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} == set(ALLOWED)


def test_each_room_imports_only_downward() -> None:
    wrong = []
    for room, allowed in ALLOWED.items():
        for path in sorted((TOOLS / room).rglob("*.py")):
            for target, line in sorted(imported_rooms(path)):
                if target not in allowed:
                    wrong.append(f"{path.relative_to(REPO_ROOT)}:{line} imports tools.{target}")
    assert not wrong, "\n".join(wrong)


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tools.reproduce.runner import load_claim\n    import tools.site.board\n")
    assert imported_rooms(module) == {("reproduce", 2), ("site", 3)}
