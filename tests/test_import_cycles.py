"""No import cycle inside ``harness/``: every import statement counts, those inside functions
and ``from . import x`` of a package's own ``__init__`` included; only ``if TYPE_CHECKING:``
blocks are left out (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "harness"


def module_name(path: Path) -> str:
    parts = ["harness", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    """Import nodes of ``tree``, skipping the bodies of ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the modules of ``harness`` it imports."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import sub` imports the module pkg.sub; `from pkg import name`
                # runs pkg's __init__ for the name
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for t in targets:
                while t and t not in modules:  # `import harness.x.y` also imports harness.x
                    t = t.rpartition(".")[0]
                if t and t != mod and t.startswith("harness"):
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def harness_graph() -> dict[str, set[str]]:
    return edges({module_name(p): p for p in PACKAGE.rglob("*.py")})


def test_the_checker_finds_a_cycle():
    g = {"harness.a": {"harness.b"}, "harness.b": {"harness.c"}, "harness.c": {"harness.a"},
         "harness.d": {"harness.a"}}
    assert cycles(g) == [["harness.a", "harness.b", "harness.c"]]


def test_imports_inside_functions_and_of_the_package_init_count(tmp_path):
    src = tmp_path / "harness"
    (src / "sub").mkdir(parents=True)
    (src / "__init__.py").write_text("from .sub import thing\nfrom . import sub\n")
    (src / "sub" / "__init__.py").write_text("def f():\n    from .. import __version__\n")
    (src / "sub" / "thing.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness import x\n")
    mods = {"harness": src / "__init__.py", "harness.sub": src / "sub" / "__init__.py",
            "harness.sub.thing": src / "sub" / "thing.py"}
    g = edges(mods)
    assert g["harness"] == {"harness.sub.thing", "harness.sub"}
    assert g["harness.sub"] == {"harness"}  # inside a function, and `from .. import`
    assert g["harness.sub.thing"] == set()  # TYPE_CHECKING only
    assert cycles(g) == [["harness", "harness.sub"]]


def test_no_import_cycle_in_harness():
    found = cycles(harness_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)
