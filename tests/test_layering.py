"""The layering of phi4_jax, checked on its source with `ast` (nothing is imported):

    python -m pytest -q tests/test_layering.py

(a) the library never imports the repository's `data_mixtures`, `experiments` or `launch`
    (anywhere: module top level, functions, `importlib.import_module("...")` literals);
(b) the module-level import graph of phi4_jax has no cycle (`from phi4_jax.x import y` is an
    edge to phi4_jax.x.y when that is a module, else to phi4_jax.x, whose __init__ counts);
(c) each package imports only the packages ALLOWED says (any import, function-level included).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "phi4_jax")
FORBIDDEN = ("data_mixtures", "experiments", "launch")

# package -> the phi4_jax packages it may import; a dotted entry allows that one module only.
# "phi4_jax" is the top-level __init__ (lazy load_hf / save_hf / load_gguf), "cli" the one
# command-line convention module (phi4_jax/cli.py), a leaf every entry point may use.
ALLOWED: dict[str, set[str]] = {
    "phi4_jax": set(),
    "cli": set(),
    "io": set(),
    "sharding": {"cli", "io"},
    "model": {"cli", "io", "sharding"},
    "convert": {"cli", "io", "model"},
    "inference": {"cli", "io", "model", "sharding"},
    "data": {"cli", "io", "phi4_jax.runs"},  # prepare's main writes its run record
    "synth": {"cli", "io", "phi4_jax.runs"},  # synth.run's main writes its run record
    # organic curation: stages and the annotation workflow on the engine; GGUF embedders
    "curate": {"cli", "io", "synth", "convert",
               "phi4_jax.serve.local"},  # e2e: starts `python -m phi4_jax.serve` (stdlib only)
    "posttrain": {"phi4_jax", "cli", "convert", "data", "inference", "io", "model", "runs",
                  "phi4_jax.serve.local", "sharding", "synth"},
    "seqio": {"data", "eval"},  # the [seqio] extra: mixtures, stores and eval tasks as Tasks
    "runs": {"cli", "io"},  # reads store manifests as JSON; the launcher resolves mixtures
    "serve": {"cli", "convert", "data", "inference", "io", "model", "sharding", "train"},
    "train": {"cli", "data", "io", "model", "runs", "sharding", "phi4_jax.posttrain.records"},
    # the harness: scoring and sampling, --model loading, the sandbox and LLM client, token
    # stores, and the refusal workflow's reply grader (shared with SimpleQA's rule grader)
    "eval": {"cli", "data", "inference", "io", "serve", "synth",
             "phi4_jax.posttrain.refusal.seeds"},
}


def modules() -> dict[str, str]:
    """Dotted module name -> file, for every .py under phi4_jax/ (a package is its __init__)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), os.path.dirname(ROOT))
                parts = rel[:-3].split(os.sep)
                out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = \
                    os.path.join(dirpath, f)
    return out


MODULES = modules()


def package(module: str) -> str:
    """phi4_jax.train.dpo.loss -> train; phi4_jax -> phi4_jax; phi4_jax.cli -> cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _absolute(node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].endswith("__init__.py")
    base = module.split(".")[:len(module.split(".")) - node.level + is_package]
    return ".".join(base + ([node.module] if node.module else []))


def imported(node: ast.AST, module: str) -> list[str]:
    """The dotted targets of one import statement: submodules where `from X import y` names
    one, else X."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _absolute(node, module)
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")):
        return [node.args[0].value]  # importlib.import_module("literal")
    return []


def parse(module: str) -> ast.Module:
    with open(MODULES[module], encoding="utf-8") as f:
        return ast.parse(f.read())


def all_imports(module: str) -> list[tuple[str, int]]:
    """(target, line) of every import in the module, function-level ones included."""
    return sorted({(t, node.lineno) for node in ast.walk(parse(module))
                   for t in imported(node, module)}, key=lambda x: (x[1], x[0]))


def where(module: str, line: int) -> str:
    return f"{os.path.relpath(MODULES[module], os.path.dirname(ROOT))}:{line}"


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements run at import: into if / try / with / class bodies, not functions or
    `if TYPE_CHECKING:`."""
    for node in body:
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                yield from _top_level(node.body)
            yield from _top_level(node.orelse)
        elif isinstance(node, ast.Try):
            for part in (node.body, *(h.body for h in node.handlers), node.orelse,
                         node.finalbody):
                yield from _top_level(part)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _top_level(node.body)
        else:
            yield node


def import_graph() -> dict[str, set[str]]:
    """phi4_jax module -> the phi4_jax modules its top level imports."""
    graph = {}
    for module in MODULES:
        top = _top_level(parse(module).body)
        graph[module] = {t for node in top for t in imported(node, module)
                         if t in MODULES and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected component of more than one module."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(_path_in(graph, component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _path_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:  # breadth-first back to start, inside the component
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start}")


def test_the_library_never_imports_the_repository_scripts():
    bad = [f"{where(m, line)}: imports {target}" for m in sorted(MODULES)
           for target, line in all_imports(m) if target.split(".")[0] in FORBIDDEN]
    assert not bad, ("phi4_jax must not import " + ", ".join(FORBIDDEN) + " (pass mixtures, "
                     "configs and plans in from the caller):\n  " + "\n  ".join(bad))


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "module-level import cycles:\n  " + "\n  ".join(" -> ".join(c)
                                                                     for c in found)


def test_packages_import_only_what_the_table_allows():
    unknown = sorted({package(m) for m in MODULES} - set(ALLOWED))
    assert not unknown, f"packages missing from ALLOWED in {__file__}: {unknown}"
    bad = []
    for module in sorted(MODULES):
        own, allowed = package(module), ALLOWED[package(module)]
        for target, line in all_imports(module):
            if target.split(".")[0] != "phi4_jax" or package(target) == own:
                continue
            if package(target) not in allowed and not any(
                    target == a or target.startswith(a + ".") for a in allowed if "." in a):
                bad.append(f"{own} -> {package(target)}: {where(module, line)} imports "
                           f"{target} ({own} may import: {', '.join(sorted(allowed)) or 'none'})")
    assert not bad, "imports across the layering table:\n  " + "\n  ".join(bad)


def test_the_checks_see_what_they_should(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c", "a"]]  # self-imports are not edges in import_graph
    assert package("phi4_jax.train.checkpoint") == "train" and package("phi4_jax") == "phi4_jax"
    tree = ast.parse("import importlib\nif TYPE_CHECKING:\n    import x\n"
                     "def f():\n    importlib.import_module('launch.tpu')\n")
    assert [imported(n, "phi4_jax.data.plan") for n in ast.walk(tree)
            if imported(n, "phi4_jax.data.plan")] == [["importlib"], ["x"], ["launch.tpu"]]
    assert [type(n).__name__ for n in _top_level(tree.body)] == ["Import", "FunctionDef"]
    relative = ast.parse("from . import mixture\nfrom ..io import atomic\n").body
    assert imported(relative[0], "phi4_jax.data.plan") == ["phi4_jax.data.mixture"]
    assert imported(relative[1], "phi4_jax.data.plan") == ["phi4_jax.io.atomic"]
