"""Check the package's shape: no import cycles, no module or class too long.

Usage::

    python scripts/check_structure.py [SRC_DIR]

``SRC_DIR`` defaults to ``src/schemacache`` next to this script. Every import
that runs counts, also one inside a function (a lazy import still ties two
modules together); imports under ``if TYPE_CHECKING:`` never run and do not.
``from package import name`` is an edge to ``package.name`` when that is a
module, else to the package's ``__init__``.

Exit status 0 when the package is clean; 1 with one line per finding otherwise.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE_LINES = 350
"""A module longer than this is two concerns; split it."""

MAX_CLASS_LINES = 250
"""A class longer than this does too much; compose it from parts."""

MODULE_ALLOWLIST: dict[str, int] = {
    # Today's exceptions, each with the length it may not grow past. Shrink this
    # list as modules are split; never add to it.
}

CLASS_ALLOWLIST: dict[str, int] = {
}

DEFAULT_SRC = Path(__file__).resolve().parent.parent / "src" / "schemacache"


@dataclass(frozen=True)
class Finding:
    """One violation, printed as one line."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def module_names(src: Path) -> dict[str, Path]:
    """Map every dotted module name under ``src`` to its file."""
    package = src.name
    modules: dict[str, Path] = {}
    for path in sorted(src.rglob("*.py")):
        parts = [package, *path.relative_to(src).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_package(name: str, modules: dict[str, Path]) -> bool:
    return modules[name].name == "__init__.py"


def _resolve_base(module: str, node: ast.ImportFrom, modules: dict[str, Path]) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if _is_package(module, modules) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    """Ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    hidden.update(id(n) for n in ast.walk(child))
    return hidden


def imports_of(module: str, tree: ast.Module, modules: dict[str, Path]) -> set[str]:
    """The package modules that ``module`` imports when it runs."""
    hidden = _type_checking_nodes(tree)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in hidden:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_base(module, node, modules)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                targets.add(candidate if candidate in modules else base)
    return {t for t in targets if t in modules and t != module}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in sorted(graph[name]):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == name:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return cycles


def _classes(tree: ast.Module) -> Iterator[ast.ClassDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            yield node


def _length(node: ast.ClassDef) -> int:
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    return (node.end_lineno or node.lineno) - first + 1


def check(src: Path = DEFAULT_SRC) -> list[Finding]:
    """Every finding for the package at ``src`` (default: this repository's)."""
    modules = module_names(src)
    findings: list[Finding] = []
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        graph[name] = imports_of(name, tree, modules)
        lines = len(text.splitlines())
        limit = MODULE_ALLOWLIST.get(name, MAX_MODULE_LINES)
        if lines > limit:
            findings.append(Finding(name, f"{lines} lines (limit {limit})"))
        for cls in _classes(tree):
            qualified = f"{name}.{cls.name}"
            length = _length(cls)
            limit = CLASS_ALLOWLIST.get(qualified, MAX_CLASS_LINES)
            if length > limit:
                findings.append(Finding(qualified, f"class of {length} lines (limit {limit})"))
    for cycle in find_cycles(graph):
        findings.append(Finding(" <-> ".join(cycle), "import cycle"))
    return findings


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else DEFAULT_SRC
    findings = check(src)
    for finding in findings:
        print(finding)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
