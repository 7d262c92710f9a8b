"""The package's layering, read from its sources with ast (nothing is imported):

1. the engine and what it stands on (engine, graph, rules, kernels, layers) import nothing above them;
2. no private name crosses a package boundary: ``from lrptext.X import _name`` (or ``module._name``) only inside
   X's own package. A private *module* is private to the package holding it: lrptext._native (the C++ extension's
   loader) and lrptext._core (the extension) sit in lrptext itself, so any lrptext module may import them and
   their public names, never their private ones;
3. the import graph between packages has no cycle.

A package is a directory directly under lrptext/ (lrptext.engine, lrptext.text, ...); lrptext/__init__.py and each
module directly under lrptext/ (lrptext.cli, lrptext.api, lrptext._native, ...) is a package of its own. Every
import counts: module level, function level, under TYPE_CHECKING. Importing lrptext.x.y also runs lrptext/__init__
and lrptext/x/__init__, as Python always does; those implicit imports are not edges.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import lrptext

SOURCES = Path(lrptext.__file__).resolve().parent
ROOT = "lrptext"

# The engine and the layers it is built on ...
LOWER = ("engine", "graph", "rules", "kernels", "layers")
# ... and what they must never import: the public face and everything that uses the engine.
UPPER = ("api", "cli", "evaluation", "image", "integrations", "serve", "text", "training")

# Modules that exist without a .py file under lrptext/: the C++ extension, compiled from csrc/ (per CPU level).
EXTENSION_MODULES = {"lrptext._core", "lrptext._core_x86_64_v3"}

# Known violations inside the engine/graph/rules/kernels area while it is rewritten into lrptext/layers; nothing
# outside that area may be listed, and an entry that no longer occurs fails (empty the lists as they go).
# "importer module -> imported module._name"
KNOWN_PRIVATE_IMPORTS: set[str] = set()
# frozensets of the packages in a cycle, e.g. frozenset({"lrptext.engine", "lrptext.layers"})
KNOWN_CYCLES: set[frozenset[str]] = set()


@dataclass(frozen=True)
class Module:
    name: str  # lrptext.engine.explainer
    is_package: bool  # an __init__.py
    source: str


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module
    target: str  # the imported module (lrptext.x.y)
    name: str | None  # a name taken from it (from target import name), None for the module itself
    line: int

    def __str__(self) -> str:
        what = self.target if self.name is None else f"{self.target}.{self.name}"
        return f"{self.importer}:{self.line} imports {what}"


def package(module: str) -> str:
    """lrptext.engine.explainer -> lrptext.engine; lrptext.cli -> lrptext.cli; lrptext -> lrptext."""
    return ".".join(module.split(".")[:2])


def read_modules(directory: Path = SOURCES) -> dict[str, Module]:
    modules = {}
    for path in sorted(directory.rglob("*.py")):
        parts = path.relative_to(directory).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join((ROOT, *(parts[:-1] if is_package else parts)))
        modules[name] = Module(name, is_package, path.read_text(encoding="utf-8"))
    return modules


def imports_of(module: Module, known: set[str]) -> list[Import]:
    """Every import of an lrptext module in `module`, wherever it is (functions, TYPE_CHECKING blocks too), and
    every private attribute read through a name bound to an lrptext module (``_native._x``)."""
    tree = ast.parse(module.source, filename=module.name)
    found: list[Import] = []
    bound: dict[str, str] = {}  # local name -> the lrptext module it refers to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    found.append(Import(module.name, alias.name, None, node.lineno))
                    # "import lrptext.x.y as z" binds z to lrptext.x.y; "import lrptext.x.y" binds lrptext
                    if alias.asname:
                        bound[alias.asname] = alias.name
                    else:
                        bound[ROOT] = ROOT
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package upwards
                anchor = module.name.split(".")[: len(module.name.split(".")) - (not module.is_package)]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if base != ROOT and not base.startswith(ROOT + "."):
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in known:  # a submodule: the module is what is imported
                    found.append(Import(module.name, full, None, node.lineno))
                    bound[alias.asname or alias.name] = full
                else:
                    found.append(Import(module.name, base, alias.name, node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain = []
            value: ast.expr = node
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if not isinstance(value, ast.Name) or value.id not in bound:
                continue
            target = bound[value.id]
            for attr in reversed(chain):
                if f"{target}.{attr}" in known:
                    target = f"{target}.{attr}"
                    continue
                if attr.startswith("_") and not attr.startswith("__"):
                    found.append(Import(module.name, target, attr, node.lineno))
                break
    return found


def all_imports(modules: dict[str, Module]) -> list[Import]:
    known = set(modules) | EXTENSION_MODULES
    return [imp for m in modules.values() for imp in imports_of(m, known)]


def upward_imports(imports: list[Import]) -> list[str]:
    lower = {f"{ROOT}.{p}" for p in LOWER}
    upper = {f"{ROOT}.{p}" for p in UPPER}
    return sorted(str(i) for i in imports if package(i.importer) in lower and package(i.target) in upper)


def private_crossings(imports: list[Import]) -> dict[str, Import]:
    """{"importer -> module._name": the import} for private names (and private modules) used outside their package."""
    out = {}
    for imp in imports:
        # a private module is private to the package that holds it: lrptext._native to all of lrptext
        parts = imp.target.split(".")
        for k, part in enumerate(parts[1:], start=1):
            holder = ".".join(parts[:k])
            if part.startswith("_") and not (imp.importer == holder or imp.importer.startswith(holder + ".")):
                out[f"{imp.importer} -> {'.'.join(parts[:k + 1])}"] = imp
        if imp.name is not None and imp.name.startswith("_") and not imp.name.startswith("__") \
                and package(imp.importer) != package(imp.target):
            out[f"{imp.importer} -> {imp.target}.{imp.name}"] = imp
    return out


def package_graph(imports: list[Import]) -> dict[str, dict[str, list[Import]]]:
    graph: dict[str, dict[str, list[Import]]] = {}
    for imp in imports:
        a, b = package(imp.importer), package(imp.target)
        if a != b:
            graph.setdefault(a, {}).setdefault(b, []).append(imp)
    return graph


def cycles(graph: dict[str, dict[str, list[Import]]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
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
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe(component: frozenset[str], graph: dict[str, dict[str, list[Import]]]) -> str:
    edges = [f"  {a} -> {b}: {', '.join(dict.fromkeys(f'{i.importer}:{i.line}' for i in graph[a][b]))}"
             for a in sorted(component) for b in sorted(graph.get(a, {})) if b in component]
    return " <-> ".join(sorted(component)) + "\n" + "\n".join(edges)


def in_engine_area(module: str) -> bool:
    return package(module) in {f"{ROOT}.{p}" for p in LOWER}


# -- the package itself ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imports() -> list[Import]:
    modules = read_modules()
    # the sources were found: an empty directory would pass every check below
    assert {"lrptext", "lrptext.api", "lrptext.cli", "lrptext.engine.explainer",
            "lrptext.integrations.sklearn"} <= set(modules)
    return all_imports(modules)


def test_the_engine_imports_nothing_above_it(imports):
    assert upward_imports(imports) == []


def test_no_private_name_crosses_a_package(imports):
    crossings = private_crossings(imports)
    unexpected = {k: str(v) for k, v in crossings.items() if k not in KNOWN_PRIVATE_IMPORTS}
    assert unexpected == {}
    stale = KNOWN_PRIVATE_IMPORTS - set(crossings)
    assert not stale, f"no longer imported, remove from KNOWN_PRIVATE_IMPORTS: {sorted(stale)}"
    assert all(in_engine_area(k.split(" -> ")[0]) for k in KNOWN_PRIVATE_IMPORTS)


def test_packages_import_each_other_without_cycles(imports):
    graph = package_graph(imports)
    found = cycles(graph)
    unexpected = [describe(c, graph) for c in found if c not in KNOWN_CYCLES]
    assert not unexpected, "import cycles between packages:\n" + "\n".join(unexpected)
    stale = KNOWN_CYCLES - set(found)
    assert not stale, f"no longer a cycle, remove from KNOWN_CYCLES: {sorted(map(sorted, stale))}"
    assert all(all(in_engine_area(p) for p in c) for c in KNOWN_CYCLES)


# -- the checks can fail -----------------------------------------------------------------------------------------

def synthetic(tmp_path: Path, files: dict[str, str]) -> list[Import]:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return all_imports(read_modules(tmp_path))


def test_the_checks_find_what_they_look_for(tmp_path):
    imports = synthetic(tmp_path, {
        "__init__.py": "from lrptext.api import explain\n",
        "api.py": "def explain():\n    from lrptext.integrations import sklearn\n",
        "_native.py": "from lrptext import _core\ncore = None\n_hidden = 1\n",
        "engine/__init__.py": "",
        "engine/explainer.py": ("from lrptext import _native\nfrom lrptext.engine._impl import _step\n"
                                "def explain(model):\n    if _native.core is None:\n"
                                "        from lrptext.integrations import sklearn as sk\n"
                                "        return sk.explain_features(model)\n"),
        "engine/_impl.py": "def _step():\n    pass\n",
        "integrations/__init__.py": "",
        "integrations/sklearn.py": ("from typing import TYPE_CHECKING\nfrom lrptext.engine import explainer\n"
                                    "if TYPE_CHECKING:\n    import lrptext.text.vocab\n"
                                    "def _split(p):\n    return p\ndef explain_features(m):\n    return m\n"),
        "text/__init__.py": "",
        "text/vocab.py": "",
        "evaluation/__init__.py": "",
        "evaluation/words.py": ("from lrptext.integrations.sklearn import _split\nimport lrptext._native as n\n"
                                "from lrptext.engine import _impl\nx = n._hidden\ny = n.core\n"),
        "cli.py": "import lrptext\nlrptext.integrations.sklearn._split(None)\nimport lrptext.engine.explainer\n",
    })
    assert upward_imports(imports) == ["lrptext.engine.explainer:5 imports lrptext.integrations.sklearn"]
    assert sorted(private_crossings(imports)) == [
        "lrptext.cli -> lrptext.integrations.sklearn._split",
        "lrptext.evaluation.words -> lrptext._native._hidden",
        "lrptext.evaluation.words -> lrptext.engine._impl",
        "lrptext.evaluation.words -> lrptext.integrations.sklearn._split",
    ]
    graph = package_graph(imports)
    assert cycles(graph) == [frozenset({"lrptext.engine", "lrptext.integrations"})]
    assert "lrptext.engine.explainer:5" in describe(cycles(graph)[0], graph)
    assert "lrptext.integrations.sklearn:2" in describe(cycles(graph)[0], graph)


def test_relative_imports_resolve(tmp_path):
    imports = synthetic(tmp_path, {
        "__init__.py": "",
        "engine/__init__.py": "from .explainer import explain\nfrom ..text import _private\n",
        "engine/explainer.py": "from . import targets\nfrom .targets import _fine\n",
        "engine/targets.py": "",
        "text/__init__.py": "from ..engine import explain\n",
    })
    assert sorted(map(str, imports)) == [
        "lrptext.engine.explainer:1 imports lrptext.engine.targets",
        "lrptext.engine.explainer:2 imports lrptext.engine.targets._fine",
        "lrptext.engine:1 imports lrptext.engine.explainer.explain",
        "lrptext.engine:2 imports lrptext.text._private",
        "lrptext.text:1 imports lrptext.engine.explain",
    ]
    assert list(private_crossings(imports)) == ["lrptext.engine -> lrptext.text._private"]
    assert cycles(package_graph(imports)) == [frozenset({"lrptext.engine", "lrptext.text"})]
