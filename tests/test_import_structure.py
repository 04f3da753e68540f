"""Import structure of the repository, checked by parsing the source (nothing product is imported).

1. No import cycles among the product modules. The product packages are discovered: every folder
   under the repo root that holds an ``__init__.py`` (not ``tests``, not a virtual environment, not
   a hidden folder), with every sub-package below it that also holds one. Each module is a node;
   a package is its ``__init__`` (``pkg`` <-> ``pkg/__init__.py``). EVERY import in a file is an
   edge: at module level, under ``if TYPE_CHECKING:``, inside functions, and
   ``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a literal (or module-constant)
   name. A cycle through a TYPE_CHECKING or lazy import still means two modules depend on each
   other's definitions, and the project wants none.

   Edge resolution, so that a package ``__init__`` that re-exports its submodules is not a cycle:
   ``import a.b`` is an edge to ``a.b`` only (not to ``a``: the graph models which module's
   definitions are needed, and ``pkg/__init__.py -> pkg.sub -> pkg.other`` is no cycle);
   ``from a.b import c`` is an edge to ``a.b.c`` when ``a/b/c.py`` or ``a/b/c/__init__.py``
   exists, else to ``a.b``; relative imports are resolved against the importing module's package.
   A name that is not a product module resolves to its longest product-module prefix, or to
   nothing (third-party and standard-library imports are not nodes). Self-edges are ignored.

2. No script imports another script: the repo-root ``*.py`` files and everything under ``bench/``
   and ``scripts/`` must not import a top-level script module (the stem of any repo-root ``*.py``).
   Shared code belongs in a product package.

3. The checker can fail: the graph code is run on small synthetic trees written into ``tmp_path``
   (a two-module cycle through TYPE_CHECKING, a three-module cycle through relative and lazy
   imports, package ``__init__`` re-exports that must NOT be flagged, scripts importing scripts).
"""
from __future__ import annotations

import ast
import textwrap
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Top-level folders that are never product packages, even with an ``__init__.py``.
EXCLUDED_TOP_LEVEL = frozenset({"tests", "venv", ".venv", "__pycache__"})
#: Folders (besides the repo root itself) whose ``*.py`` files are scripts for check 2.
SCRIPT_FOLDERS = ("bench", "scripts")
#: The product packages that must at least be found (guards against a vacuous pass).
EXPECTED_PACKAGES = frozenset({"scene", "gaussian_renderer", "flame_model", "utils", "synthetic"})

TYPE_CHECKING_NOTE = "under `if TYPE_CHECKING:`"


# ----------------------------------------------------------------------------------------------
# Parsing: every import in a file, with its line and the context it runs in.
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportRef:
    """One imported dotted name found in a file.

    ``target`` is absolute: for ``import a.b`` it is ``a.b``; for ``from a.b import c`` it is
    ``a.b.c`` (``c`` may be a submodule or just a name: resolution decides); for ``from a.b import *``
    it is ``a.b``. ``where`` says in which context the import runs ("" for plain module level).
    """

    target: str
    line: int
    where: str


def _is_type_checking(test: ast.expr) -> bool:
    """Whether an ``if`` test is ``TYPE_CHECKING`` or ``<anything>.TYPE_CHECKING``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk_with_context(tree: ast.Module) -> Iterator[tuple[ast.AST, tuple[str, ...]]]:
    """Every node of ``tree`` with the contexts enclosing it (TYPE_CHECKING blocks, functions)."""
    stack: list[tuple[ast.AST, tuple[str, ...]]] = [(tree, ())]
    while stack:
        node, ctx = stack.pop()
        yield node, ctx
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend((child, ctx + (TYPE_CHECKING_NOTE,)) for child in node.body)
            stack.extend((child, ctx) for child in node.orelse)
            continue
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner = ctx + (f"inside `def {node.name}` (lazy)",)
        elif isinstance(node, ast.Lambda):
            inner = ctx + ("inside a lambda (lazy)",)
        else:
            inner = ctx
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def _module_string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments (to resolve ``import_module(NAME)``)."""
    constants: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str):
            constants[target.id] = value.value
    return constants


def _dynamic_import_name(call: ast.Call, constants: Mapping[str, str]) -> str | None:
    """The absolute module name of ``importlib.import_module(X)`` / ``__import__(X)``, if static."""
    func = call.func
    is_import_call = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in {"import_module", "__import__"})
    if not is_import_call or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        name = arg.value
    elif isinstance(arg, ast.Name) and arg.id in constants:
        name = constants[arg.id]
    else:
        return None
    return name if name and not name.startswith(".") else None


def _relative_base(module: str, is_package: bool, level: int, name: str | None) -> str | None:
    """Absolute base of ``from <level dots><name> import ...`` inside ``module``; None if invalid."""
    package = module if is_package else module.rpartition(".")[0]
    parts = package.split(".") if package else []
    if level - 1 > len(parts) or not parts:
        return None
    parts = parts[:len(parts) - (level - 1)]
    if not parts:
        return None
    return ".".join(parts + ([name] if name else []))


def iter_imports(tree: ast.Module, module: str = "", is_package: bool = False) -> Iterator[ImportRef]:
    """Every import in ``tree`` (any depth, any context) as absolute :class:`ImportRef` s.

    ``module``/``is_package`` name the file being parsed, to resolve relative imports; relative
    imports that cannot be resolved (a top-level script, too many dots) are skipped.
    """
    constants = _module_string_constants(tree)
    for node, ctx in _walk_with_context(tree):
        where = ", ".join(ctx)
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield ImportRef(alias.name, node.lineno, where)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _relative_base(module, is_package, node.level, node.module)
            else:
                base = node.module
            if not base:
                continue
            for alias in node.names:
                target = base if alias.name == "*" else f"{base}.{alias.name}"
                yield ImportRef(target, node.lineno, where)
        elif isinstance(node, ast.Call):
            name = _dynamic_import_name(node, constants)
            if name:
                note = "dynamic import" + (f", {where}" if where else "")
                yield ImportRef(name, node.lineno, note)


def parse_file(path: Path) -> ast.Module:
    """Parse one source file (a syntax error names the file)."""
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# ----------------------------------------------------------------------------------------------
# Check 1: the module graph of the product packages.
# ----------------------------------------------------------------------------------------------

def discover_packages(root: Path) -> list[str]:
    """Top-level product packages: folders under ``root`` with an ``__init__.py``.

    Excluded: :data:`EXCLUDED_TOP_LEVEL` and hidden folders (``.git``, ``.venv``, ...).
    """
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and p.name not in EXCLUDED_TOP_LEVEL
                  and (p / "__init__.py").is_file())


def discover_modules(root: Path, packages: Iterable[str] | None = None) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the product packages and sub-packages.

    A package is its ``__init__.py`` under the package's own name. Sub-folders are walked only
    when they hold an ``__init__.py`` (regular packages); hidden folders are skipped.
    """
    modules: dict[str, Path] = {}
    pending = [(root / name, name) for name in (discover_packages(root) if packages is None else packages)]
    while pending:
        folder, dotted = pending.pop()
        modules[dotted] = folder / "__init__.py"
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and (entry / "__init__.py").is_file():
                pending.append((entry, f"{dotted}.{entry.name}"))
            elif entry.is_file() and entry.suffix == ".py" and entry.name != "__init__.py":
                modules[f"{dotted}.{entry.stem}"] = entry
    return modules


def resolve_module(target: str, modules: Mapping[str, Path]) -> str | None:
    """The product module an imported dotted name lands on: its longest known prefix, or None.

    ``a.b.c`` -> ``a.b.c`` when that module exists (``from a.b import c`` with ``c`` a submodule),
    else ``a.b`` (``c`` is a name defined in ``a.b``), and so on.
    """
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


@dataclass(frozen=True)
class Edge:
    """``src`` imports (a definition of) ``dst``, at ``path:line``; ``where`` is its context."""

    src: str
    dst: str
    path: str
    line: int
    where: str

    def location(self) -> str:
        """``path:line`` plus the context, e.g. ``scene/a.py:12 (under `if TYPE_CHECKING:`)``."""
        return f"{self.path}:{self.line}" + (f" ({self.where})" if self.where else "")


@dataclass
class ImportGraph:
    """The module-level import graph: nodes are product modules, edges carry their locations."""

    modules: dict[str, Path]
    edges: list[Edge]

    def adjacency(self) -> dict[str, set[str]]:
        """Node -> set of the nodes it imports (every node present, self-edges dropped)."""
        adj: dict[str, set[str]] = {name: set() for name in self.modules}
        for edge in self.edges:
            if edge.src != edge.dst:
                adj[edge.src].add(edge.dst)
        return adj

    def edges_between(self, src: str, dst: str) -> list[Edge]:
        """Every import statement by which ``src`` imports ``dst``, in file order."""
        return sorted((e for e in self.edges if e.src == src and e.dst == dst), key=lambda e: e.line)


def _display_path(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def build_import_graph(root: Path, packages: Iterable[str] | None = None) -> ImportGraph:
    """Parse every module of the product packages under ``root`` into an :class:`ImportGraph`."""
    modules = discover_modules(root, packages)
    edges: list[Edge] = []
    for name, path in sorted(modules.items()):
        tree = parse_file(path)
        for ref in iter_imports(tree, name, is_package=path.name == "__init__.py"):
            dst = resolve_module(ref.target, modules)
            if dst is not None and dst != name:
                edges.append(Edge(name, dst, _display_path(path, root), ref.line, ref.where))
    return ImportGraph(modules, edges)


def strongly_connected_components(adj: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit); each component sorted, list sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(adj):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(adj[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(adj.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return sorted(components)


def _shortest_path(adj: Mapping[str, Iterable[str]], start: str, goal: str, allowed: set[str]) -> list[str]:
    """Breadth-first shortest path ``start .. goal`` through ``allowed`` nodes ([] if none)."""
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while previous[path[-1]] is not None:
                path.append(previous[path[-1]])  # type: ignore[arg-type]
            return path[::-1]
        for child in sorted(adj[node]):
            if child in allowed and child not in previous:
                previous[child] = node
                queue.append(child)
    return []


def find_cycles(graph: ImportGraph) -> list[tuple[list[str], list[str]]]:
    """Cycles among the product modules, as ``(component, cycles)`` per strongly connected component.

    Per component of more than one module, one shortest cycle through each of its edges is listed
    (duplicates removed), so every import that keeps the component together is shown once at least.
    Each cycle is a closed chain ``[a, b, ..., a]``.
    """
    adj = graph.adjacency()
    result: list[tuple[list[str], list[str]]] = []
    for component in strongly_connected_components(adj):
        if len(component) < 2:
            continue
        members = set(component)
        seen: set[tuple[str, ...]] = set()
        cycles: list[list[str]] = []
        for src in component:
            for dst in sorted(adj[src] & members):
                back = _shortest_path(adj, dst, src, members)
                cycle = [src] + back  # src -> dst -> ... -> src
                ring = cycle[:-1]
                pivot = ring.index(min(ring))
                key = tuple(ring[pivot:] + ring[:pivot])
                if key not in seen:
                    seen.add(key)
                    cycles.append(list(key) + [key[0]])
        cycles.sort(key=lambda c: (len(c), c))
        result.append((component, cycles))
    return result


def format_cycles(graph: ImportGraph, cycles: list[tuple[list[str], list[str]]]) -> str:
    """A readable report: each component, each cycle as ``a -> b -> a``, each edge's file:line."""
    lines = [f"{len(cycles)} import cycle group(s) among the product modules "
             "(every import counts: module level, TYPE_CHECKING, lazy/in-function, importlib):"]
    for number, (component, component_cycles) in enumerate(cycles, 1):
        lines.append("")
        lines.append(f"[{number}] {len(component)} modules depend on each other: {', '.join(component)}")
        for cycle in component_cycles:
            lines.append(f"  cycle: {' -> '.join(cycle)}")
            for src, dst in zip(cycle, cycle[1:]):
                where = "; ".join(e.location() for e in graph.edges_between(src, dst))
                lines.append(f"      {src} -> {dst}: {where}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Check 2: scripts importing scripts.
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScriptImport:
    """A script (``path``) importing the top-level script module ``imported`` at ``line``."""

    path: str
    line: int
    imported: str
    where: str

    def describe(self) -> str:
        """``bench/x.py:12: imports script 'train' (train.py)`` plus the context, if any."""
        note = f" ({self.where})" if self.where else ""
        return f"{self.path}:{self.line}: imports script {self.imported!r} ({self.imported}.py){note}"


def script_modules(root: Path) -> set[str]:
    """The top-level script module names: stems of the ``*.py`` files in the repo root."""
    return {p.stem for p in root.glob("*.py") if p.is_file()}


def script_files(root: Path) -> list[Path]:
    """The repo-root ``*.py`` files and every ``*.py`` under :data:`SCRIPT_FOLDERS`."""
    files = [p for p in root.glob("*.py") if p.is_file()]
    for folder in SCRIPT_FOLDERS:
        if (root / folder).is_dir():
            files += [p for p in (root / folder).rglob("*.py")
                      if p.is_file() and "__pycache__" not in p.parts]
    return sorted(files)


def find_script_imports(root: Path) -> list[ScriptImport]:
    """Every import of a top-level script module by a script (a script importing itself excepted)."""
    scripts = script_modules(root)
    found: list[ScriptImport] = []
    for path in script_files(root):
        own = path.stem if path.parent == root else None
        for ref in iter_imports(parse_file(path)):
            top = ref.target.split(".")[0]
            if top in scripts and top != own:
                found.append(ScriptImport(_display_path(path, root), ref.line, top, ref.where))
    return found


def format_script_imports(found: list[ScriptImport]) -> str:
    """A readable report of :func:`find_script_imports`."""
    lines = [f"{len(found)} import(s) of a top-level script by another script "
             "(move the shared code into a product package):"]
    lines += [f"  {item.describe()}" for item in found]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The checks on the real tree.
# ----------------------------------------------------------------------------------------------

def test_product_packages_are_discovered() -> None:
    """The graph covers (at least) the known product packages, and has edges: no vacuous pass."""
    packages = set(discover_packages(REPO))
    assert EXPECTED_PACKAGES <= packages, f"product packages not discovered: {sorted(EXPECTED_PACKAGES - packages)}"
    assert not packages & {"tests", ".venv", "bench", "scripts"}, sorted(packages)
    graph = build_import_graph(REPO)
    assert len(graph.modules) > 20 and len(graph.edges) > 20, (len(graph.modules), len(graph.edges))


def test_no_import_cycles_in_product_packages() -> None:
    """No two product modules depend on each other, directly or through others, by any import."""
    graph = build_import_graph(REPO)
    cycles = find_cycles(graph)
    if cycles:
        pytest.fail(format_cycles(graph, cycles), pytrace=False)


def test_no_script_imports_another_script() -> None:
    """Top-level scripts, bench/ and scripts/ do not import a top-level script module."""
    found = find_script_imports(REPO)
    if found:
        pytest.fail(format_script_imports(found), pytrace=False)


# ----------------------------------------------------------------------------------------------
# Self-tests: the checker detects what it claims, and only that.
# ----------------------------------------------------------------------------------------------

def _write_tree(root: Path, files: Mapping[str, str]) -> Path:
    """Write ``{relative path: source}`` under ``root`` (sources dedented) and return ``root``."""
    for relative, source in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    return root


def _cycle_chains(root: Path) -> list[str]:
    graph = build_import_graph(root)
    return [" -> ".join(cycle) for _, cycles in find_cycles(graph) for cycle in cycles]


def test_discovery_skips_tests_hidden_and_venv_and_finds_sub_packages(tmp_path: Path) -> None:
    root = _write_tree(tmp_path, {
        "pkg/__init__.py": "", "pkg/mod.py": "", "pkg/sub/__init__.py": "", "pkg/sub/deep.py": "",
        "pkg/assets/not_a_package.py": "", "pkg/.hidden/__init__.py": "",
        "tests/__init__.py": "", ".venv/lib/__init__.py": "", ".hidden/__init__.py": "",
        "bench/tool.py": "", "script.py": "",
    })
    assert discover_packages(root) == ["pkg"]
    assert sorted(discover_modules(root)) == ["pkg", "pkg.mod", "pkg.sub", "pkg.sub.deep"]


def test_resolution_of_submodules_names_and_relative_imports(tmp_path: Path) -> None:
    root = _write_tree(tmp_path, {
        "a/__init__.py": "",
        "a/b/__init__.py": "X = 1\n",
        "a/b/c.py": "",
        "a/user.py": """
            import os
            import a.b.c
            from a.b import c, X
            from .b import X as Y
            from . import b
            from ..outside import nothing
            """,
    })
    graph = build_import_graph(root)
    found = sorted((e.dst, e.line) for e in graph.edges if e.src == "a.user")
    assert found == [("a.b", 3), ("a.b", 4), ("a.b", 5), ("a.b.c", 2), ("a.b.c", 3)]


def test_detects_a_two_module_cycle_through_type_checking(tmp_path: Path) -> None:
    root = _write_tree(tmp_path, {
        "app/__init__.py": "",
        "app/model.py": """
            from typing import TYPE_CHECKING

            if TYPE_CHECKING:
                from app.config import Config
            """,
        "app/config.py": "from app.model import Model\n",
    })
    graph = build_import_graph(root)
    cycles = find_cycles(graph)
    assert [component for component, _ in cycles] == [["app.config", "app.model"]]
    assert _cycle_chains(root) == ["app.config -> app.model -> app.config"]
    report = format_cycles(graph, cycles)
    assert "app/model.py:4 (under `if TYPE_CHECKING:`)" in report
    assert "app/config.py:1" in report


def test_detects_a_three_module_cycle_via_relative_and_lazy_imports(tmp_path: Path) -> None:
    root = _write_tree(tmp_path, {
        "b/__init__.py": "",
        "b/sub/__init__.py": "",
        "b/sub/p.py": "from . import q\n",          # submodule by `from . import x`
        "b/sub/q.py": "from ..r import helper\n",   # parent package by `from ..x import y`
        "b/r.py": """
            def helper():
                from .sub.p import thing  # lazy: still an edge
                return thing
            """,
    })
    graph = build_import_graph(root)
    assert _cycle_chains(root) == ["b.r -> b.sub.p -> b.sub.q -> b.r"]
    assert "b/r.py:2 (inside `def helper` (lazy))" in format_cycles(graph, find_cycles(graph))


def test_detects_a_cycle_through_importlib_and_reports_every_edge(tmp_path: Path) -> None:
    root = _write_tree(tmp_path, {
        "c/__init__.py": "",
        "c/one.py": "import c.two\nfrom c.three import z\n",
        "c/two.py": 'import importlib\nNAME = "c.one"\nmod = importlib.import_module(NAME)\n',
        "c/three.py": "from c import one\n",
    })
    # Two cycles share c.one; both are listed, each edge once at least.
    assert _cycle_chains(root) == ["c.one -> c.three -> c.one", "c.one -> c.two -> c.one"]
    graph = build_import_graph(root)
    assert "c/two.py:3 (dynamic import)" in format_cycles(graph, find_cycles(graph))


def test_package_init_reexports_are_not_a_cycle(tmp_path: Path) -> None:
    root = _write_tree(tmp_path, {
        "pkg/__init__.py": """
            from .sub import f
            from . import other
            from . import NAME_DEFINED_LATER  # a self-edge: ignored
            import pkg.sub
            """,
        "pkg/sub.py": "from pkg.other import g\nimport pkg.other\nfrom .other import g as h\n",
        "pkg/other.py": "import os\n\ndef g():\n    pass\n",
    })
    graph = build_import_graph(root)
    assert {(e.src, e.dst) for e in graph.edges} == {("pkg", "pkg.sub"), ("pkg", "pkg.other"),
                                                     ("pkg.sub", "pkg.other")}
    assert find_cycles(graph) == []


def test_a_submodule_importing_its_own_package_is_a_cycle(tmp_path: Path) -> None:
    """The counterpart: ``pkg/__init__`` imports ``pkg.sub``, which imports a name from ``pkg``."""
    root = _write_tree(tmp_path, {
        "pkg/__init__.py": "from .sub import f\nCONSTANT = 1\n",
        "pkg/sub.py": "def f():\n    from pkg import CONSTANT\n    return CONSTANT\n",
    })
    assert _cycle_chains(root) == ["pkg -> pkg.sub -> pkg"]


def test_detects_a_script_importing_a_script(tmp_path: Path) -> None:
    root = _write_tree(tmp_path, {
        "lib/__init__.py": "",
        "train.py": "import lib\nfrom train import itself_is_fine\n",
        "export.py": "import train\n",
        "bench/fit.py": "import sys\nfrom export import save as s\nimport lib\n",
        "scripts/tool.py": 'def main():\n    import importlib\n    importlib.import_module("train")\n',
        "scripts/nested/ok.py": "import lib\nfrom lib import x\nimport training_utils\n",
    })
    found = find_script_imports(root)
    assert [(f.path, f.line, f.imported) for f in found] == [
        ("bench/fit.py", 2, "export"), ("export.py", 1, "train"), ("scripts/tool.py", 3, "train")]
    report = format_script_imports(found)
    assert "scripts/tool.py:3: imports script 'train' (train.py) (dynamic import, inside `def main` (lazy))" in report


def test_tarjan_on_a_long_chain_needs_no_recursion() -> None:
    """A 5000-module ring is one component (the iterative version has no recursion limit)."""
    n = 5000
    adj = {f"m{i}": {f"m{(i + 1) % n}"} for i in range(n)}
    components = strongly_connected_components(adj)
    assert len(components) == 1 and len(components[0]) == n
    adj["m0"] = set()  # break the ring: every module is its own component
    assert len(strongly_connected_components(adj)) == n
