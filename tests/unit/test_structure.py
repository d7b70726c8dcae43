"""The shape of the code: small modules, no import cycles, tiers that do not lean on each other.

* no module over 400 lines outside tests;
* no import cycle between files: every import counts, at the top of a file or
  inside a function, under ``TYPE_CHECKING`` too; ``from pkg import name`` is an
  edge to ``pkg/__init__.py`` unless ``name`` is a submodule;
* ``ring1`` (connector runtime) imports nothing from ``ring0`` (operators), and
  ``ring0`` nothing from ``ring1``;
* no file refers to a document that is not in the repository.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "ring0", "ring1", "connectors", "bench")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``path`` imports (resolved to files)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if is_pkg else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    found.add(sub)
                elif base in known:
                    found.add(base)
    found.discard(name)
    return found


def test_no_module_is_over_400_lines() -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in modules().values()
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not big, f"modules over 400 lines: {big}"


def test_no_import_cycle_between_files() -> None:
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    import sys

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            connect(v)
    assert not cycles, f"import cycles: {cycles}"


def test_ring1_and_ring0_do_not_import_each_other() -> None:
    known = modules()
    for tier, other in (("ring1", "ring0"), ("ring0", "ring1")):
        for name, path in known.items():
            if name.split(".")[0] == tier:
                bad = [m for m in imports(name, path, known) if m.split(".")[0] == other]
                assert not bad, f"{name} imports {bad}"


def test_no_file_refers_to_a_document_not_in_the_repository() -> None:
    pattern = re.compile(r"\b(DESIGN\.md|STYLE\.md|SERVICES\.md|docs/[\w./-]+\.md)")
    missing = []
    files = [*ROOT.glob("*.md"), *ROOT.glob("docs/**/*.md"), *ROOT.glob("examples/**/*.md")]
    for pkg in (*PACKAGES, "tests", "scripts"):
        files += [p for p in (ROOT / pkg).rglob("*") if p.suffix in (".py", ".md", "")]
    for path in files:
        if not path.is_file() or path == Path(__file__):
            continue
        for ref in pattern.findall(path.read_text(errors="replace")):
            if not (ROOT / ref).exists():
                missing.append(f"{path.relative_to(ROOT)} -> {ref}")
    assert not missing, f"references to documents that are not here: {missing}"
