"""The architecture of ``launcher/`` as a test, read with ``ast`` (nothing is imported).

Layers, lowest first; every import points to its own layer or a lower one, and no imports form a
circle. Every import counts: module-level ones, function-level (lazy) ones, those under
``if TYPE_CHECKING:`` and ``importlib.import_module("launcher....")`` with a constant or an
f-string whose constant prefix names the target package. A lazy import only moves the moment a
dependency is paid for; it does not change which way the dependency points.

    leaves    launcher (package), errors, redact, protocol
    spec      the request and its decided form (LaunchSpec, settings, job file, recipe and its
              arguments, presets; Resolved / BatchPlan / Resume / ZeroAuto)
    sizing    estimate, --zero auto
    render    pure renderers and the DeepSpeed schema
    rules     validate, passthrough, batch arithmetic, resume rules
    records   the run folder: layout, runs listing, verdict, checkpoints, resume, metrics reading
    machine   what this machine and the installed libraries allow
    run       one node's process tree: supervisor, signals, console, rendezvous, log following
    rank      inside each rank around the recipe: entry, guard, recorder, saving, op-build guard
    backends  __init__ (lazy factory), base (Plan / Job / Backend, the node command), local, slurm
    launch    launcher/launch.py: the one execute flow
    cli       one module per subcommand plus the shared flags
    main      launcher/__main__.py

Also: every module at most MAX_MODULE_LINES lines and every function at most MAX_FUNCTION_LINES
(def line to last line; nested functions and methods measured on their own), except where
LONG_MODULES / LONG_FUNCTIONS say why.
"""

from __future__ import annotations

import ast
import functools
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(os.environ.get("FTLAUNCH_LAYERS_PACKAGE") or Path(__file__).resolve().parents[1] / "launcher")
ROOT = PACKAGE.name

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("leaves", ("launcher", "launcher.errors", "launcher.redact", "launcher.protocol")),
    ("spec", ("launcher.spec",)),
    ("sizing", ("launcher.sizing",)),
    ("render", ("launcher.render",)),
    ("rules", ("launcher.rules",)),
    ("records", ("launcher.records",)),
    ("machine", ("launcher.machine",)),
    ("run", ("launcher.run",)),
    ("rank", ("launcher.rank",)),
    ("backends", ("launcher.backends",)),
    ("launch", ("launcher.launch",)),
    ("cli", ("launcher.cli",)),
    ("main", ("launcher.__main__",)),
)
ORDER = " < ".join(name for name, _ in LAYERS)

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
# Exceptions, each with its reason; a stale entry (no longer needed) fails too.
LONG_MODULES: dict[str, str] = {}
LONG_FUNCTIONS: dict[str, str] = {}  # "launcher.module.Class.method" -> why


@dataclass(frozen=True)
class Import:
    src: str  # importing module
    dst: str  # imported module of the package
    path: Path
    line: int
    kind: str  # top | lazy | typing | dynamic
    text: str

    def where(self) -> str:
        return f"{self.path.relative_to(PACKAGE.parent)}:{self.line}: `{self.text}` ({self.kind} import)"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Walker(ast.NodeVisitor):
    def __init__(self, module: str, path: Path) -> None:
        self.module, self.path = module, path
        self.is_package = path.name == "__init__.py"
        self.in_function = 0
        self.in_type_checking = 0
        self.found: list[Import] = []
        self.seen: set[tuple[str, int, str]] = set()

    def _kind(self) -> str:
        return "typing" if self.in_type_checking else "lazy" if self.in_function else "top"

    def _target(self, dotted: str) -> str | None:
        """The longest prefix of ``dotted`` that is a module of the package."""
        parts = dotted.split(".")
        while parts and ".".join(parts) not in modules():
            parts.pop()
        return ".".join(parts) or None

    def _add(self, dotted: str, node: ast.AST, kind: str) -> None:
        target = self._target(dotted)
        key = (str(target), getattr(node, "lineno", 0), kind)
        if target is not None and target != self.module and key not in self.seen:
            self.seen.add(key)
            text = ast.unparse(node)
            self.found.append(Import(self.module, target, self.path, key[1], kind, text[:120]))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == ROOT:
                self._add(alias.name, node, self._kind())

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.module.split(".") if self.is_package else self.module.split(".")[:-1]
            base = base[: len(base) - node.level + 1]
            source = ".".join(base + ([node.module] if node.module else []))
        else:
            source = node.module or ""
        if source.split(".")[0] != ROOT:
            return
        for alias in node.names:  # `from launcher import rundir` imports the module launcher.rundir
            sub = f"{source}.{alias.name}"
            self._add(sub if sub in modules() else source, node, self._kind())

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.in_type_checking += 1
        for child in node.body:
            self.visit(child)
        self.in_type_checking -= 1
        for child in node.orelse:
            self.visit(child)

    def _function(self, node: ast.AST) -> None:
        self.in_function += 1
        self.generic_visit(node)
        self.in_function -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__", "lazy") and node.args:  # lazy: the CLI's subcommands
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self._add(arg.value, node, "dynamic")
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                self._add(str(arg.values[0].value).rstrip("."), node, "dynamic")
        self.generic_visit(node)


@functools.cache
def imports() -> tuple[Import, ...]:
    found: list[Import] = []
    for module, path in modules().items():
        walker = _Walker(module, path)
        walker.visit(ast.parse(path.read_text(), str(path)))
        found += walker.found
    return tuple(found)


def layer_of(module: str) -> tuple[int, str] | None:
    """The layer of the longest listed prefix; ``launcher`` itself only for the package module."""
    best: tuple[int, str, int] | None = None
    for index, (name, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == ROOT and module != ROOT:
                continue
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[2]
            ):
                best = (index, name, len(prefix))
    return (best[0], best[1]) if best else None


# ---------------------------------------------------------------- layers


def test_every_module_has_a_layer() -> None:
    homeless = [f"{m} ({p.relative_to(PACKAGE.parent)})" for m, p in modules().items() if layer_of(m) is None]
    assert not homeless, (
        "modules outside every layer (a new module goes into one of the layer packages, or LAYERS and "
        f"the docs say where it belongs): {', '.join(homeless)}"
    )


def test_imports_point_down() -> None:
    upward = []
    for imp in imports():
        src, dst = layer_of(imp.src), layer_of(imp.dst)
        if src is None or dst is None:
            continue  # reported by test_every_module_has_a_layer
        if dst[0] > src[0]:
            upward.append(f"{imp.where()}: {imp.src} [{src[1]}] imports {imp.dst} [{dst[1]}], a higher layer")
    assert not upward, (
        f"imports must point down ({ORDER}); move the shared code down, or pass the value in:\n  "
        + "\n  ".join(upward)
    )


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_no_import_circles() -> None:
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in imports():
        edges[imp.src].add(imp.dst)
        edges.setdefault(imp.dst, set())
    circles = _circles(edges)
    lines = []
    for circle in circles:
        members = set(circle)
        lines.append(" <-> ".join(circle))
        lines += [f"    {imp.where()}" for imp in imports() if imp.src in members and imp.dst in members]
    assert not circles, "import circles (lazy and TYPE_CHECKING imports count):\n  " + "\n  ".join(lines)


def test_the_walk_sees_every_kind_of_import() -> None:
    """Guards the test itself: a walker that saw nothing would pass everything. ``dynamic``: the
    CLI's lazy subcommands name their modules in full (``lazy("launcher.cli.plot", "plot_command")``),
    so this walk sees them like any other import."""
    kinds = {imp.kind for imp in imports()}
    assert len(imports()) > 100, f"only {len(imports())} imports found in {PACKAGE}: is the walk broken?"
    assert {"top", "lazy", "typing", "dynamic"} <= kinds, f"import kinds seen: {sorted(kinds)}"


# ---------------------------------------------------------------- sizes


def _functions(tree: ast.AST, prefix: str) -> list[tuple[str, int, int]]:
    out: list[tuple[str, int, int]] = []

    def walk(node: ast.AST, qual: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{qual}.{child.name}"
                out.append((name, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1))
                walk(child, name)
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{qual}.{child.name}")
            else:
                walk(child, qual)

    walk(tree, prefix)
    return out


def test_modules_are_short() -> None:
    sizes = {m: len(p.read_text().splitlines()) for m, p in modules().items()}
    long = [f"{m}: {n} lines" for m, n in sizes.items() if n > MAX_MODULE_LINES and m not in LONG_MODULES]
    stale = [m for m in LONG_MODULES if sizes.get(m, 0) <= MAX_MODULE_LINES]
    assert not long, (
        f"modules over {MAX_MODULE_LINES} lines (split by job, or add to LONG_MODULES with why): {long}"
    )
    assert not stale, f"LONG_MODULES entries no longer needed: {stale}"
    assert all(LONG_MODULES.values()), "every LONG_MODULES entry says why"


def test_functions_are_short() -> None:
    found = {}
    for module, path in modules().items():
        for name, line, length in _functions(ast.parse(path.read_text()), module):
            found[name] = (path, line, length)
    long = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}: {length} lines"
        for name, (path, line, length) in found.items()
        if length > MAX_FUNCTION_LINES and name not in LONG_FUNCTIONS
    ]
    stale = [n for n in LONG_FUNCTIONS if found.get(n, (None, 0, 0))[2] <= MAX_FUNCTION_LINES]
    assert not long, (
        f"functions over {MAX_FUNCTION_LINES} lines (split, or LONG_FUNCTIONS with why):\n  "
        + "\n  ".join(long)
    )
    assert not stale, f"LONG_FUNCTIONS entries no longer needed: {stale}"
    assert all(LONG_FUNCTIONS.values()), "every LONG_FUNCTIONS entry says why"
