"""The package's shape: imports go one way (no cycle among our modules), and the light modules stay light."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "stochastic_shield"


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package __init__) for every .py under ROOT."""
    mods = {}
    for f in root.rglob("*.py"):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return mods


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports, at the top or inside functions alike.

    ``from X import name`` points at X.name when that is a module, else at X. A module's parent
    packages, which Python runs first, are not edges: a package's __init__ may import its children.
    """
    mods = _modules(root)
    graph = {m: set() for m in mods}
    for m, (f, is_pkg) in mods.items():
        here = m.split(".") if is_pkg else m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else [])) \
                    if node.level else node.module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            graph[m] |= {t for t in targets if t in mods and t != m}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_among_our_modules():
    graph = import_graph()
    assert "stochastic_shield.cli.bench" in graph and graph["stochastic_shield.bench.robustness.report"]
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle(tmp_path):
    """The checker itself: two modules importing each other (one lazily, inside a function) are found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from .sub.b import f\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n    from ..a import g\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("def f():\n    pass\n")
    assert cycles(import_graph(pkg)) == []


# The package's layers, as ARCHITECTURE.md draws them: what each part of the package may import besides the
# base (top-level modules that import no part above them). A part is a subpackage or a top-level module.
BASE = {"__init__", "errors", "defaults", "paths", "rng", "_atomic", "data", "user_data", "models", "checkpoint",
        "train", "targets", "tuning_files", "corruptions", "glyphs"}
MAY_IMPORT = {
    "compile": set(),
    "runtime_py": set(),
    "attacks": {"compile"},
    "replica_float": set(),
    "replica": {"compile", "attacks", "replica_float"},
    "schedules": {"compile", "runtime_py"},
    "bench": {"compile", "runtime_py", "attacks", "replica", "replica_float"},
    "search": {"compile", "runtime_py", "attacks", "replica", "replica_float", "bench"},
    "demo": {"compile", "runtime_py", "attacks", "replica", "replica_float", "bench"},
    "cli": {"compile", "runtime_py", "attacks", "replica", "replica_float", "bench", "search", "schedules", "demo"},
    "__main__": {"cli"},
}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """'a.b -> c.d' for every import that goes against MAY_IMPORT (or into a part the table does not know)."""
    def part(module: str) -> str:
        names = module.split(".")
        return names[1] if len(names) > 1 else "__init__"

    bad = []
    for m, targets in sorted(graph.items()):
        here = part(m)
        allowed = BASE if here in BASE else BASE | MAY_IMPORT.get(here, set()) | {here}
        if here not in BASE and here not in MAY_IMPORT:
            bad.append(f"{m}: part {here!r} is in no layer (add it to MAY_IMPORT and to ARCHITECTURE.md)")
        bad += [f"{m} -> {t}" for t in sorted(targets) if part(t) not in allowed]
    return bad


def test_packages_import_one_way_as_architecture_draws_them():
    """compile imports no schedules, runtime_py no compile, the base no package: whole parts, not only modules."""
    assert layer_violations(import_graph()) == []


def test_the_layer_check_finds_an_upward_import(tmp_path):
    pkg = tmp_path / "stochastic_shield"
    for sub in ("compile", "schedules"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "schedules" / "tune.py").write_text("from ..compile import build\nfrom .. import errors\n")
    (pkg / "compile" / "build.py").write_text("from .. import errors\n")
    assert layer_violations(import_graph(pkg)) == []
    (pkg / "compile" / "build.py").write_text("def f():\n    from ..schedules.tune import g\n")
    assert layer_violations(import_graph(pkg)) == ["stochastic_shield.compile.build -> stochastic_shield.schedules.tune"]


@pytest.mark.parametrize("code", [
    "import stochastic_shield.defaults",
    "from stochastic_shield.cli import build_parser; build_parser()",
])
def test_light_modules_import_neither_torch_nor_tvm(code):
    """defaults.py and the CLI's parser are read before any work: 'shield --help' must not load TVM."""
    check = f"import sys\n{code}\nprint(sorted(m for m in ('torch', 'tvm') if m in sys.modules))"
    p = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"
