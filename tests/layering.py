"""The package's import rules, checked from the source (an AST scan that sees
imports inside functions too). ``tests/test_layering.py`` runs it on ``src/fsqkit``
and on copies with a rule broken on purpose.

The rules (README, "How the code is organised"):

- ``quantizers``, ``training``, ``data`` and ``reference`` import nothing else
  from fsqkit; ``compat`` only ``quantizers``; ``metrics`` only those three;
- models in order: ``tokenizer`` < ``maskgit`` < ``uvim`` (each may also import
  everything above it in this list);
- ``experiments`` and ``cli`` may import anything, and nothing in the library
  imports them (``experiments`` does not import ``cli`` either);
- a ``_private`` module or package is imported only from inside the package
  that holds it;
- no import circle between files.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

CORE = {"quantizers", "training", "data", "reference"}
ALLOWED: dict[str, set[str]] = {
    "": {"quantizers"},  # fsqkit/__init__.py: the quantizers only (a light import)
    "quantizers": set(),
    "training": set(),
    "data": set(),
    "reference": set(),
    "compat": {"quantizers"},
    "metrics": {"quantizers", "training", "data"},
    "tokenizer": {"quantizers", "training", "data", "metrics"},
    "maskgit": {"quantizers", "training", "data", "metrics", "tokenizer"},
    "uvim": {"quantizers", "training", "data", "metrics", "tokenizer", "maskgit"},
    "experiments": CORE | {"compat", "metrics", "tokenizer", "maskgit", "uvim"},
    "cli": CORE | {"compat", "metrics", "tokenizer", "maskgit", "uvim", "experiments"},
}


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (module names, ``fsqkit.x.y``) at ``line``."""

    source: str
    target: str
    line: int
    path: str


def module_name(root: Path, path: Path) -> str:
    """``fsqkit.a.b`` for ``root/a/b.py`` (``root`` is the ``fsqkit`` folder)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def scan(root: Path) -> tuple[set[str], list[Edge]]:
    """All modules under ``root`` and every import of one of them."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    edges: list[Edge] = []
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if is_package else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([base] if base else []))
                # ``from pkg import sub`` imports the module ``pkg.sub`` when there is one
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            for target in targets:
                if target.split(".")[0] == root.name:
                    edges.append(Edge(name, target, node.lineno, str(path)))
    return modules, edges


def area(module: str) -> str:
    """The top-level part of fsqkit a module belongs to (``""`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _private_owner(target: str) -> str | None:
    """The package a private target lives in (None if no part of it is private)."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def violations(root: Path) -> list[str]:
    """Every broken rule under ``root``, one line each (empty when all hold)."""
    modules, edges = scan(root)
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for e in edges:
        src, dst = area(e.source), area(e.target)
        where = f"{e.path}:{e.line}: {e.source} imports {e.target}"
        if dst != src and dst not in ALLOWED.get(src, set()):
            problems.append(f"{where} ({src or 'fsqkit'} may not import {dst or 'fsqkit'})")
        owner = _private_owner(e.target)
        if owner is not None and not (e.source == owner or e.source.startswith(owner + ".")):
            problems.append(f"{where} (private to {owner})")
        if e.target in modules and e.target != e.source:
            graph[e.source].add(e.target)
    problems.extend(f"import circle: {' -> '.join(c)}" for c in _cycles(graph))
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_circle_in(sorted(component), graph))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _circle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A concrete circle through the first module of a strongly connected component."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in members)
        back = [w for w in nxt if w == start]
        if back or not nxt:
            return [*path, start]
        step = next((w for w in nxt if w not in seen), None)
        if step is None:  # closes a smaller circle: report from where it starts
            w = nxt[0]
            return [*path[path.index(w) :], w]
        path.append(step)
        seen.add(step)
