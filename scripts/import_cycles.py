"""Import circles between conveyor modules (module-level imports only).

Reads src/conveyor with `ast`; an import inside a function or under
`if TYPE_CHECKING:` is not a module-level import and is left out. Prints each
strongly connected component of more than one module (a circle), or "no circles".

    python scripts/import_cycles.py [--packages] [--lazy] [ROOT]
      --packages  between subpackages (conveyor.cli, conveyor.demo, ...), not files
      --lazy      imports inside functions count too (a circle all the same at run time)
      --typed     imports under `if TYPE_CHECKING:` count too (type-only cycles)
      ROOT        another checkout's src/ directory
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
LAZY = False
TYPED = False


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(body: list[ast.stmt]) -> list[ast.stmt]:
    found: list[ast.stmt] = []
    for node in body:
        if LAZY and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found += _top_level_imports(node.body)
        if LAZY and isinstance(node, ast.With | ast.AsyncWith | ast.For | ast.While):
            found += _top_level_imports(node.body)
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and (TYPED or not _is_type_checking(node)):
            found += _top_level_imports(node.body) + _top_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            found += _top_level_imports(node.body)
            for handler in node.handlers:
                found += _top_level_imports(handler.body)
    return found


def imports_of(path: Path, name: str, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _top_level_imports(tree.body):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            assert isinstance(node, ast.ImportFrom)
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                targets.add(candidate)
    return targets


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def main() -> int:
    global LAZY, ROOT, TYPED
    LAZY = "--lazy" in sys.argv
    TYPED = "--typed" in sys.argv
    roots = [a for a in sys.argv[1:] if not a.startswith("--")]
    if roots:
        ROOT = Path(roots[0]).resolve()
    files = {module_name(p): p for p in sorted((ROOT / "conveyor").rglob("*.py"))}
    modules = set(files)
    graph = {name: imports_of(path, name, modules) for name, path in files.items()}
    if "--packages" in sys.argv:

        def package_of(name: str) -> str:
            return ".".join(name.split(".")[:2])

        packaged: dict[str, set[str]] = {}
        for name, targets in graph.items():
            mine = package_of(name)
            packaged.setdefault(mine, set()).update(
                package_of(t) for t in targets if package_of(t) != mine
            )
        graph = packaged
    found = circles(graph)
    for component in found:
        print(" <-> ".join(component))
        for name in component:
            inner = sorted(t for t in graph[name] if t in component)
            print(f"    {name} imports {', '.join(inner)}")
    print(f"{len(found)} circle(s)" if found else "no circles")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
